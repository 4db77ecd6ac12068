package ima

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
)

// IMAPCR is the PCR IMA extends by default.
const IMAPCR = 10

// TemplateHashError reports a logged template digest that does not match
// the template data.
type TemplateHashError struct {
	Index    uint64
	Path     string
	Alg      Algorithm
	Logged   []byte
	Computed []byte
}

func (e *TemplateHashError) Error() string {
	return fmt.Sprintf("ima: entry %d (%s): logged %s template hash %x, template data hashes to %x",
		e.Index, e.Path, e.Alg, e.Logged, e.Computed)
}

// CheckTemplateHash recomputes e's template digest and compares it with the
// logged one. Violations (all-zero digests) have nothing to check and pass.
// It returns a *TemplateHashError on mismatch and an error wrapping
// ErrUnsupportedHash when the logged digest's algorithm cannot be computed.
func (e *Entry) CheckTemplateHash() error {
	if e.IsViolation() {
		return nil
	}
	var buf [maxDigest]byte
	got := buf[:e.TemplateHashAlg.Size()]
	if err := sum(e.TemplateHashAlg, got, e.TemplateData); err != nil {
		return fmt.Errorf("ima: entry %d: template hash: %w", e.Index, err)
	}
	if !bytes.Equal(got, e.TemplateHash) {
		return &TemplateHashError{Index: e.Index, Path: string(e.Path()), Alg: e.TemplateHashAlg,
			Logged: bytes.Clone(e.TemplateHash), Computed: bytes.Clone(got)}
	}
	return nil
}

// ReplayOptions tunes how entries extend PCR 10.
type ReplayOptions struct {
	// PadSHA1 replays as kernels before 5.8 did: every bank is extended
	// with the SHA-1 template digest zero-padded to the bank's size,
	// instead of with the template data hashed by the bank's algorithm.
	PadSHA1 bool
	// PCR is the PCR replayed; 0 means IMAPCR (10). Entries for other PCRs
	// do not extend it.
	PCR uint32
}

// Replayer extends PCR banks with entries, as the kernel does.
type Replayer struct {
	opts  ReplayOptions
	banks []bank
	// Entries counts the entries that extended the PCR, Violations those of
	// them that were violations, Skipped the entries for other PCRs.
	Entries, Violations, Skipped uint64
}

type bank struct {
	alg Algorithm
	pcr [maxDigest]byte
	// last is the digest the last entry extended with.
	last [maxDigest]byte
}

// NewReplayer starts a replay of the given banks from the all-zero PCR.
func NewReplayer(opts ReplayOptions, algs ...Algorithm) (*Replayer, error) {
	if opts.PCR == 0 {
		opts.PCR = IMAPCR
	}
	r := &Replayer{opts: opts}
	for _, a := range algs {
		if !a.Computable() {
			return nil, fmt.Errorf("ima: cannot replay the %s bank: %w", a, ErrUnsupportedHash)
		}
		for _, b := range r.banks {
			if b.alg == a {
				return nil, fmt.Errorf("ima: bank %s given twice", a)
			}
		}
		r.banks = append(r.banks, bank{alg: a})
	}
	return r, nil
}

// SetPCR sets a bank's running value, to continue a replay from a state.
func (r *Replayer) SetPCR(a Algorithm, v []byte) error {
	for i := range r.banks {
		if r.banks[i].alg == a {
			if len(v) != a.Size() {
				return fmt.Errorf("ima: %s PCR value is %d bytes, want %d", a, len(v), a.Size())
			}
			copy(r.banks[i].pcr[:], v)
			return nil
		}
	}
	return fmt.Errorf("ima: bank %s is not being replayed", a)
}

// PCR returns a bank's current value (nil if the bank is not replayed).
func (r *Replayer) PCR(a Algorithm) []byte {
	for i := range r.banks {
		if r.banks[i].alg == a {
			return bytes.Clone(r.banks[i].pcr[:a.Size()])
		}
	}
	return nil
}

// pcrView is PCR without the copy, for comparisons on the hot path.
func (r *Replayer) pcrView(i int) []byte {
	return r.banks[i].pcr[:r.banks[i].alg.Size()]
}

// Extend extends e into every bank and reports whether it did (entries for
// other PCRs do not extend PCR 10). The template digest each bank used is
// available from lastDigest until the next call.
func (r *Replayer) Extend(e *Entry) (bool, error) {
	if e.PCR != r.opts.PCR {
		r.Skipped++
		return false, nil
	}
	viol := e.IsViolation()
	var sha1Digest [20]byte
	if r.opts.PadSHA1 && !viol {
		if err := sum(SHA1, sha1Digest[:], e.TemplateData); err != nil {
			return false, err
		}
	}
	var buf [2 * maxDigest]byte
	for i := range r.banks {
		b := &r.banks[i]
		n := b.alg.Size()
		d := b.last[:n]
		switch {
		case r.opts.PadSHA1 && viol:
			clear(d)
			for j := 0; j < 20; j++ {
				d[j] = 0xff
			}
		case viol:
			for j := range d {
				d[j] = 0xff
			}
		case r.opts.PadSHA1:
			clear(d)
			copy(d, sha1Digest[:])
		default:
			if err := sum(b.alg, d, e.TemplateData); err != nil {
				return false, err
			}
		}
		copy(buf[:n], b.pcr[:n])
		copy(buf[n:2*n], d)
		if err := sum(b.alg, b.pcr[:n], buf[:2*n]); err != nil {
			return false, err
		}
	}
	r.Entries++
	if viol {
		r.Violations++
	}
	return true, nil
}

// lastDigest is the template digest bank alg was extended with by the last
// Extend, or nil.
func (r *Replayer) lastDigest(a Algorithm) []byte {
	for i := range r.banks {
		if r.banks[i].alg == a {
			return r.banks[i].last[:a.Size()]
		}
	}
	return nil
}

// BootAggregate computes the boot_aggregate digest the kernel records as the
// first entry: the bank's hash over PCRs 0-7, and for banks other than SHA-1
// also PCRs 8 and 9 (kernels 5.8 and later). pcrs maps PCR index to value.
func BootAggregate(a Algorithm, pcrs map[int][]byte) ([]byte, error) {
	last := 9
	if a == SHA1 {
		last = 7
	}
	if !a.Computable() {
		return nil, fmt.Errorf("ima: boot_aggregate over %s: %w", a, ErrUnsupportedHash)
	}
	data := make([]byte, 0, (last+1)*a.Size())
	for i := 0; i <= last; i++ {
		v, ok := pcrs[i]
		if !ok {
			return nil, fmt.Errorf("ima: boot_aggregate over %s needs PCR %d", a, i)
		}
		if len(v) != a.Size() {
			return nil, fmt.Errorf("ima: %s PCR %d is %d bytes, want %d", a, i, len(v), a.Size())
		}
		data = append(data, v...)
	}
	return Sum(a, data)
}

// ReplayResult is the outcome of a whole-list replay.
type ReplayResult struct {
	Entries    uint64 // entries that extended the PCR
	Violations uint64 // of which violations
	Skipped    uint64 // entries for other PCRs
	// Unchecked counts entries whose logged template hash uses an algorithm
	// Vigil cannot compute (sm3): replayed, but not checked.
	Unchecked uint64
	PCR       map[string][]byte // bank name -> final value
}

// Replay parses a whole list and replays it into the given banks, checking
// every entry's template hash on the way. The first template hash mismatch
// is returned as a *TemplateHashError; entries whose logged digest uses an
// algorithm Vigil cannot compute are replayed without that check.
func Replay(data []byte, popts ParseOptions, ropts ReplayOptions, algs ...Algorithm) (ReplayResult, error) {
	r, err := NewReplayer(ropts, algs...)
	if err != nil {
		return ReplayResult{}, err
	}
	p := NewParser(data, popts)
	var unchecked uint64
	for p.Next() {
		e := p.Entry()
		if _, err := r.Extend(e); err != nil {
			return ReplayResult{}, err
		}
		checked, err := checkAgainstBanks(r, e)
		if err != nil {
			return ReplayResult{}, err
		}
		if !checked {
			unchecked++
		}
	}
	if err := p.Err(); err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Entries: r.Entries, Violations: r.Violations, Skipped: r.Skipped,
		Unchecked: unchecked, PCR: map[string][]byte{}}
	for _, a := range algs {
		res.PCR[a.String()] = r.PCR(a)
	}
	return res, nil
}

// checkAgainstBanks checks e's template hash, reusing a bank's digest when
// the bank has the logged digest's algorithm (the common case: one hash per
// entry and bank, not two). It reports false when the logged digest's
// algorithm cannot be computed and the entry went unchecked.
func checkAgainstBanks(r *Replayer, e *Entry) (bool, error) {
	if e.IsViolation() {
		return true, nil
	}
	if !r.opts.PadSHA1 && e.PCR == r.opts.PCR {
		if d := r.lastDigest(e.TemplateHashAlg); d != nil {
			if !bytes.Equal(d, e.TemplateHash) {
				return true, &TemplateHashError{Index: e.Index, Path: string(e.Path()), Alg: e.TemplateHashAlg,
					Logged: bytes.Clone(e.TemplateHash), Computed: bytes.Clone(d)}
			}
			return true, nil
		}
	}
	err := e.CheckTemplateHash()
	if err != nil && errors.Is(err, ErrUnsupportedHash) {
		return false, nil
	}
	return true, err
}

// HexBytes marshals as lowercase hex in JSON and as a byte string in CBOR.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h)
	return out, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	out := make([]byte, hex.DecodedLen(len(b)))
	if _, err := hex.Decode(out, b); err != nil {
		return fmt.Errorf("ima: %v", err)
	}
	*h = out
	return nil
}
