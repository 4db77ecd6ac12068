package verifier

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
	"time"
)

// Nonces are stateless: a nonce carries what the challenge asked for and
// when it was issued, authenticated by a MAC under a key the verifier keeps
// in its store. Any nonce the verifier issued to an agent can be answered
// until it expires, so a third party asking for challenges in an agent's
// name changes nothing for the agent: there is no open challenge to
// replace. Single use comes from order instead of memory: the verifier
// accepts evidence only over a nonce issued after the nonce of the last
// evidence it accepted from that agent (Agent.LastNonce), and nonces of one
// verifier are issued at strictly increasing times. An operator's change
// of an agent's policies moves LastNonce to the time of the change, so the
// nonces issued for the old policies are refused after it too.
//
// The layout, 32 bytes so that every TPM's qualifyingData takes it:
//
//	0      version (nonceV1)
//	1      flags (nonceBootLog, nonceFullIMA)
//	2..9   issue time, Unix nanoseconds, big endian
//	10..15 random
//	16..31 HMAC-SHA256(key, label ‖ agent ID ‖ 0 ‖ admission time ‖ bytes 0..15
//	       ‖ PCR selection), first 16 bytes
//
// The admission time (Agent.AdmittedAt, moved by a readmission) is under
// the MAC, so nonces issued before an operator readmitted or re-admitted
// an agent are refused after it. So is the PCR selection the challenge
// asked for (a marshalled TPML_PCR_SELECTION, which delimits itself): it
// follows from the agent's policies, a PCR policy's PCRs included, and a
// new version of that policy may name other PCRs. A nonce issued for
// another selection than the one the agent's policies need now is refused
// (the agent asks again), so evidence is never judged by a policy whose
// PCRs its challenge did not ask for.
const (
	nonceSize    = 32
	nonceV1      = 1
	nonceKeyName = "nonce-mac-v1"
	nonceLabel   = "vigil nonce v1\x00"
)

// Flags a nonce carries: what its challenge asked for.
const (
	// nonceBootLog: the challenge asked for the boot log.
	nonceBootLog byte = 1 << iota
	// nonceFullIMA: the challenge asked for the IMA list from entry 0.
	nonceFullIMA
)

// nonceInfo is what a nonce says once its MAC checked out.
type nonceInfo struct {
	raw     []byte
	flags   byte
	issued  time.Time
	issueNS int64
}

func (n nonceInfo) bootLog() bool { return n.flags&nonceBootLog != 0 }
func (n nonceInfo) fullIMA() bool { return n.flags&nonceFullIMA != 0 }

// nonceMACKey is the MAC key with HMAC states keyed by it, reused: keying
// an HMAC hashes two blocks and allocates, which at fleet scale cost more
// than the MAC of the nonce itself (two blocks are mixed in once per key
// here, and Reset restores them).
type nonceMACKey struct {
	macs sync.Pool // of *nonceMAC
}

// nonceMAC is one HMAC-SHA256 state under the key, with room for its input
// and output, so that computing a MAC allocates nothing.
type nonceMAC struct {
	h   hash.Hash
	in  []byte
	out []byte
}

func newNonceMACKey(key []byte) *nonceMACKey {
	k := &nonceMACKey{}
	k.macs.New = func() any {
		return &nonceMAC{h: hmac.New(sha256.New, key), in: make([]byte, 0, 128), out: make([]byte, 0, sha256.Size)}
	}
	return k
}

// nonceKey returns the MAC key, reading it from the store (which creates it
// once) the first time.
func (s *Service) nonceKey(ctx context.Context) (*nonceMACKey, error) {
	if k := s.macKey.Load(); k != nil {
		return k, nil
	}
	k, err := s.Store.Secret(ctx, nonceKeyName, 32)
	if err != nil {
		return nil, fmt.Errorf("nonce key: %w", err)
	}
	s.macKey.CompareAndSwap(nil, newNonceMACKey(k))
	return s.macKey.Load(), nil
}

// issueTime returns a Unix-nanosecond time after every earlier one this
// service issued, so that no two nonces of one agent share an issue time
// and "issued after the last accepted one" is a strict order.
func (s *Service) issueTime() int64 {
	now := s.now().UnixNano()
	for {
		last := s.lastIssued.Load()
		next := max(now, last+1)
		if s.lastIssued.CompareAndSwap(last, next) {
			return next
		}
	}
}

// mintNonce makes a nonce for agent a, for a challenge asking for the
// marshalled PCR selection sel, with the given flags.
func (s *Service) mintNonce(ctx context.Context, a Agent, sel []byte, flags byte) ([]byte, error) {
	key, err := s.nonceKey(ctx)
	if err != nil {
		return nil, err
	}
	n := make([]byte, nonceSize)
	n[0], n[1] = nonceV1, flags
	binary.BigEndian.PutUint64(n[2:10], uint64(s.issueTime()))
	if _, err := rand.Read(n[10:16]); err != nil {
		return nil, err
	}
	key.sum(n[16:], a, n[:16], sel)
	return n, nil
}

// sum writes the first 16 bytes of the MAC of a nonce for agent a, whose
// first 16 bytes are head, to dst.
func (k *nonceMACKey) sum(dst []byte, a Agent, head, sel []byte) {
	m := k.macs.Get().(*nonceMAC)
	defer k.macs.Put(m)
	m.h.Reset()
	b := append(m.in[:0], nonceLabel...)
	b = append(b, a.ID...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(a.AdmittedAt.UnixNano()))
	b = append(b, head...)
	b = append(b, sel...)
	m.h.Write(b)
	m.in = b[:0]
	m.out = m.h.Sum(m.out[:0])
	copy(dst, m.out[:16])
}

// checkNonce tells whether nonce was issued by this verifier (or one
// sharing its store) to agent a since its admission, for a challenge
// asking for the marshalled PCR selection sel, and is unexpired and newer
// than the last nonce a's accepted evidence answered. Every failure is a
// refusal: none of it is evidence about the host.
func (s *Service) checkNonce(ctx context.Context, a Agent, sel, nonce []byte, now time.Time) (nonceInfo, error) {
	if len(nonce) != nonceSize || nonce[0] != nonceV1 {
		return nonceInfo{}, refuseAs(RefusedConflict, refusedBadNonce, "nonce for agent %q was not issued by this verifier (%d bytes, version %d): ask for a new challenge", a.ID, len(nonce), versionOf(nonce))
	}
	key, err := s.nonceKey(ctx)
	if err != nil {
		return nonceInfo{}, err
	}
	var mac [16]byte
	key.sum(mac[:], a, nonce[:16], sel)
	if !hmac.Equal(nonce[16:], mac[:]) {
		return nonceInfo{}, refuseAs(RefusedConflict, refusedBadNonce, "nonce was not issued by this verifier to agent %q since its admission, or its challenge asked for other PCRs than the agent's policies need now: ask for a new challenge", a.ID)
	}
	ns := int64(binary.BigEndian.Uint64(nonce[2:10]))
	info := nonceInfo{raw: nonce, flags: nonce[1], issued: time.Unix(0, ns), issueNS: ns}
	if expires := info.issued.Add(s.nonceTTL(a)); now.After(expires) {
		return nonceInfo{}, refuseAs(RefusedConflict, refusedNonceExpired, "nonce for agent %q expired at %s: ask for a new challenge", a.ID, expires.UTC().Format(time.RFC3339Nano))
	}
	if ns <= a.LastNonce {
		return nonceInfo{}, refuseAs(RefusedConflict, refusedNonceUsed, "nonce for agent %q is not newer than the last one answered (single use), or was issued before an operator changed the agent's policies: ask for a new challenge", a.ID)
	}
	return info, nil
}

func versionOf(nonce []byte) int {
	if len(nonce) == 0 {
		return -1
	}
	return int(nonce[0])
}
