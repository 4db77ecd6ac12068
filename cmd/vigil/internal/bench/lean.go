package bench

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// The lean load generator. Each simulated host enrolls through the agent's
// own Enroller, as with the agent generator; then, instead of the agent's
// Attester, it attests with the same evidence made the cheap way:
//
//   - its IMA list is in memory (simhost.MemIMALog), its entries numbers
//     into one table of pre-encoded records the fleet shares, and a new
//     entry costs the PCR 10 extends alone;
//   - the quote comes from soft.TPM.QuoteTo: marshalled by hand into
//     reused buffers, the PCR values read under the quote's lock;
//   - the evidence is encoded by hand (cbor.go), byte for byte what
//     wire.Marshal writes for the agent's wire.Evidence;
//   - the request goes over the host's own keep-alive TLS connection
//     through a minimal HTTP/1.1 client (leanhttp.go), and the verdict
//     with the next challenge is read by hand.
//
// What the verifier receives is what an agent sends: one HTTPS POST per
// attestation to the agent's evidence path, the nonce in the Vigil-Nonce
// header, the same CBOR body; what it answers is used as an agent uses it.
// Hosts attest on a schedule the fleet shares (schedule), so that the rate
// offered is exactly hosts ÷ interval, whatever the verifier's latency.

// leanFleet is what the lean generator's hosts share.
type leanFleet struct {
	table   *simhost.IMATable
	url     string
	tls     *tls.Config
	bootLog []byte
	// entries is the number of new IMA entries per attestation.
	entries int
	hosts   int
	sched   atomic.Pointer[schedule]
	// replay, in tests of presigning, is the index of host 0's request
	// that it sends twice in a row each step (0: none).
	replay int
}

// schedule is when the fleet's hosts attest: host i at start + φᵢ·pace +
// k·pace for every k ≥ 0, so the fleet offers n/pace attestations a
// second. The phase φᵢ in [0, 1) is host i's own, drawn at random (from i,
// so a run is repeatable) and kept from one schedule to the next: the
// arrivals at the verifier are then those of a fleet of machines that
// booted at unrelated times, close to a Poisson stream, not a metronome.
// (Evenly spaced phases would have every request find the verifier idle,
// which costs it measurably more per verdict in wake-ups than the
// arrivals of a real fleet do.)
type schedule struct {
	start time.Time
	pace  time.Duration
}

// phase is host i's phase φᵢ, in [0, 1): SplitMix64 of i.
func phase(i int) float64 {
	z := uint64(i)*0x9e3779b97f4a7c15 + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// after is host i's first slot after t.
func (s *schedule) after(i, n int, t time.Time) time.Time {
	base := s.start.Add(time.Duration(float64(s.pace) * phase(i)))
	if t.Before(base) {
		return base
	}
	k := t.Sub(base)/s.pace + 1
	return base.Add(k * s.pace)
}

// setPace starts a new schedule at the given pace from now.
func (f *leanFleet) setPace(pace time.Duration) {
	f.sched.Store(&schedule{start: time.Now(), pace: pace})
}

// leanHost is one host's state in the lean generator; its buffers are
// reused from one attestation to the next.
type leanHost struct {
	client  *leanClient
	evPath  string
	chPath  string
	ids     []int
	q       soft.QuoteOut
	enc     evidenceEncoder
	ev      evidence
	body    []byte
	req     []byte
	selRaw  []byte
	sel     tpm2.TPMLPCRSelection
	nonce   []byte
	ch      challengeView
	verdict verdictView
	timer   *time.Timer
	// stop, when closed, stops the host's loop between two exchanges
	// (hostLoops); nil never does.
	stop <-chan struct{}
	// pre are the requests presigned for a step (presign.go), in order,
	// in preArena.
	pre      [][]byte
	preArena []byte
}

// stopped reports whether the host's loop was told to stop.
func (l *leanHost) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// capture is the agent's TPM with the AK blob noted when the enrollment
// activates it: the lean generator quotes with it as the agent would after
// reading it back from its data directory.
type capture struct {
	agent.TPM
	h *host
}

func (c capture) ActivateCredential(ctx context.Context, ak agent.AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error) {
	c.h.ak, c.h.akSet = soft.AKBlob(ak), true
	return c.TPM.ActivateCredential(ctx, ak, credentialBlob, secret)
}

// prepareLean readies a host enrolled with the lean generator to attest.
func (h *host) prepareLean(f *leanFleet) error {
	if !h.akSet {
		return fmt.Errorf("%s: no AK was activated at enrollment", h.id)
	}
	c, err := newLeanClient(f.url, f.tls)
	if err != nil {
		return err
	}
	h.lean = &leanHost{
		client: c,
		evPath: wire.PathEvidence + "/" + url.PathEscape(h.id),
		chPath: wire.PathChallenge,
		ids:    make([]int, f.entries),
		timer:  time.NewTimer(time.Hour),
	}
	h.lean.timer.Stop()
	h.lean.ev.agentID = h.id
	return nil
}

// leanLoop attests on the fleet's schedule until ctx ends: the agent's
// push loop (a challenge first, then each verdict's next challenge; errors
// back off as the agent's do and start again with a new challenge) with
// the bench's additions (k new IMA entries before each quote, the round
// trip timed).
func (h *host) leanLoop(ctx context.Context, f *leanFleet, i int, rec *recorder) {
	l := h.lean
	defer l.client.close()
	var cur *schedule
	var last time.Time
	started, haveCh := true, false
	wait := firstBackoff
	backoff := func(err error) {
		d := wait
		var ref *agent.RefusedError
		if errors.As(err, &ref) && ref.RetryAfter > 0 {
			d = min(ref.RetryAfter, time.Minute)
		}
		l.sleepUntil(ctx, time.Now().Add(d))
		wait = min(2*wait, time.Minute)
		last = time.Now()
	}
	for ctx.Err() == nil && !l.stopped() {
		if s := f.sched.Load(); s != cur {
			cur, last = s, s.start.Add(-1)
		}
		next, lag, late, awake := l.waitSlot(ctx, cur, i, f.hosts, last)
		if !awake {
			return
		}
		last = next
		if !haveCh {
			var ch wire.Challenge
			err := l.challenge(ctx, h.id, started, &ch)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				rec.fail(h.id, errorKind("challenge", err), false)
				var refused *agent.RefusedError
				if errors.As(err, &refused) && refused.Status == http.StatusForbidden {
					rec.agentFailed(h.id)
				}
				backoff(err)
				continue
			}
			l.setChallenge(viewOf(&ch))
			haveCh = true
		}
		if err := h.measureLean(ctx, f); err != nil {
			if ctx.Err() == nil {
				rec.fail(h.id, errorKind("measure", err), false)
			}
			return
		}
		if err := h.collectLean(ctx, f); err != nil {
			if ctx.Err() != nil {
				return
			}
			rec.fail(h.id, errorKind("collect", err), false)
			haveCh = false
			backoff(nil)
			continue
		}
		start := time.Now()
		rsp, err := l.client.roundTrip(ctx, l.req)
		took := time.Since(start)
		rec.attempt(lag, late)
		if err == nil && rsp.status != http.StatusOK {
			err = refusal(rsp)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rec.fail(h.id, errorKind("evidence", err), false)
			haveCh = false
			backoff(err)
			continue
		}
		ok := readVerdict(rsp.body, &l.verdict)
		if !ok {
			var v wire.Verdict
			if err := wire.Unmarshal(rsp.body, &v); err != nil {
				rec.fail(h.id, errorKind("evidence", err), false)
				haveCh = false
				backoff(nil)
				continue
			}
			l.verdict = verdictView{state: []byte(v.State), reason: []byte(v.Reason), hasNext: v.Next != nil}
			if v.Next != nil {
				l.verdict.next = viewOf(v.Next)
			}
		}
		if !l.verdict.hasNext {
			rec.fail(h.id, fmt.Sprintf("verdict: %s (%s)", l.verdict.state, l.verdict.reason), false)
			haveCh = false
			backoff(nil)
			continue
		}
		started, wait = false, firstBackoff
		rec.verdict(h.id, f.url, took)
		l.setChallenge(l.verdict.next)
	}
}

// waitSlot waits for host i's next slot of cur after last: it returns the
// slot (or now, when the last attestation or backoff ran past it, which is
// then late), how long after the slot the host woke, and false if the loop
// is to end.
func (l *leanHost) waitSlot(ctx context.Context, cur *schedule, i, hosts int, last time.Time) (next time.Time, lag time.Duration, late, ok bool) {
	slot := cur.after(i, hosts, last)
	if now := time.Now(); slot.Before(now) {
		// Go now, and on from the next slot.
		return now, 0, true, true
	}
	if !l.sleepUntil(ctx, slot) {
		return last, 0, false, false
	}
	return slot, time.Since(slot), false, true
}

// sleepUntil waits until t or until ctx ends or the loop is stopped; it
// reports whether the loop is to go on.
func (l *leanHost) sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil && !l.stopped()
	}
	l.timer.Reset(d)
	select {
	case <-ctx.Done():
		l.timer.Stop()
		return false
	case <-l.stop:
		l.timer.Stop()
		return false
	case <-l.timer.C:
		return true
	}
}

// setChallenge keeps what the next evidence answers, copied out of the
// response buffer; the PCR selection is parsed only when it changes.
func (l *leanHost) setChallenge(c challengeView) {
	l.nonce = append(l.nonce[:0], c.nonce...)
	if string(c.pcrSelection) != string(l.selRaw) || l.selRaw == nil {
		l.selRaw = append(l.selRaw[:0], c.pcrSelection...)
		if l.selRaw == nil {
			l.selRaw = []byte{}
		}
		l.sel = tpm2.TPMLPCRSelection{}
		if sel, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](l.selRaw); err == nil {
			l.sel = *sel
		} else {
			// Collect fails on it, as the agent's does.
			l.selRaw = nil
		}
	}
	c.nonce, c.pcrSelection = nil, nil
	l.ch = c
}

// challenge asks the verifier for a challenge, as the agent does after it
// starts or after an error.
func (l *leanHost) challenge(ctx context.Context, id string, started bool, ch *wire.Challenge) error {
	body, err := wire.Marshal(wire.ChallengeRequest{AgentID: id, Started: started})
	if err != nil {
		return err
	}
	l.req = l.client.appendRequest(l.req[:0], l.chPath)
	l.req = append(endHeaders(l.req, len(body)), body...)
	rsp, err := l.client.roundTrip(ctx, l.req)
	if err != nil {
		return err
	}
	if rsp.status != http.StatusOK {
		return refusal(rsp)
	}
	var v challengeView
	if readChallenge(rsp.body, &v) {
		*ch = wire.Challenge{Nonce: v.nonce, PCRSelection: v.pcrSelection, IMAOffset: v.imaOffset, WantIMA: v.wantIMA,
			WantBootLog: v.wantBoot, IntervalMS: v.intervalMS, ExpiresInMS: v.expiresInMS}
		return nil
	}
	return wire.Unmarshal(rsp.body, ch)
}

// refusal is a non-200 answer as the agent reports it: the status, the
// verifier's reason, and its Retry-After.
func refusal(rsp leanResponse) error {
	ref := &agent.RefusedError{Status: rsp.status, Msg: http.StatusText(rsp.status), RetryAfter: rsp.retryAfter}
	var werr wire.Error
	if err := wire.Unmarshal(rsp.body, &werr); err == nil && werr.Error != "" {
		ref.Msg = werr.Error
	}
	return ref
}

// measureLean appends k entries of the pool to the host's in-memory list,
// extending PCR 10, as the kernel does when programs run.
func (h *host) measureLean(ctx context.Context, f *leanFleet) error {
	if f.entries == 0 {
		return nil
	}
	ids := h.lean.ids
	for i := range ids {
		ids[i] = h.next % f.table.Len()
		h.next++
	}
	return h.mem.AppendTable(ctx, h.tpm, ids...)
}

// presignFor tops up every host's precomputed ECDSA nonces
// (soft.TPM.PrepareSignatures) to cover d of attesting at pace, and a few
// more: the message-independent half of each quote's signature is then
// made here, before a window, instead of in it. A host that runs out signs
// the usual way. RSA AKs have nothing to prepare. Presigned runs
// (presign.go) skip it: nothing is signed in their windows.
func presignFor(ctx context.Context, hosts []*host, workers int, d, pace time.Duration) error {
	want := int(d/pace) + 4
	return parallel(ctx, len(hosts), workers, func(i int) error {
		h := hosts[i]
		have, err := h.tpm.PrepareSignatures(ctx, h.ak, 0)
		if err != nil || have >= want {
			return err
		}
		_, err = h.tpm.PrepareSignatures(ctx, h.ak, want-have)
		return err
	})
}

// maxIMASlice is the agent's bound on one read of the IMA list.
const maxIMASlice = 8 << 20

// collectLean builds the request answering the host's challenge:
// Attester.Collect's evidence (quote, PCR values, the IMA entries from the
// offset asked, the boot log if asked), encoded, behind the agent's
// request line and headers.
func (h *host) collectLean(ctx context.Context, f *leanFleet) error {
	l := h.lean
	if l.selRaw == nil {
		return errors.New("challenge PCR selection: not a TPML_PCR_SELECTION")
	}
	if err := h.tpm.QuoteTo(ctx, h.ak, l.nonce, l.sel, &l.q); err != nil {
		return err
	}
	ev := &l.ev
	ev.nonce, ev.quote, ev.signature = l.nonce, l.q.Attest, l.q.Signature
	ev.sel, ev.pcrs, ev.imaOffset = l.sel, l.q.PCRs, l.ch.imaOffset
	ev.imaSize, ev.bootLog = 0, nil
	if l.ch.wantIMA {
		n, err := h.mem.SizeFrom(l.ch.imaOffset, maxIMASlice)
		if err != nil {
			return fmt.Errorf("IMA log: %w", err)
		}
		ev.imaSize = n
		if ev.appendIMA == nil {
			ev.appendIMA = func(dst []byte) []byte {
				dst, _, _ = h.mem.AppendFrom(dst, l.ev.imaOffset, maxIMASlice)
				return dst
			}
		}
	}
	if l.ch.wantBoot {
		ev.bootLog = f.bootLog
	}
	l.body = l.enc.append(l.body[:0], ev)
	l.req = l.client.appendRequest(l.req[:0], l.evPath)
	l.req = append(l.req, wire.NonceHeader+": "...)
	l.req = hex.AppendEncode(l.req, l.nonce)
	l.req = append(l.req, "\r\n"...)
	l.req = append(endHeaders(l.req, len(l.body)), l.body...)
	return nil
}
