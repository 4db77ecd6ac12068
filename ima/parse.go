package ima

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Format is the serialisation of a measurement list.
type Format uint8

const (
	// FormatAuto asks the parser to detect the format from the content.
	FormatAuto Format = iota
	// FormatASCII is ascii_runtime_measurements: one entry per line.
	FormatASCII
	// FormatBinary is binary_runtime_measurements in little-endian byte
	// order: the canonical form (ima_canonical_fmt) and what every
	// little-endian host writes.
	FormatBinary
	// FormatBinaryBigEndian is the host-order list of a big-endian machine.
	FormatBinaryBigEndian
)

func (f Format) String() string {
	switch f {
	case FormatASCII:
		return "ascii"
	case FormatBinary:
		return "binary"
	case FormatBinaryBigEndian:
		return "binary-big-endian"
	}
	return "auto"
}

// DetectFormat tells an ASCII list from a binary one, and a big-endian binary
// list from a little-endian one, by the first entry's PCR index: a binary
// list opens with a 32-bit PCR number (< 256 in practice, so three zero
// bytes), an ASCII list with its decimal digits.
func DetectFormat(data []byte) (Format, error) {
	if len(data) == 0 {
		return FormatASCII, nil
	}
	if len(data) >= 4 {
		if data[1] == 0 && data[2] == 0 && data[3] == 0 {
			return FormatBinary, nil
		}
		if data[0] == 0 && data[1] == 0 && data[2] == 0 {
			return FormatBinaryBigEndian, nil
		}
	}
	i := 0
	for i < len(data) && data[i] == ' ' {
		i++
	}
	j := i
	for j < len(data) && data[j] >= '0' && data[j] <= '9' {
		j++
	}
	if j > i && j < len(data) && data[j] == ' ' {
		return FormatASCII, nil
	}
	return FormatAuto, &ParseError{Format: FormatAuto, Msg: "neither an ASCII nor a binary IMA measurement list (no PCR index at byte 0)"}
}

// ParseOptions tunes the parser. The zero value detects everything.
type ParseOptions struct {
	// Format forces a format; FormatAuto detects it.
	Format Format
	// FirstIndex is the list index of the first entry in the input, for
	// input that holds entries N.. of a list (incremental attestation).
	FirstIndex uint64
	// TemplateHashAlg is the algorithm of the logged template digests. Binary
	// lists do not say: the default is SHA-1 (20 bytes, what
	// binary_runtime_measurements carries), and the parser falls back to
	// the other digest sizes when the first entry does not parse with 20.
	// For ASCII lists the hex length decides, with 32 bytes read as sha256
	// unless this says SM3.
	TemplateHashAlg Algorithm
	// BigEndianHost rebuilds ASCII entries' hashed bytes with big-endian
	// length fields, as a big-endian kernel without ima_canonical_fmt hashes
	// them. Binary lists carry their byte order and ignore this.
	BigEndianHost bool
}

// ParseError is bad input: it names the place (entry, byte offset, line) and
// what is wrong there.
type ParseError struct {
	Format Format
	Entry  uint64 // list index of the entry being parsed
	Offset int64  // byte offset in the input where the problem is
	Line   int    // 1-based line (ASCII)
	Field  string // the field being parsed, if any
	Msg    string
}

func (e *ParseError) Error() string {
	where := fmt.Sprintf("byte offset %d", e.Offset)
	if e.Format == FormatASCII {
		where = fmt.Sprintf("line %d", e.Line)
	}
	field := ""
	if e.Field != "" {
		field = " field " + e.Field + ":"
	}
	if e.Format == FormatAuto {
		return "ima: " + e.Msg
	}
	return fmt.Sprintf("ima: %s list, %s (entry %d):%s %s", e.Format, where, e.Entry, field, e.Msg)
}

var errNoAlgoPrefix = errors.New("digest field lacks its \"<algo>:\\0\" prefix")

// Parser reads entries one at a time without allocating per entry. It
// returns the same *Entry each time, overwritten by Next.
type Parser struct {
	data   []byte
	pos    int
	opts   ParseOptions
	format Format
	order  binary.ByteOrder

	index    uint64
	line     int
	hashSize int

	e       Entry
	fields  [maxFields]FieldData
	thBuf   [maxDigest]byte
	scratch []byte
	custom  map[string]*Template

	err  error
	done bool
}

// NewParser parses data, which holds whole entries (a full list, or
// entries N.. of one).
func NewParser(data []byte, opts ParseOptions) *Parser {
	p := &Parser{data: data, opts: opts, index: opts.FirstIndex, format: opts.Format}
	if p.format == FormatAuto {
		f, err := DetectFormat(data)
		if err != nil {
			p.err = err
			return p
		}
		p.format = f
	}
	switch p.format {
	case FormatBinaryBigEndian:
		p.order = binary.BigEndian
	case FormatASCII:
		p.order = binary.LittleEndian
		if opts.BigEndianHost {
			p.order = binary.BigEndian
		}
	default:
		p.order = binary.LittleEndian
	}
	if opts.TemplateHashAlg != AlgUnknown {
		p.hashSize = opts.TemplateHashAlg.Size()
	}
	return p
}

// Format is the format being parsed (after detection).
func (p *Parser) Format() Format { return p.format }

// Next advances to the next entry. It returns false at the end of the input
// or on error; check Err.
func (p *Parser) Next() bool {
	if p.err != nil || p.done {
		return false
	}
	var err error
	if p.format == FormatASCII {
		err = p.nextASCII()
	} else {
		if p.pos >= len(p.data) {
			p.done = true
			return false
		}
		err = p.nextBinary()
	}
	if err != nil {
		p.err = err
		return false
	}
	if p.done {
		return false
	}
	p.index++
	return true
}

// Entry is the current entry, valid until the next call to Next.
func (p *Parser) Entry() *Entry { return &p.e }

// Err is the error that stopped the parser, if any.
func (p *Parser) Err() error { return p.err }

// Offset is the byte offset just past the last entry returned.
func (p *Parser) Offset() int { return p.pos }

// ParseAll parses every entry of data into entries that own their memory.
func ParseAll(data []byte, opts ParseOptions) ([]Entry, error) {
	p := NewParser(data, opts)
	var out []Entry
	for p.Next() {
		out = append(out, p.Entry().Clone())
	}
	return out, p.Err()
}

func (p *Parser) binErr(off int, field, format string, args ...any) error {
	return &ParseError{Format: p.format, Entry: p.index, Offset: int64(off), Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (p *Parser) asciiErr(field, format string, args ...any) error {
	return &ParseError{Format: FormatASCII, Entry: p.index, Offset: int64(p.e.Offset), Line: p.line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (p *Parser) template(name []byte) *Template {
	if t := builtinTemplate(name); t != nil {
		return t
	}
	if t, ok := p.custom[string(name)]; ok {
		return t
	}
	t, err := formatTemplate(string(name))
	if err != nil {
		t = nil
	}
	if p.custom == nil {
		p.custom = make(map[string]*Template)
	}
	p.custom[string(name)] = t
	return t
}

// templateName returns a string for name, allocating only for templates
// not seen before.
func (p *Parser) templateName(name []byte, t *Template) string {
	if t != nil {
		return t.Name
	}
	for k := range p.custom {
		if k == string(name) {
			return k
		}
	}
	return string(name)
}

// --- binary ---

// guessHashSize finds the template digest size that makes the first entry
// parse: 20 bytes in binary_runtime_measurements, the bank's size in the
// per-bank lists of newer kernels.
func (p *Parser) guessHashSize() int {
	d := p.data[p.pos:]
	for _, n := range []int{20, 32, 48, 64} {
		if len(d) < 4+n+4 {
			continue
		}
		l := p.order.Uint32(d[4+n:])
		if l == 0 || l > maxTemplateName || uint64(len(d)) < uint64(8+n)+uint64(l) {
			continue
		}
		name := d[8+n : 8+n+int(l)]
		if builtinTemplate(name) != nil || bytes.IndexByte(name, '|') > 0 {
			return n
		}
	}
	return 20
}

func (p *Parser) nextBinary() error {
	d := p.data
	start := p.pos
	off := start
	need := func(n uint64, field string) error {
		if uint64(len(d)-off) < n {
			return p.binErr(off, field, "truncated entry: need %d bytes, %d left", n, len(d)-off)
		}
		return nil
	}
	if p.hashSize == 0 {
		p.hashSize = p.guessHashSize()
	}
	e := &p.e
	*e = Entry{Index: p.index, Offset: int64(start)}
	if err := need(4, "pcr"); err != nil {
		return err
	}
	e.PCR = p.order.Uint32(d[off:])
	off += 4
	if err := need(uint64(p.hashSize), "template-hash"); err != nil {
		return err
	}
	e.TemplateHash = d[off : off+p.hashSize]
	e.TemplateHashAlg = p.opts.TemplateHashAlg
	if e.TemplateHashAlg == AlgUnknown {
		e.TemplateHashAlg = algorithmForSize(p.hashSize)
	}
	off += p.hashSize
	if err := need(4, "template-name-length"); err != nil {
		return err
	}
	nl := p.order.Uint32(d[off:])
	if nl == 0 || nl > maxTemplateName {
		return p.binErr(off, "template-name-length", "template name length %d out of range 1..%d", nl, maxTemplateName)
	}
	off += 4
	if err := need(uint64(nl), "template-name"); err != nil {
		return err
	}
	name := d[off : off+int(nl)]
	off += int(nl)
	t := p.template(name)
	e.Template = t
	e.TemplateName = p.templateName(name, t)

	if t == tmplIMA {
		// The 'ima' template has no data length, a bare 20-byte digest and
		// a length-prefixed name without NUL; its hash pads the name.
		if err := need(20, "d"); err != nil {
			return err
		}
		dig := d[off : off+20]
		off += 20
		if err := need(4, "n"); err != nil {
			return err
		}
		l := p.order.Uint32(d[off:])
		if l > 255 {
			return p.binErr(off, "n", "name length %d exceeds the 'ima' template's 255", l)
		}
		off += 4
		if err := need(uint64(l), "n"); err != nil {
			return err
		}
		n := d[off : off+int(l)]
		off += int(l)
		p.buildIMATemplate(dig, n)
		p.pos = off
		return nil
	}

	if err := need(4, "template-data-length"); err != nil {
		return err
	}
	tl := p.order.Uint32(d[off:])
	off += 4
	if err := need(uint64(tl), "template-data"); err != nil {
		return err
	}
	td := d[off : off+int(tl)]
	e.TemplateData = td
	if err := p.splitBinaryFields(td, off, t); err != nil {
		return err
	}
	p.pos = off + int(tl)
	return nil
}

// splitBinaryFields cuts template data into its length-prefixed fields.
// For an unknown template the fields are cut generically (IDs unknown); if
// even that fails the entry keeps no fields: its hash still checks.
func (p *Parser) splitBinaryFields(td []byte, base int, t *Template) error {
	n := 0
	off := 0
	for off < len(td) {
		if n == maxFields || (t != nil && n == len(t.Fields)) {
			if t == nil {
				p.e.Fields = nil
				return nil
			}
			return p.binErr(base+off, "", "%d bytes of template data after the last field of %s", len(td)-off, t.Name)
		}
		id := FieldUnknown
		if t != nil {
			id = t.Fields[n]
		}
		if len(td)-off < 4 {
			if t == nil {
				p.e.Fields = nil
				return nil
			}
			return p.binErr(base+off, id.String(), "truncated field length")
		}
		l := p.order.Uint32(td[off:])
		off += 4
		if uint64(len(td)-off) < uint64(l) {
			if t == nil {
				p.e.Fields = nil
				return nil
			}
			return p.binErr(base+off-4, id.String(), "field length %d exceeds the %d bytes left in the template data", l, len(td)-off)
		}
		data := td[off : off+int(l)]
		if t != nil {
			if err := checkField(id, data); err != nil {
				return p.binErr(base+off, id.String(), "%v", err)
			}
		}
		p.fields[n] = FieldData{ID: id, Data: data}
		off += int(l)
		n++
	}
	if t != nil && n != len(t.Fields) {
		return p.binErr(base+off, "", "template %s has %d fields, the data holds %d", t.Name, len(t.Fields), n)
	}
	p.e.Fields = p.fields[:n]
	return nil
}

// checkField validates the digest fields, whose length the algorithm fixes.
// All-zero digests are violations and keep whatever length the kernel gave
// them (20 bytes whatever the algorithm).
func checkField(id FieldID, data []byte) error {
	switch id {
	case FieldDNG, FieldDNGv2, FieldDModsig:
		if len(data) == 0 && id == FieldDModsig {
			return nil
		}
		fd, err := splitDigestField(data)
		if err != nil {
			return err
		}
		return checkDigestLen(fd.Alg, fd.AlgName, fd.Digest)
	}
	return nil
}

func checkDigestLen(a Algorithm, name []byte, dig []byte) error {
	if a == AlgUnknown || len(dig) == a.Size() || allZero(dig) {
		return nil
	}
	return fmt.Errorf("%s digest is %d bytes, want %d", name, len(dig), a.Size())
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// buildIMATemplate writes the 'ima' template's hashed form into scratch:
// the digest, then the name zero-padded to IMA_EVENT_NAME_LEN_MAX+1 bytes.
func (p *Parser) buildIMATemplate(dig, name []byte) {
	const size = 20 + 256
	if cap(p.scratch) < size {
		p.scratch = make([]byte, size)
	}
	td := p.scratch[:size]
	copy(td, dig)
	copy(td[20:], name)
	clear(td[20+len(name):])
	p.e.TemplateData = td
	p.fields[0] = FieldData{ID: FieldD, Data: td[:20]}
	p.fields[1] = FieldData{ID: FieldN, Data: td[20 : 20+len(name)]}
	p.e.Fields = p.fields[:2]
}

// --- ASCII ---

func (p *Parser) nextASCII() error {
	for {
		if p.pos >= len(p.data) {
			p.done = true
			return nil
		}
		start := p.pos
		end := bytes.IndexByte(p.data[start:], '\n')
		if end < 0 {
			end = len(p.data)
			p.pos = end
		} else {
			end += start
			p.pos = end + 1
		}
		p.line++
		line := p.data[start:end]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(bytes.TrimLeft(line, " ")) == 0 {
			continue // blank lines, as Keylime skips them
		}
		p.e = Entry{Index: p.index, Offset: int64(start), Line: p.line}
		return p.parseLine(line)
	}
}

// cut returns the text before the first space and the text after it.
func cut(b []byte) ([]byte, []byte, bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil, false
	}
	return b[:i], b[i+1:], true
}

func (p *Parser) parseLine(line []byte) error {
	e := &p.e
	rest := bytes.TrimLeft(line, " ") // the kernel prints the PCR with %2d
	pcr, rest, ok := cut(rest)
	if !ok {
		return p.asciiErr("pcr", "expected \"PCR template-hash template-name fields...\"")
	}
	if len(pcr) == 0 || len(pcr) > 9 {
		return p.asciiErr("pcr", "bad PCR index %q", trunc(pcr))
	}
	var v uint32
	for _, c := range pcr {
		if c < '0' || c > '9' {
			return p.asciiErr("pcr", "PCR index %q is not a decimal number", trunc(pcr))
		}
		v = v*10 + uint32(c-'0')
	}
	e.PCR = v

	th, rest, ok := cut(rest)
	if !ok {
		return p.asciiErr("template-hash", "line ends after the template hash")
	}
	n := len(th) / 2
	if len(th)%2 != 0 || (n != 20 && n != 32 && n != 48 && n != 64) {
		return p.asciiErr("template-hash", "template hash is %d hex digits; want 40, 64, 96 or 128", len(th))
	}
	if _, err := hex.Decode(p.thBuf[:n], th); err != nil {
		return p.asciiErr("template-hash", "not hex: %v", err)
	}
	e.TemplateHash = p.thBuf[:n]
	e.TemplateHashAlg = algorithmForSize(n)
	if p.opts.TemplateHashAlg != AlgUnknown && p.opts.TemplateHashAlg.Size() == n {
		e.TemplateHashAlg = p.opts.TemplateHashAlg
	}

	name, fieldText, hasFields := cut(rest)
	if len(name) == 0 || len(name) > maxTemplateName {
		return p.asciiErr("template-name", "bad template name %q", trunc(name))
	}
	t := p.template(name)
	if t == nil {
		return p.asciiErr("template-name", "unknown template %q: its fields cannot be rebuilt from ASCII", trunc(name))
	}
	e.Template = t
	e.TemplateName = t.Name
	if !hasFields {
		return p.asciiErr(t.Fields[0].String(), "template %s has %d fields, the line has none", t.Name, len(t.Fields))
	}
	return p.buildASCIIFields(t, fieldText)
}

func trunc(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// buildASCIIFields splits the fields and rebuilds the template data the
// kernel hashed. Fields are separated by single spaces and only the name
// field can hold spaces (kernels since 2014 replace them with '_', older ones
// and other tools do not), so fields left of the name are cut from the left
// and fields right of it from the right; the name is what remains.
func (p *Parser) buildASCIIFields(t *Template, text []byte) error {
	nf := len(t.Fields)
	var tok [maxFields][]byte
	nameIdx := -1
	for i, f := range t.Fields {
		if f == FieldN || f == FieldNNG {
			nameIdx = i
			break
		}
	}
	rest := text
	left := nf
	if nameIdx >= 0 {
		left = nameIdx
	}
	for i := 0; i < left; i++ {
		var ok bool
		tok[i], rest, ok = cut(rest)
		if !ok && i != nf-1 {
			return p.asciiErr(t.Fields[i].String(), "template %s has %d fields, the line has %d", t.Name, nf, i+1)
		}
	}
	if nameIdx >= 0 {
		for i := nf - 1; i > nameIdx; i-- {
			j := bytes.LastIndexByte(rest, ' ')
			if j < 0 {
				// A line whose trailing empty fields lost their spaces
				// (trimmed by a tool): read them as empty. A wrong guess
				// cannot pass unnoticed, the template hash would differ.
				tok[i] = nil
				continue
			}
			tok[i] = rest[j+1:]
			rest = rest[:j]
		}
		tok[nameIdx] = rest
	}

	// Reserve enough scratch up front: fields point into it, so it must not
	// move while the entry is built. Hex halves; per field a 4-byte length
	// and at most 3 more bytes (":\0", a NUL, a 1-digit uint's 4 bytes);
	// the 'ima' template pads to 276.
	need := len(text) + 12*nf + 20 + 256
	if cap(p.scratch) < need {
		p.scratch = make([]byte, 0, need*2)
	}
	buf := p.scratch[:0]

	if t == tmplIMA {
		if len(tok[1]) > 255 {
			return p.asciiErr("n", "name is %d bytes; the 'ima' template allows 255", len(tok[1]))
		}
		if len(tok[0]) != 40 {
			return p.asciiErr("d", "want 40 hex digits, got %q", trunc(tok[0]))
		}
		buf = buf[:20]
		if _, err := hex.Decode(buf, tok[0]); err != nil {
			return p.asciiErr("d", "not hex: %v", err)
		}
		p.buildIMATemplate(buf[:20], tok[1])
		return nil
	}

	for i, f := range t.Fields {
		lenAt := len(buf)
		buf = buf[:lenAt+4]
		var err error
		switch f.kind() {
		case kindDigestAlgo:
			buf, err = appendDigestAlgo(buf, tok[i])
		case kindString:
			buf = append(buf, tok[i]...)
			if f != FieldXattrNames {
				buf = append(buf, 0)
			}
		case kindUint:
			buf, err = appendUint(buf, tok[i], f, p.order)
		default:
			buf, err = appendHex(buf, tok[i])
		}
		if err != nil {
			return p.asciiErr(f.String(), "%v", err)
		}
		data := buf[lenAt+4:]
		if err := checkField(f, data); err != nil {
			return p.asciiErr(f.String(), "%v", err)
		}
		p.order.PutUint32(buf[lenAt:], uint32(len(data)))
		p.fields[i] = FieldData{ID: f, Data: data}
	}
	p.scratch = buf
	p.e.TemplateData = buf
	p.e.Fields = p.fields[:nf]
	return nil
}

func appendHex(buf, src []byte) ([]byte, error) {
	if len(src)%2 != 0 {
		return buf, fmt.Errorf("odd number of hex digits (%d)", len(src))
	}
	n := len(buf)
	buf = buf[:n+len(src)/2]
	if _, err := hex.Decode(buf[n:], src); err != nil {
		return buf, fmt.Errorf("not hex: %v", err)
	}
	return buf, nil
}

func appendDigestAlgo(buf, tok []byte) ([]byte, error) {
	if len(tok) == 0 {
		return buf, nil // an empty d-modsig
	}
	i := bytes.LastIndexByte(tok, ':')
	if i <= 0 {
		return buf, fmt.Errorf("want \"<algo>:<hex>\", got %q", trunc(tok))
	}
	buf = append(buf, tok[:i+1]...)
	buf = append(buf, 0)
	return appendHex(buf, tok[i+1:])
}

func appendUint(buf, tok []byte, f FieldID, order binary.ByteOrder) ([]byte, error) {
	if len(tok) == 0 {
		return buf, nil
	}
	var v uint64
	for _, c := range tok {
		if c < '0' || c > '9' || v > 1<<32 {
			return buf, fmt.Errorf("%q is not a 32-bit decimal number", trunc(tok))
		}
		v = v*10 + uint64(c-'0')
	}
	if f == FieldIMode {
		if v > 0xffff {
			return buf, fmt.Errorf("mode %d does not fit 16 bits", v)
		}
		n := len(buf)
		buf = buf[:n+2]
		order.PutUint16(buf[n:], uint16(v))
		return buf, nil
	}
	if v > 0xffffffff {
		return buf, fmt.Errorf("%d does not fit 32 bits", v)
	}
	n := len(buf)
	buf = buf[:n+4]
	order.PutUint32(buf[n:], uint32(v))
	return buf, nil
}
