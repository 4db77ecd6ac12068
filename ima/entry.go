package ima

import (
	"bytes"
	"encoding/hex"
)

// Entry is one measurement. The parser reuses an Entry and the buffers its
// slices point into: an Entry (and every slice in it) is valid until the
// parser's next call to Next. Use Clone to keep one.
type Entry struct {
	// Index is the entry's position in the whole measurement list (0 is the
	// boot_aggregate), counted from ParseOptions.FirstIndex.
	Index uint64
	// Offset is the byte offset of the entry in the parsed input; Line is its
	// 1-based line number for ASCII input (0 for binary).
	Offset int64
	Line   int

	PCR uint32
	// TemplateHash is the template digest as logged; TemplateHashAlg is
	// the algorithm that produced it (sha1 in the classic lists).
	TemplateHash    []byte
	TemplateHashAlg Algorithm

	// Template is the template descriptor; TemplateName is the name as
	// logged (also set when the template is unknown and Template is nil).
	Template     *Template
	TemplateName string

	// Fields holds each template field's data without its length prefix.
	Fields []FieldData

	// TemplateData is the byte string the kernel hashes into the template
	// digest: the length-prefixed fields, or for the 'ima' template the
	// digest followed by the name zero-padded to 256 bytes.
	TemplateData []byte
}

// FieldData is one template field's raw data.
type FieldData struct {
	ID   FieldID
	Data []byte
}

// IsViolation reports whether the entry records a measurement violation
// (time-of-measure/time-of-use or open-writers): the kernel logs an all-zero
// template digest and extends 0xFF..FF into the PCR.
func (e *Entry) IsViolation() bool {
	for _, b := range e.TemplateHash {
		if b != 0 {
			return false
		}
	}
	return true
}

// field returns the data of the first field with one of the given ids.
func (e *Entry) field(ids ...FieldID) ([]byte, FieldID, bool) {
	for i := range e.Fields {
		for _, id := range ids {
			if e.Fields[i].ID == id {
				return e.Fields[i].Data, id, true
			}
		}
	}
	return nil, FieldUnknown, false
}

// FileDigest is the measured digest from the d, d-ng or d-ngv2 field.
type FileDigest struct {
	Alg     Algorithm
	AlgName []byte // as logged, e.g. "sha256", "sm3"
	Type    []byte // d-ngv2's digest type ("ima", "verity"), else empty
	Digest  []byte
}

// String renders the digest as "algo:hex" (allocates; for reports).
func (d FileDigest) String() string {
	name := string(d.AlgName)
	if name == "" {
		name = d.Alg.String()
	}
	if len(d.Type) > 0 {
		name = string(d.Type) + ":" + name
	}
	return name + ":" + hex.EncodeToString(d.Digest)
}

// Digest returns the file (or buffer) digest the entry records.
func (e *Entry) Digest() (FileDigest, bool) {
	data, id, ok := e.field(FieldD, FieldDNG, FieldDNGv2)
	if !ok {
		return FileDigest{}, false
	}
	if id == FieldD {
		return FileDigest{Alg: algorithmForSize(len(data)), Digest: data}, true
	}
	d, err := splitDigestField(data)
	return d, err == nil
}

// splitDigestField splits "<prefix>:\0<digest>" data; d-ngv2's prefix is
// "<type>:<algo>".
func splitDigestField(data []byte) (FileDigest, error) {
	i := bytes.IndexByte(data, 0)
	if i < 1 || data[i-1] != ':' {
		return FileDigest{}, errNoAlgoPrefix
	}
	prefix := data[:i-1]
	d := FileDigest{Digest: data[i+1:], AlgName: prefix}
	if j := bytes.IndexByte(prefix, ':'); j >= 0 {
		d.Type, d.AlgName = prefix[:j], prefix[j+1:]
	}
	d.Alg = algorithmFromBytes(d.AlgName)
	return d, nil
}

// Path is the event name: a file path, "boot_aggregate", or for ima-buf the
// buffer's name (a keyring, "kexec-cmdline", ...).
func (e *Entry) Path() []byte {
	data, id, ok := e.field(FieldNNG, FieldN)
	if !ok {
		return nil
	}
	if id == FieldNNG {
		return bytes.TrimSuffix(data, []byte{0})
	}
	return data
}

// Signature is the ima-sig "sig" field (empty when the file has none).
func (e *Entry) Signature() []byte {
	data, _, _ := e.field(FieldSig)
	return data
}

// Buffer is the ima-buf "buf" field.
func (e *Entry) Buffer() []byte {
	data, _, _ := e.field(FieldBuf)
	return data
}

// Clone returns a copy of e that owns its memory.
func (e *Entry) Clone() Entry {
	c := *e
	c.TemplateHash = bytes.Clone(e.TemplateHash)
	c.TemplateData = bytes.Clone(e.TemplateData)
	c.Fields = make([]FieldData, len(e.Fields))
	for i, f := range e.Fields {
		c.Fields[i] = FieldData{ID: f.ID, Data: bytes.Clone(f.Data)}
	}
	return c
}
