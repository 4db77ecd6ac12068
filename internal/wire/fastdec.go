package wire

import (
	"math"
	"unicode/utf8"
)

// Every attestation's answer is a Verdict carrying the next Challenge, and
// an agent (or the bench's simulated hosts, thousands a second) decodes
// one each time. As for Evidence (fast.go), Unmarshal first tries a decoder
// written for these two alone, on the same terms: it accepts only the
// form Marshal writes (definite lengths, shortest heads, field names in
// their exact case, each once, values of exactly the declared types, text
// in valid UTF-8, null where the general decoder reads null as the zero
// value), and gives up on anything else — an unknown or repeated field, a
// tag, an integer out of range, trailing bytes — leaving the general
// decoder to decide on the same bytes, with its own errors. The fuzz
// targets FuzzVerdictFastPath and FuzzChallengeFastPath hold the two to
// the same answers.
//
// ReadVerdictView and ReadChallengeView are that decoder without the copy
// into a Verdict: their text and byte fields share the message, so a
// caller that reads a verdict per request into a reused view allocates
// nothing.

// ChallengeView is a Challenge read in place: its byte fields, the text
// included, share the message read. A null or absent field reads as nil
// (or zero), as Unmarshal reads it into the zero value.
type ChallengeView struct {
	AgentID      []byte
	Nonce        []byte
	PCRSelection []byte
	IMAOffset    uint64
	WantIMA      bool
	WantBootLog  bool
	IntervalMS   int64
	ExpiresInMS  int64
}

// VerdictView is a Verdict read in place, as ChallengeView is a Challenge.
type VerdictView struct {
	AgentID []byte
	State   []byte
	Reason  []byte
	Detail  []byte
	// HasNext says the verdict carries a next challenge, Next.
	HasNext bool
	Next    ChallengeView
}

// ReadVerdictView reads data, a Verdict in the form Marshal writes it, into
// v, and reports whether it could. When it reports false, v is zeroed and
// data may still be a Verdict another encoder wrote, or not one at all:
// Unmarshal decides.
func ReadVerdictView(data []byte, v *VerdictView) bool {
	r := cborReader{b: data}
	var out VerdictView
	if !r.verdict(&out) || r.off != len(data) {
		*v = VerdictView{}
		return false
	}
	*v = out
	return true
}

// ReadChallengeView reads data, a Challenge in the form Marshal writes it,
// into c, as ReadVerdictView reads a Verdict.
func ReadChallengeView(data []byte, c *ChallengeView) bool {
	r := cborReader{b: data}
	var out ChallengeView
	if !r.challenge(&out) || r.off != len(data) {
		*c = ChallengeView{}
		return false
	}
	*c = out
	return true
}

// null consumes a null if one is next.
func (r *cborReader) null() bool {
	if r.off < len(r.b) && r.b[r.off] == cborNull {
		r.off++
		return true
	}
	return false
}

// text reads a text string, which must be valid UTF-8.
func (r *cborReader) text() ([]byte, bool) {
	s, ok := r.str(3)
	return s, ok && utf8.Valid(s)
}

func (r *cborReader) boolean() (bool, bool) {
	if r.off >= len(r.b) {
		return false, false
	}
	c := r.b[r.off]
	r.off++
	return c == 0xf5, c == 0xf5 || c == 0xf4
}

// int64 reads an integer that fits an int64.
func (r *cborReader) int64() (int64, bool) {
	m, n, ok := r.head()
	if !ok || n > math.MaxInt64 {
		return 0, false
	}
	switch m {
	case 0:
		return int64(n), true
	case 1:
		return -1 - int64(n), true
	}
	return 0, false
}

// fields reads a map whose keys are among names, each at most once, in
// any order: read(i) reads the value of names[i], unless it is null (the
// zero value, as the general decoder reads it). An unknown or repeated key
// or a value read fails it.
func (r *cborReader) fields(names []string, read func(i int) bool) bool {
	n, ok := r.mapHeader(uint64(len(names)))
	if !ok {
		return false
	}
	var seen uint
	for range n {
		k, ok := r.str(3)
		if !ok {
			return false
		}
		i := -1
		for j, name := range names {
			if string(k) == name {
				i = j
				break
			}
		}
		if i < 0 || seen&(1<<i) != 0 {
			return false
		}
		seen |= 1 << i
		if r.null() {
			continue
		}
		if !read(i) {
			return false
		}
	}
	return true
}

// The fields of Verdict and Challenge, by their CBOR names.
var (
	verdictFields   = []string{"agent_id", "state", "reason", "detail", "next"}
	challengeFields = []string{"agent_id", "nonce", "pcr_selection", "ima_offset", "want_ima", "want_boot_log", "interval_ms", "expires_in_ms"}
)

func (r *cborReader) verdict(v *VerdictView) bool {
	return r.fields(verdictFields, func(i int) (ok bool) {
		switch i {
		case 0:
			v.AgentID, ok = r.text()
		case 1:
			v.State, ok = r.text()
		case 2:
			v.Reason, ok = r.text()
		case 3:
			v.Detail, ok = r.text()
		case 4:
			v.HasNext, ok = true, r.challenge(&v.Next)
		}
		return ok
	})
}

func (r *cborReader) challenge(c *ChallengeView) bool {
	return r.fields(challengeFields, func(i int) (ok bool) {
		switch i {
		case 0:
			c.AgentID, ok = r.text()
		case 1:
			c.Nonce, ok = r.str(2)
		case 2:
			c.PCRSelection, ok = r.str(2)
		case 3:
			c.IMAOffset, ok = r.uint(math.MaxUint64)
		case 4:
			c.WantIMA, ok = r.boolean()
		case 5:
			c.WantBootLog, ok = r.boolean()
		case 6:
			c.IntervalMS, ok = r.int64()
		case 7:
			c.ExpiresInMS, ok = r.int64()
		}
		return ok
	})
}

// decodeVerdictFast decodes data into v if ReadVerdictView can read it,
// and reports whether it did; v is untouched otherwise. The next
// challenge's byte fields share data when the caller hands it over
// (owned), else one copy of their own.
func decodeVerdictFast(data []byte, v *Verdict, owned bool) bool {
	var view VerdictView
	if !ReadVerdictView(data, &view) {
		return false
	}
	out := Verdict{AgentID: string(view.AgentID), State: stateString(view.State),
		Reason: string(view.Reason), Detail: string(view.Detail)}
	if view.HasNext {
		out.Next = new(Challenge)
		view.Next.fill(out.Next, owned)
	}
	*v = out
	return true
}

// decodeChallengeFast is decodeVerdictFast for a Challenge.
func decodeChallengeFast(data []byte, c *Challenge, owned bool) bool {
	var view ChallengeView
	if !ReadChallengeView(data, &view) {
		return false
	}
	view.fill(c, owned)
	return true
}

// fill sets c to the challenge v views. Unless owned, the byte fields get
// one buffer of their own.
func (v *ChallengeView) fill(c *Challenge, owned bool) {
	*c = Challenge{AgentID: string(v.AgentID), Nonce: v.Nonce, PCRSelection: v.PCRSelection, IMAOffset: v.IMAOffset,
		WantIMA: v.WantIMA, WantBootLog: v.WantBootLog, IntervalMS: v.IntervalMS, ExpiresInMS: v.ExpiresInMS}
	if owned {
		return
	}
	var buf []byte
	if n := len(v.Nonce) + len(v.PCRSelection); n > 0 {
		buf = make([]byte, 0, n)
	}
	c.Nonce, buf = ownCopy(v.Nonce, buf)
	c.PCRSelection, _ = ownCopy(v.PCRSelection, buf)
}

// ownCopy copies b to the end of buf (which has room for it), keeping nil
// nil and empty empty, and returns the copy, capped at its length.
func ownCopy(b, buf []byte) ([]byte, []byte) {
	switch {
	case b == nil:
		return nil, buf
	case len(b) == 0:
		return []byte{}, buf
	}
	start := len(buf)
	buf = append(buf, b...)
	return buf[start:len(buf):len(buf)], buf
}

// stateString is string(b), without allocating for the states a verifier
// reports.
func stateString(b []byte) string {
	switch string(b) {
	case "attesting":
		return "attesting"
	case "failed":
		return "failed"
	}
	return string(b)
}

// isZero reports whether v is the zero Verdict (see Evidence.isZero).
func (v *Verdict) isZero() bool {
	return v.AgentID == "" && v.State == "" && v.Reason == "" && v.Detail == "" && v.Next == nil
}

// isZero reports whether c is the zero Challenge.
func (c *Challenge) isZero() bool {
	return c.AgentID == "" && c.Nonce == nil && c.PCRSelection == nil && c.IMAOffset == 0 &&
		!c.WantIMA && !c.WantBootLog && c.IntervalMS == 0 && c.ExpiresInMS == 0
}
