package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/verifier"
)

// Presigning (Options.Presign). With RSA AKs a quote's signature costs the
// soft TPM about a millisecond of CPU, more than the verifier spends on a
// verdict, so a generator that signs in the window cannot saturate a
// verifier beside it. Presigning moves every signature out of the window
// while the verifier's work stays what it is:
//
//   - Before each step's window, every host asks the verifier, in order,
//     for the challenges it will answer over the step (its pace's share
//     of settle + window, and some slack), on the ordinary challenge
//     endpoint the agent uses. Challenges are stateless: each nonce
//     carries its issue time, any number may be outstanding, and the
//     verifier accepts one only if it is newer than the last it accepted
//     from the host and unexpired; answered in the order fetched, each is
//     valid once.
//   - Then host by host, over GOMAXPROCS workers, each attestation's
//     evidence is made in sequence, as the host would make it: its IMA
//     entries appended to the in-memory list (PCR 10 extended), the quote
//     over the challenge's nonce and PCR selection, the evidence encoded
//     with the IMA entries from the offset the verifier will be at once
//     the host's earlier attestations are in, and the request kept as
//     bytes.
//   - In the window each host sends its requests on the fleet's schedule
//     and reads each verdict, counted as the lean generator counts them
//     (presignedLoop). A refusal or a failing verdict is an error; the
//     verdict's next challenge is not used.
//
// The verifier mints a next challenge in every verdict as always, and
// checks each evidence in full, so it does per verdict what it does
// without presigning; the challenges fetched ahead are extra work outside
// the windows. The load generator's CPU per attestation is then the cost
// of sending bytes and reading verdicts.
//
// Nonce lifetime. The verifier lets a challenge be answered for
// max(30 s, 2 × the host's interval) and fails a host silent for
// LivenessIntervals (3) intervals. A presigned nonce must outlive the
// presigning, the settling and the whole window, and a host is quiet
// while the fleet presigns. So the hosts are admitted with an interval of
// half of presignBudget + settle + window (rounded up to a minute,
// presignAdmitInterval): its nonces then last long enough, and its
// liveness window (1.5 times that) is longer than any quiet spell. The
// verifier's own default interval, which paces its background work (the
// registrar feed), is left as it is. The lean generator attests on its own
// schedule, sooner than the interval asks, which the verifier allows and
// judges the same. After presigning, the time left is checked against
// the lifetime the challenges state: a run whose nonces would expire
// before the window ends stops with an error.

// presignBudget is how long presigning one step may take; the admission
// interval leaves every nonce room for it. maxPresignBytes bounds the
// requests one step holds (2 GiB: at ~4 KB a request, about half a million
// of them, whose RSA signatures take minutes to make on a few cores).
const (
	presignBudget   = 30 * time.Minute
	maxPresignBytes = 2 << 30
)

// presignSettle is how long a presigned step settles before its window:
// its schedule is new, every host's first slot within one pace of its
// start, after a quiet spell.
func presignSettle(pace time.Duration) time.Duration { return max(2*time.Second, 2*pace) }

// presignSlack is the time past settle + window that presigned requests
// cover, for the reads around the window and the hosts that start late.
func presignSlack(span time.Duration) time.Duration { return time.Second + span/50 }

// presignCount is how many requests a host paced at pace presigns for a
// step of settle and window: its slots over both, and the slack's.
func presignCount(pace, settle, window time.Duration) int {
	span := settle + window
	span += presignSlack(span)
	return int((span+pace-1)/pace) + 1
}

// presignAdmitInterval is the interval hosts are admitted with under
// Options.Presign: every nonce fetched before presigning a step must still
// be valid at its window's end, presignBudget later at most (the
// verifier's max(30 s, 2 × interval)), and the host's liveness window,
// three intervals, is longer still. interval is the one the run would
// admit with otherwise, slowest the slowest pace (the longest settle).
func presignAdmitInterval(interval, window, slowest time.Duration) (time.Duration, error) {
	settle := presignSettle(slowest)
	life := presignBudget + settle + window + presignSlack(settle+window)
	admit := max(interval, (life/2+time.Minute-1)/time.Minute*time.Minute)
	if most := verifier.DefaultConfig().MaxInterval; admit > most {
		return 0, fmt.Errorf("the window (%s) is too long for presigning: every presigned nonce must stay valid from before "+
			"presigning (which may take up to %s) to the window's end, %s in all, which needs hosts admitted with an interval of %s "+
			"(the verifier lets a nonce be answered for twice its host's interval), over the verifier's maximum of %s: use a shorter --duration",
			window, presignBudget, life.Round(time.Second), admit, most)
	}
	return admit, nil
}

// presignRequestSize is an upper estimate of one presigned request's size
// with k new IMA entries of table's: request line and headers, nonce,
// quote and signature (RSA-2048: 256 bytes), the PCR values and CBOR's
// framing, within 2 KiB, then the entries.
func presignRequestSize(table *simhost.IMATable, k int) int {
	rec := 0
	for i := range table.Len() {
		rec = max(rec, len(table.Record(i).Bytes))
	}
	return 2048 + k*rec
}

// presignEstimate is the bytes a step at pace would presign.
func presignEstimate(agents, perRequest int, pace, window time.Duration) (requests int, bytes uint64) {
	requests = agents * presignCount(pace, presignSettle(pace), window)
	return requests, uint64(requests) * uint64(perRequest)
}

// hostLoops are the goroutines of one phase of the lean generator's hosts
// (the warm-up's live loops, or one step's presigned ones), stopped
// together between two of their exchanges, never in the middle of one, so
// that what the verifier has accepted is what each host has seen
// accepted.
type hostLoops struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func newHostLoops() *hostLoops { return &hostLoops{stop: make(chan struct{})} }

// halt stops the loops and waits for them.
func (p *hostLoops) halt() {
	if p == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}

// fetchedChallenge is a challenge fetched ahead: its nonce and PCR
// selection, copied out of the response buffer.
type fetchedChallenge struct {
	nonce, sel        []byte
	imaOffset         uint64
	wantIMA, wantBoot bool
}

// presignStats is what presigning one step did.
type presignStats struct {
	requests, bytes uint64
	// fetched is how long fetching the challenges took, took the whole
	// presigning (fetch, sign, connect), cpu this process's CPU over it.
	fetched, took, cpu time.Duration
	// fetchStart is when the first challenge was asked for, and ttl the
	// shortest lifetime the challenges stated: every nonce is valid until
	// fetchStart + ttl at least.
	fetchStart time.Time
	ttl        time.Duration
	// failedHosts counts hosts whose challenges could not all be fetched.
	failedHosts int
}

// presignStep makes every host's requests for a step of n attestations
// each: the challenges fetched (over fetchWorkers connections at once), the
// evidence signed and encoded (over GOMAXPROCS workers), and each host's
// connection opened again for the window. A host whose challenges cannot
// all be fetched has its error counted and sends what it has.
func presignStep(ctx, connCtx context.Context, hosts []*host, f *leanFleet, n, fetchWorkers int, rec *recorder) (presignStats, error) {
	var st presignStats
	self0, err := selfUsage()
	if err != nil {
		return st, err
	}
	st.fetchStart = time.Now()
	chs := make([][]fetchedChallenge, len(hosts))
	var ttl atomic.Int64
	ttl.Store(int64(time.Duration(1 << 62)))
	var failed atomic.Int64
	err = parallel(ctx, len(hosts), fetchWorkers, func(i int) error {
		h := hosts[i]
		var err error
		var life time.Duration
		chs[i], life, err = h.fetchChallenges(ctx, n)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed.Add(1)
			rec.fail(h.id, errorKind("challenge", err), false)
			var refused *agent.RefusedError
			if errors.As(err, &refused) && refused.Status == http.StatusForbidden {
				rec.agentFailed(h.id)
			}
		}
		for {
			cur := ttl.Load()
			if len(chs[i]) == 0 || int64(life) >= cur || ttl.CompareAndSwap(cur, int64(life)) {
				break
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	st.fetched = time.Since(st.fetchStart)
	st.ttl = time.Duration(ttl.Load())
	st.failedHosts = int(failed.Load())
	var reqs, size atomic.Uint64
	err = parallel(ctx, len(hosts), runtime.GOMAXPROCS(0), func(i int) error {
		n, b, err := hosts[i].presign(ctx, f, chs[i])
		chs[i] = nil
		reqs.Add(uint64(n))
		size.Add(uint64(b))
		return err
	})
	if err != nil {
		return st, fmt.Errorf("presign: %w", err)
	}
	st.requests, st.bytes = reqs.Load(), size.Load()
	// New connections, made now rather than in the settling: a
	// connection idle while the fleet presigned may have been closed by
	// the verifier. A host that cannot connect tries again when it sends.
	parallel(ctx, len(hosts), fetchWorkers, func(i int) error {
		c := hosts[i].lean.client
		c.close()
		c.dial(connCtx)
		return nil
	})
	st.took = time.Since(st.fetchStart)
	if self1, err := selfUsage(); err == nil {
		st.cpu = self1.CPU - self0.CPU
	}
	return st, ctx.Err()
}

// checkNonceLife fails when the nonces fetched for a step would expire
// before its window and the slack after it end.
func (st presignStats) checkNonceLife(settle, window time.Duration) error {
	if st.requests == 0 {
		return nil
	}
	span := settle + window
	lastUse := time.Now().Add(span + presignSlack(span))
	if expires := st.fetchStart.Add(st.ttl); lastUse.After(expires) {
		return fmt.Errorf("presigning took %s, so the first nonces fetched before it, which the verifier lets be answered for %s, "+
			"would expire %s before the last presigned request is sent: use a shorter --duration or a lower rate",
			st.took.Round(time.Millisecond), st.ttl, lastUse.Sub(expires).Round(time.Millisecond))
	}
	return nil
}

// fetchChallenges asks the verifier for n challenges in a row, as the
// agent asks for one, and returns them in the order they were issued with
// the shortest lifetime they stated. The connection is closed afterwards:
// it would sit idle while the fleet presigns. On an error, the challenges
// fetched before it are returned with it.
func (h *host) fetchChallenges(ctx context.Context, n int) ([]fetchedChallenge, time.Duration, error) {
	l := h.lean
	defer l.client.close()
	out := make([]fetchedChallenge, 0, n)
	nonces := make([]byte, 0, n*32)
	var sel []byte
	life := time.Duration(1 << 62)
	for range n {
		var ch wire.Challenge
		if err := l.challenge(ctx, h.id, false, &ch); err != nil {
			return out, life, err
		}
		// The nonce and selection share the client's buffer: copied.
		start := len(nonces)
		nonces = append(nonces, ch.Nonce...)
		if sel == nil || string(sel) != string(ch.PCRSelection) {
			sel = append([]byte{}, ch.PCRSelection...)
		}
		out = append(out, fetchedChallenge{nonce: nonces[start:len(nonces):len(nonces)], sel: sel, imaOffset: ch.IMAOffset,
			wantIMA: ch.WantIMA, wantBoot: ch.WantBootLog})
		life = min(life, time.Duration(ch.ExpiresInMS)*time.Millisecond)
	}
	return out, life, nil
}

// presign makes the host's requests answering chs, in order, into one
// buffer (l.pre), and returns how many and their bytes. Each appends the
// attestation's IMA entries to the list (extending PCR 10), quotes over
// its challenge, and carries the list from the offset the verifier will
// be at when it comes: the first challenge's (where the verifier's record
// stands now; entries appended for requests of an earlier step that were
// never sent come in with it), then the end of the list as the request
// before left it. A challenge asking for the list from entry 0 is answered
// from 0.
func (h *host) presign(ctx context.Context, f *leanFleet, chs []fetchedChallenge) (int, int, error) {
	l := h.lean
	l.pre = l.pre[:0]
	arena := l.preArena[:0]
	ends := make([]int, 0, len(chs))
	var off uint64
	for j := range chs {
		c := &chs[j]
		l.setChallenge(challengeView{nonce: c.nonce, pcrSelection: c.sel, imaOffset: c.imaOffset, wantIMA: c.wantIMA, wantBoot: c.wantBoot})
		if j == 0 || c.imaOffset == 0 {
			off = c.imaOffset
		}
		l.ch.imaOffset = off
		if err := h.measureLean(ctx, f); err != nil {
			return 0, 0, fmt.Errorf("%s: measure: %w", h.id, err)
		}
		if err := h.collectLean(ctx, f); err != nil {
			return 0, 0, fmt.Errorf("%s: collect: %w", h.id, err)
		}
		if j == 0 && cap(arena) < len(chs)*len(l.req) {
			arena = slices.Grow(arena, len(chs)*(len(l.req)+64))
		}
		arena = append(arena, l.req...)
		ends = append(ends, len(arena))
		if c.wantIMA {
			off = uint64(h.mem.Len())
		}
	}
	start := 0
	for _, end := range ends {
		l.pre = append(l.pre, arena[start:end:end])
		start = end
	}
	l.preArena = arena
	if r := f.replay; r > 0 && h.index == 0 && r < len(l.pre) {
		// A test's: the request sent once more right after itself, which
		// the verifier must refuse (its nonce is spent).
		l.pre = slices.Insert(l.pre, r+1, l.pre[r])
	}
	return len(ends), len(arena), nil
}

// presignedLoop sends the host's presigned requests on the fleet's
// schedule, in order, one per slot, until they run out or the loop is
// stopped: the lean loop without the signing. Each verdict is read and
// counted as leanLoop counts it; a transport error, a refusal or a
// verdict without a next challenge (a failure) is an error, and the host
// goes on with its next request. A host that runs out of requests inside
// the window counts that as an error too.
func (h *host) presignedLoop(ctx context.Context, f *leanFleet, i int, rec *recorder) {
	l := h.lean
	defer l.client.close()
	cur := f.sched.Load()
	last := cur.start.Add(-1)
	for _, req := range l.pre {
		if ctx.Err() != nil || l.stopped() {
			return
		}
		next, lag, late, awake := l.waitSlot(ctx, cur, i, f.hosts, last)
		if !awake {
			return
		}
		last = next
		start := time.Now()
		rsp, err := l.client.roundTrip(ctx, req)
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
			continue
		}
		if !readVerdict(rsp.body, &l.verdict) {
			var v wire.Verdict
			if err := wire.Unmarshal(rsp.body, &v); err != nil {
				rec.fail(h.id, errorKind("evidence", err), false)
				continue
			}
			l.verdict = verdictView{state: []byte(v.State), reason: []byte(v.Reason), hasNext: v.Next != nil}
		}
		if !l.verdict.hasNext {
			rec.fail(h.id, fmt.Sprintf("verdict: %s (%s)", l.verdict.state, l.verdict.reason), false)
			continue
		}
		rec.verdict(h.id, f.url, took)
	}
	if ctx.Err() == nil && !l.stopped() {
		rec.failInWindow(h.id, "presign: ran out of presigned requests")
	}
}
