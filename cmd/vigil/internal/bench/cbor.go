package bench

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// The lean load generator writes evidence and reads verdicts by hand, in
// reused buffers: wire.Marshal encodes evidence through a reflective
// encoder (fxamacker/cbor), and decoding a verdict through it costs more
// than the rest of a simulated host's request. The bytes are those
// wire.Marshal writes — core deterministic CBOR: map keys ordered by their
// encoded bytes, shortest heads, nil byte strings and maps as null, empty
// omitempty fields left out — which TestEvidenceEncoderIsMarshal holds it
// to. (internal/wire hand-writes Verdict and Challenge, not Evidence; an
// exported wire.AppendEvidence would let the agent share this encoder.)

// cbor major types.
const (
	cborUint  = 0
	cborNeg   = 1
	cborBytes = 2
	cborText  = 3
	cborMap   = 5
	cborFalse = 0xf4
	cborTrue  = 0xf5
	cborNull  = 0xf6
)

// appendHead appends a CBOR head with the shortest argument encoding.
func appendHead(dst []byte, major byte, arg uint64) []byte {
	m := major << 5
	switch {
	case arg < 24:
		return append(dst, m|byte(arg))
	case arg <= math.MaxUint8:
		return append(dst, m|24, byte(arg))
	case arg <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(arg))
	case arg <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(arg))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), arg)
}

func appendText(dst []byte, s string) []byte {
	return append(appendHead(dst, cborText, uint64(len(s))), s...)
}

// appendBytes appends a byte string, or null for nil as wire.Marshal does.
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, cborNull)
	}
	return append(appendHead(dst, cborBytes, uint64(len(b))), b...)
}

// evidence is what the lean generator sends, in the form it has it: the
// fields of wire.Evidence, with the PCR values as the soft TPM quoted them
// and the IMA entries still in the host's list.
type evidence struct {
	agentID   string
	nonce     []byte
	quote     []byte
	signature []byte
	// sel is the quote's PCR selection: every bank it names is in the
	// evidence's PCR map, as the agent's PCRRead returns it.
	sel  tpm2.TPMLPCRSelection
	pcrs []soft.PCRValue
	// pcrsNil stands for a nil map (the agent always sends one, possibly
	// empty; tests use it to hold the encoder to Marshal's null).
	pcrsNil bool
	bootLog []byte
	// imaSize is the length of the IMA bytes, and appendIMA appends them;
	// imaSize 0 leaves the field out, as omitempty does.
	imaSize   int
	appendIMA func(dst []byte) []byte
	imaOffset uint64
}

// evidenceEncoder writes evidence; its scratch space is reused.
type evidenceEncoder struct {
	order []soft.PCRValue
}

// append appends ev as wire.Marshal(wire.Evidence{…}) writes it. Map keys
// in core deterministic order: ima, pcrs, nonce, quote, agent_id,
// boot_log, signature, ima_offset.
func (e *evidenceEncoder) append(dst []byte, ev *evidence) []byte {
	n := 6
	if ev.imaSize > 0 {
		n++
	}
	if len(ev.bootLog) > 0 {
		n++
	}
	dst = appendHead(dst, cborMap, uint64(n))
	if ev.imaSize > 0 {
		dst = appendHead(appendText(dst, "ima"), cborBytes, uint64(ev.imaSize))
		dst = ev.appendIMA(dst)
	}
	dst = e.appendPCRs(appendText(dst, "pcrs"), ev)
	dst = appendBytes(appendText(dst, "nonce"), ev.nonce)
	dst = appendBytes(appendText(dst, "quote"), ev.quote)
	dst = appendText(appendText(dst, "agent_id"), ev.agentID)
	if len(ev.bootLog) > 0 {
		dst = appendBytes(appendText(dst, "boot_log"), ev.bootLog)
	}
	dst = appendBytes(appendText(dst, "signature"), ev.signature)
	return appendHead(appendText(dst, "ima_offset"), cborUint, ev.imaOffset)
}

// appendPCRs appends bank → PCR index → value, banks and indices in
// ascending order (their shortest encodings sort as the numbers do), each
// bank of the selection present even with no PCR selected, a PCR named
// twice once.
func (e *evidenceEncoder) appendPCRs(dst []byte, ev *evidence) []byte {
	if ev.pcrsNil {
		return append(dst, cborNull)
	}
	e.order = append(e.order[:0], ev.pcrs...)
	slices.SortStableFunc(e.order, func(a, b soft.PCRValue) int {
		if a.Bank != b.Bank {
			return int(a.Bank) - int(b.Bank)
		}
		return a.Index - b.Index
	})
	e.order = slices.CompactFunc(e.order, func(a, b soft.PCRValue) bool { return a.Bank == b.Bank && a.Index == b.Index })
	// Banks of the selection, ascending, once each.
	var banks [8]tpm2.TPMAlgID
	nb := 0
	for _, s := range ev.sel.PCRSelections {
		if nb < len(banks) && !slices.Contains(banks[:nb], s.Hash) {
			banks[nb] = s.Hash
			nb++
		}
	}
	for _, v := range e.order {
		if nb < len(banks) && !slices.Contains(banks[:nb], v.Bank) {
			banks[nb] = v.Bank
			nb++
		}
	}
	slices.Sort(banks[:nb])
	dst = appendHead(dst, cborMap, uint64(nb))
	i := 0
	for _, bank := range banks[:nb] {
		j := i
		for j < len(e.order) && e.order[j].Bank == bank {
			j++
		}
		dst = appendHead(appendHead(dst, cborUint, uint64(bank)), cborMap, uint64(j-i))
		for _, v := range e.order[i:j] {
			dst = appendBytes(appendHead(dst, cborUint, uint64(v.Index)), v.Value)
		}
		i = j
	}
	return dst
}

// challengeView is a challenge as read from a response body: its byte
// fields share the body, so they are copied before the body is reused.
type challengeView struct {
	nonce, pcrSelection []byte
	imaOffset           uint64
	wantIMA, wantBoot   bool
	intervalMS          int64
	expiresInMS         int64
}

// verdictView is a verdict read from a response body.
type verdictView struct {
	state, reason, detail []byte
	hasNext               bool
	next                  challengeView
}

// cborIn reads CBOR items from a buffer.
type cborIn struct {
	b   []byte
	off int
}

func (r *cborIn) head() (major byte, arg uint64, ok bool) {
	if r.off >= len(r.b) {
		return 0, 0, false
	}
	ib := r.b[r.off]
	r.off++
	major, ai := ib>>5, ib&0x1f
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), true
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	default:
		return 0, 0, false // indefinite lengths, reserved values
	}
	if r.off+n > len(r.b) {
		return 0, 0, false
	}
	for _, c := range r.b[r.off : r.off+n] {
		arg = arg<<8 | uint64(c)
	}
	r.off += n
	return major, arg, true
}

// str reads a byte or text string of the given major type; null reads as
// nil.
func (r *cborIn) str(major byte) ([]byte, bool) {
	if r.off < len(r.b) && r.b[r.off] == cborNull {
		r.off++
		return nil, true
	}
	m, n, ok := r.head()
	if !ok || m != major || n > uint64(len(r.b)-r.off) {
		return nil, false
	}
	s := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return s, true
}

func (r *cborIn) boolean() (bool, bool) {
	if r.off >= len(r.b) {
		return false, false
	}
	c := r.b[r.off]
	r.off++
	return c == cborTrue, c == cborTrue || c == cborFalse
}

func (r *cborIn) int() (int64, bool) {
	m, n, ok := r.head()
	if !ok || n > math.MaxInt64 {
		return 0, false
	}
	switch m {
	case cborUint:
		return int64(n), true
	case cborNeg:
		return -1 - int64(n), true
	}
	return 0, false
}

func (r *cborIn) mapLen() (int, bool) {
	m, n, ok := r.head()
	if !ok || m != cborMap || n > 64 {
		return 0, false
	}
	return int(n), true
}

// readVerdict reads a verdict (with its next challenge) as the verifier
// writes it, into v. It reports false for anything it does not expect (an
// unknown field, a type other than the declared one, trailing bytes), and
// the caller then decodes the body with wire.Unmarshal, which decides.
func readVerdict(body []byte, v *verdictView) bool {
	*v = verdictView{}
	r := cborIn{b: body}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	for range n {
		k, ok := r.str(cborText)
		if !ok {
			return false
		}
		switch string(k) {
		case "agent_id":
			_, ok = r.str(cborText)
		case "state":
			v.state, ok = r.str(cborText)
		case "reason":
			v.reason, ok = r.str(cborText)
		case "detail":
			v.detail, ok = r.str(cborText)
		case "next":
			if r.off < len(body) && body[r.off] == cborNull {
				r.off++
				continue
			}
			v.hasNext = true
			ok = r.challenge(&v.next)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return r.off == len(body)
}

// readChallenge reads a challenge body.
func readChallenge(body []byte, c *challengeView) bool {
	r := cborIn{b: body}
	return r.challenge(c) && r.off == len(body)
}

func (r *cborIn) challenge(c *challengeView) bool {
	*c = challengeView{}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	for range n {
		k, ok := r.str(cborText)
		if !ok {
			return false
		}
		switch string(k) {
		case "nonce":
			c.nonce, ok = r.str(cborBytes)
		case "agent_id":
			_, ok = r.str(cborText)
		case "want_ima":
			c.wantIMA, ok = r.boolean()
		case "ima_offset":
			var m byte
			m, c.imaOffset, ok = r.head()
			ok = ok && m == cborUint
		case "interval_ms":
			c.intervalMS, ok = r.int()
		case "expires_in_ms":
			c.expiresInMS, ok = r.int()
		case "pcr_selection":
			c.pcrSelection, ok = r.str(cborBytes)
		case "want_boot_log":
			c.wantBoot, ok = r.boolean()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// viewOf is the view of a challenge decoded by wire.Unmarshal.
func viewOf(ch *wire.Challenge) challengeView {
	return challengeView{nonce: ch.Nonce, pcrSelection: ch.PCRSelection, imaOffset: ch.IMAOffset, wantIMA: ch.WantIMA,
		wantBoot: ch.WantBootLog, intervalMS: ch.IntervalMS, expiresInMS: ch.ExpiresInMS}
}
