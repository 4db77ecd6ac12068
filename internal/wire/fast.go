package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"unicode/utf8"
)

// Evidence is decoded on every verdict, and the reflective decoder cost more
// than the rest of the request's parsing: per field a reflect walk, per map a
// reflect.MakeMap, per byte string a copy, and a stack deep enough to make a
// connection goroutine grow its stack again after each GC shrank it. So
// Unmarshal first tries a decoder written for Evidence alone.
//
// It accepts only a strict subset of what the general decoder accepts: the
// form wire.Marshal writes (definite lengths, shortest heads, field names in
// their exact case, each once), with values of exactly the declared types or
// null where Marshal writes a nil slice or map. Anything else — an unknown
// or repeated field, a tag, a negative PCR index, trailing bytes, a
// non-shortest head — makes it give up, and the
// general decoder decides on the same bytes, with its own errors. So the
// two cannot disagree on what is accepted or on the message's meaning; the
// fuzz target FuzzEvidenceFastPath holds them to that.
//
// The decoded byte fields share one private copy of the message (each
// capped at its own length), never the caller's buffer, so a caller may
// reuse its buffer as soon as Unmarshal returns.

// Largest counts the fast path handles; larger ones fall back.
const (
	fastMaxFields = 8 // Evidence's fields
	fastMaxBanks  = 16
	fastMaxPCRs   = 64
)

const cborNull = 0xf6

type cborReader struct {
	b   []byte
	off int
}

// head reads a data item's initial byte and argument, requiring the
// shortest form (as deterministic encoding writes it) and a definite length.
func (r *cborReader) head() (major byte, arg uint64, ok bool) {
	if r.off >= len(r.b) {
		return 0, 0, false
	}
	ib := r.b[r.off]
	r.off++
	major, ai := ib>>5, ib&0x1f
	switch {
	case ai < 24:
		return major, uint64(ai), true
	case ai == 24:
		if r.off+1 > len(r.b) || r.b[r.off] < 24 {
			return 0, 0, false
		}
		arg = uint64(r.b[r.off])
		r.off++
	case ai == 25:
		if r.off+2 > len(r.b) {
			return 0, 0, false
		}
		arg = uint64(binary.BigEndian.Uint16(r.b[r.off:]))
		r.off += 2
		if arg <= math.MaxUint8 {
			return 0, 0, false
		}
	case ai == 26:
		if r.off+4 > len(r.b) {
			return 0, 0, false
		}
		arg = uint64(binary.BigEndian.Uint32(r.b[r.off:]))
		r.off += 4
		if arg <= math.MaxUint16 {
			return 0, 0, false
		}
	case ai == 27:
		if r.off+8 > len(r.b) {
			return 0, 0, false
		}
		arg = binary.BigEndian.Uint64(r.b[r.off:])
		r.off += 8
		if arg <= math.MaxUint32 {
			return 0, 0, false
		}
	default: // reserved, or indefinite length
		return 0, 0, false
	}
	return major, arg, true
}

// str reads a definite-length byte (major 2) or text (major 3) string and
// returns its contents, capped at their length.
func (r *cborReader) str(major byte) ([]byte, bool) {
	m, n, ok := r.head()
	if !ok || m != major || n > uint64(len(r.b)-r.off) {
		return nil, false
	}
	end := r.off + int(n)
	s := r.b[r.off:end:end]
	r.off = end
	return s, true
}

func (r *cborReader) mapHeader(max uint64) (int, bool) {
	m, n, ok := r.head()
	if !ok || m != 5 || n > max {
		return 0, false
	}
	return int(n), true
}

func (r *cborReader) uint(max uint64) (uint64, bool) {
	m, n, ok := r.head()
	if !ok || m != 0 || n > max {
		return 0, false
	}
	return n, true
}

// Field numbers, in the order of Evidence's declaration.
const (
	fAgentID = iota
	fNonce
	fQuote
	fSignature
	fPCRs
	fBootLog
	fIMA
	fIMAOffset
)

func evidenceField(key []byte) int {
	switch string(key) {
	case "agent_id":
		return fAgentID
	case "nonce":
		return fNonce
	case "quote":
		return fQuote
	case "signature":
		return fSignature
	case "pcrs":
		return fPCRs
	case "boot_log":
		return fBootLog
	case "ima":
		return fIMA
	case "ima_offset":
		return fIMAOffset
	}
	return -1
}

// decodeEvidenceFast decodes data into ev if data is in the subset the fast
// path handles, and reports whether it did; ev is untouched otherwise. The
// decoded byte fields share one buffer: data itself when the caller hands
// it over (owned), else a copy.
func decodeEvidenceFast(data []byte, ev *Evidence, owned bool) bool {
	// Decoding from one buffer lets the fields share it as they are found;
	// when the fast path gives up, a copy was the only waste.
	own := data
	if !owned {
		own = bytes.Clone(data)
	}
	r := cborReader{b: own}
	var out Evidence
	var seen [fastMaxFields]bool
	n, ok := r.mapHeader(fastMaxFields)
	if !ok {
		return false
	}
	for range n {
		k, ok := r.str(3)
		if !ok {
			return false
		}
		field := evidenceField(k)
		if field < 0 || seen[field] {
			return false
		}
		seen[field] = true
		if r.off < len(own) && own[r.off] == cborNull {
			// Marshal writes a nil slice or map as null, which decodes
			// to the zero value: nothing to set.
			r.off++
			continue
		}
		switch field {
		case fAgentID:
			var s []byte
			if s, ok = r.str(3); ok && !utf8.Valid(s) {
				return false
			}
			out.AgentID = string(s)
		case fNonce:
			out.Nonce, ok = r.str(2)
		case fQuote:
			out.Quote, ok = r.str(2)
		case fSignature:
			out.Signature, ok = r.str(2)
		case fBootLog:
			out.BootLog, ok = r.str(2)
		case fIMA:
			out.IMA, ok = r.str(2)
		case fIMAOffset:
			out.IMAOffset, ok = r.uint(math.MaxUint64)
		case fPCRs:
			out.PCRs, ok = r.pcrs()
		}
		if !ok {
			return false
		}
	}
	if r.off != len(own) {
		return false
	}
	*ev = out
	return true
}

// pcrs reads bank → PCR index → value, giving up on repeated banks or
// indices (the general decoder refuses them).
func (r *cborReader) pcrs() (map[uint16]map[int][]byte, bool) {
	banks, ok := r.mapHeader(fastMaxBanks)
	if !ok {
		return nil, false
	}
	out := make(map[uint16]map[int][]byte, banks)
	for range banks {
		bank, ok := r.uint(math.MaxUint16)
		if !ok {
			return nil, false
		}
		if _, dup := out[uint16(bank)]; dup {
			return nil, false
		}
		n, ok := r.mapHeader(fastMaxPCRs)
		if !ok {
			return nil, false
		}
		values := make(map[int][]byte, n)
		out[uint16(bank)] = values
		for range n {
			idx, ok := r.uint(math.MaxInt32)
			if !ok {
				return nil, false
			}
			if _, dup := values[int(idx)]; dup {
				return nil, false
			}
			if values[int(idx)], ok = r.str(2); !ok {
				return nil, false
			}
		}
	}
	return out, true
}

// isZero reports whether ev is the zero Evidence: the general decoder
// merges into what a target already holds, the fast path does not, so it
// only decodes into empty targets.
func (ev *Evidence) isZero() bool {
	return ev.AgentID == "" && ev.Nonce == nil && ev.Quote == nil && ev.Signature == nil &&
		ev.PCRs == nil && ev.BootLog == nil && ev.IMA == nil && ev.IMAOffset == 0
}
