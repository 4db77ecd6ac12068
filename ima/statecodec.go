package ima

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// A verifier stores a State after every verdict and reads it before the
// next, so it has a compact binary form of its own rather than CBOR, whose
// reflective encoding and decoding cost more than checking the entries:
//
//	0x01                         format version
//	uvarint                      entries verified
//	byte                         number of banks, then per bank, by name:
//	  byte, bytes                  bank name ("sha1", "sha256")
//	  byte, bytes                  PCR 10 value after the last entry
//	uvarint                      number of keys learned, then per key:
//	  uvarint, bytes               keyring
//	  uint32 (big endian)          key ID
//	  uvarint, bytes               DER public key
const stateV1 = 0x01

// maxStateBanks bounds the banks of a stored state: IMA knows a handful.
const maxStateBanks = 8

// AppendBinary appends st in the binary form, banks ordered by name. A state
// the form cannot hold (more banks, or names or values longer than its
// length bytes count) is an error; Verify never returns one.
func (st State) AppendBinary(dst []byte) ([]byte, error) {
	var namesBuf [maxStateBanks]string
	names := namesBuf[:0]
	for name, v := range st.PCR10 {
		if len(names) == maxStateBanks || len(name) > 255 || len(v) > 255 {
			return dst, fmt.Errorf("ima: state of %d banks (names and values of at most 255 bytes, at most %d banks) does not fit the binary form", len(st.PCR10), maxStateBanks)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	dst = append(dst, stateV1)
	dst = binary.AppendUvarint(dst, st.Entries)
	dst = append(dst, byte(len(names)))
	for _, name := range names {
		v := st.PCR10[name]
		dst = append(dst, byte(len(name)))
		dst = append(dst, name...)
		dst = append(dst, byte(len(v)))
		dst = append(dst, v...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(st.Keys)))
	for _, k := range st.Keys {
		dst = binary.AppendUvarint(dst, uint64(len(k.Keyring)))
		dst = append(dst, k.Keyring...)
		dst = binary.BigEndian.AppendUint32(dst, k.KeyID)
		dst = binary.AppendUvarint(dst, uint64(len(k.DER)))
		dst = append(dst, k.DER...)
	}
	return dst, nil
}

// MarshalBinary is AppendBinary to a new slice.
func (st State) MarshalBinary() ([]byte, error) { return st.AppendBinary(nil) }

// UnmarshalBinary reads a state in the binary form. Errors name the byte
// offset; no length is trusted beyond the bytes present. The state shares
// b's bytes, which must not change afterwards.
func (st *State) UnmarshalBinary(b []byte) error {
	s, err := decodeState(b)
	if err != nil {
		return err
	}
	*st = s
	return nil
}

func decodeState(b []byte) (State, error) {
	d := stateDecoder{b: b}
	if v := d.byte("format version"); d.err == nil && v != stateV1 {
		return State{}, fmt.Errorf("ima: state byte offset 0: format version %#02x, want %#02x", v, stateV1)
	}
	st := State{Entries: d.uvarint("entries")}
	banks := d.byte("bank count")
	if d.err == nil && banks > maxStateBanks {
		return State{}, fmt.Errorf("byte offset %d: %d banks, at most %d", d.off-1, banks, maxStateBanks)
	}
	st.PCR10 = make(map[string]HexBytes, banks)
	for range banks {
		at := d.off
		name := bankName(d.bytes(int(d.byte("bank name length")), "bank name"))
		value := d.bytes(int(d.byte("PCR 10 length")), "PCR 10 value")
		if d.err != nil {
			break
		}
		if _, dup := st.PCR10[name]; dup {
			return State{}, fmt.Errorf("byte offset %d: bank %q given twice", at, name)
		}
		st.PCR10[name] = value
	}
	keys := d.uvarint("key count")
	// Each key takes at least 6 bytes (two lengths and the key ID).
	if d.err == nil && keys > uint64(len(b)-d.off)/6 {
		return State{}, fmt.Errorf("byte offset %d: %d keys cannot fit in the %d bytes left", d.off, keys, len(b)-d.off)
	}
	if keys > 0 && d.err == nil {
		st.Keys = make([]StateKey, 0, keys)
	}
	for i := uint64(0); i < keys && d.err == nil; i++ {
		var k StateKey
		k.Keyring = string(d.bytes(d.length("keyring length"), "keyring"))
		k.KeyID = d.uint32("key ID")
		k.DER = d.bytes(d.length("key length"), "key")
		st.Keys = append(st.Keys, k)
	}
	if d.err != nil {
		return State{}, d.err
	}
	if d.off != len(b) {
		return State{}, fmt.Errorf("byte offset %d: %d trailing bytes", d.off, len(b)-d.off)
	}
	return st, nil
}

// stateDecoder reads the binary state; the first error sticks and later
// reads return zero values.
type stateDecoder struct {
	b   []byte
	off int
	err error
}

func (d *stateDecoder) fail(what, problem string) {
	if d.err == nil {
		d.err = fmt.Errorf("byte offset %d: %s: %s", d.off, what, problem)
	}
}

func (d *stateDecoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(what, "truncated")
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *stateDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what, "truncated or overlong varint")
		return 0
	}
	d.off += n
	return v
}

// length reads a byte count, which must fit in what is left.
func (d *stateDecoder) length(what string) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)-d.off) {
		d.fail(what, fmt.Sprintf("%d bytes, %d left", n, len(d.b)-d.off))
		return 0
	}
	return int(n)
}

func (d *stateDecoder) uint32(what string) uint32 {
	b := d.bytes(4, what)
	if d.err != nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// bytes returns the next n bytes, sharing the stored state (which is never
// written to: each verdict makes a new one), capped so an append copies.
func (d *stateDecoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail(what, fmt.Sprintf("%d bytes needed, %d left", n, len(d.b)-d.off))
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// bankName is string(b) without an allocation for the usual banks.
func bankName(b []byte) string {
	switch string(b) {
	case "sha1":
		return "sha1"
	case "sha256":
		return "sha256"
	}
	return string(b)
}
