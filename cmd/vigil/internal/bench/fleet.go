package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// host is one simulated machine: a soft TPM, its measurement list, and the
// agent's own evidence collection on top of them.
type host struct {
	index int
	id    string
	tpm   *soft.TPM
	dir   string
	// ima is the list file of a host attesting with the agent's own code;
	// mem the in-memory list of one attesting with the lean generator.
	ima simhost.IMALog
	mem *simhost.MemIMALog
	att *agent.Attester
	// ak is the AK the enrollment activated (for the lean generator), and
	// lean that generator's state.
	ak    soft.AKBlob
	akSet bool
	lean  *leanHost
	// http is this host's own client: every host keeps one keep-alive
	// connection to the verifier, as a fleet of separate machines does.
	http *http.Client
	// next is where in the pool of measured files this host goes on.
	next int
	// redirected is the scheme and host the last request was redirected
	// to, set by http's CheckRedirect (which runs in the caller's
	// goroutine, the host's loop).
	redirected string
}

// open is the agent's TPM opener; the AK the enrollment activates is
// noted for the lean generator.
func (h *host) open(context.Context) (agent.TPM, error) {
	return capture{TPM: agent.NewSoftTPM(h.tpm), h: h}, nil
}

// newHost manufactures a soft TPM, boots it with the fleet's boot log and
// starts its measurement list with boot_aggregate: a file, or with table
// (the lean generator) a list in memory logging the table's records. Its
// agent ID is idPrefix and its index.
func newHost(ctx context.Context, dir, idPrefix string, index int, mfr *soft.Manufacturer, keys *soft.KeyCache, boot *simhost.BootLog, table *simhost.IMATable) (*host, error) {
	t, err := soft.New(soft.Options{Manufacturer: mfr, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, Keys: keys, Host: index})
	if err != nil {
		return nil, err
	}
	h := &host{index: index, id: fmt.Sprintf("%s%05d", idPrefix, index), tpm: t, next: index}
	h.dir = filepath.Join(dir, "hosts", h.id)
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, err
	}
	conn := agent.NewSoftTPM(t)
	defer conn.Close()
	if _, err := boot.Boot(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: boot: %w", h.id, err)
	}
	if table != nil {
		if h.mem, err = simhost.NewMemIMALog(table, table.Format()); err != nil {
			return nil, err
		}
		if _, err := h.mem.Init(ctx, conn); err != nil {
			return nil, fmt.Errorf("%s: IMA list: %w", h.id, err)
		}
		return h, nil
	}
	h.ima = simhost.IMALog{Path: filepath.Join(h.dir, "binary_runtime_measurements")}
	if _, err := h.ima.Init(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: IMA list: %w", h.id, err)
	}
	return h, nil
}

// measure appends k entries from the pool to the host's list, extending
// PCR 10, as the kernel does when programs run.
func (h *host) measure(ctx context.Context, pool []simhost.IMAEntry, k int) error {
	if k == 0 {
		return nil
	}
	es := make([]simhost.IMAEntry, k)
	for i := range es {
		es[i] = pool[h.next%len(pool)]
		h.next++
	}
	conn := agent.NewSoftTPM(h.tpm)
	defer conn.Close()
	return h.ima.Append(ctx, conn, es...)
}

// attestLoop is the agent's push loop (agent.Attester.Run) with two
// additions the bench needs: k new IMA entries before each quote, and the
// verdict's round-trip time. Evidence is collected by the agent's own code
// (Attester.Collect) and sent over the host's keep-alive connection. With
// several verifier URLs (replicas) it fails over as the agent does: after a
// verifier cannot be reached (or answers 503) the next is tried at once,
// until every one has failed in a row; and a redirect to the replica that
// holds the host makes that one the verifier in use.
func (h *host) attestLoop(ctx context.Context, urls []string, pool []simhost.IMAEntry, k int, phase time.Duration, rec *recorder) {
	if !sleep(ctx, phase) {
		return
	}
	urls = slices.Clone(urls)
	cur, hops := 0, 0
	var next *wire.Challenge
	started := true
	// Errors back off as the agent's do: doubling from half a second up to
	// a minute, or as long as the verifier's Retry-After says (a failed
	// host is told its interval), so that a failover is timed as a real
	// agent would live it.
	wait := firstBackoff
	backoff := func(err error) {
		if len(urls) > 1 && unavailable(err) {
			cur = (cur + 1) % len(urls)
			hops++
			if hops < len(urls) {
				sleep(ctx, failoverPause)
				return
			}
		}
		hops = 0
		d := wait
		var ref *agent.RefusedError
		if errors.As(err, &ref) && ref.RetryAfter > 0 {
			d = min(ref.RetryAfter, time.Minute)
		}
		sleep(ctx, d)
		wait = min(2*wait, time.Minute)
	}
	// follow makes the replica a request was redirected to the one in use.
	follow := func() {
		served := h.redirected
		h.redirected = ""
		if served == "" {
			return
		}
		if i := slices.Index(urls, served); i >= 0 {
			cur = i
			return
		}
		urls = append(urls, served)
		cur = len(urls) - 1
	}
	for ctx.Err() == nil {
		if next == nil {
			var ch wire.Challenge
			err := agent.PostCBOR(ctx, h.http, urls[cur]+wire.PathChallenge, wire.ChallengeRequest{AgentID: h.id, Started: started}, &ch)
			follow()
			if err != nil {
				if ctx.Err() == nil {
					rec.fail(h.id, errorKind("challenge", err), len(urls) > 1 && unavailable(err))
				}
				var refused *agent.RefusedError
				if errors.As(err, &refused) && refused.Status == http.StatusForbidden {
					rec.agentFailed(h.id)
				}
				backoff(err)
				continue
			}
			next = &ch
		}
		if err := h.measure(ctx, pool, k); err != nil {
			if ctx.Err() == nil {
				rec.fail(h.id, errorKind("measure", err), false)
			}
			return
		}
		ev, err := h.att.Collect(ctx, *next)
		next = nil
		if err != nil {
			if ctx.Err() == nil {
				rec.fail(h.id, errorKind("collect", err), false)
			}
			backoff(nil)
			continue
		}
		start := time.Now()
		v, err := agent.PostEvidence(ctx, h.http, urls[cur], ev)
		took := time.Since(start)
		follow()
		if err != nil {
			if ctx.Err() == nil {
				rec.fail(h.id, errorKind("evidence", err), len(urls) > 1 && unavailable(err))
			}
			backoff(err)
			continue
		}
		if v.Next == nil {
			rec.fail(h.id, fmt.Sprintf("verdict: %s (%s)", v.State, v.Reason), false)
			backoff(nil)
			continue
		}
		started, wait, hops = false, firstBackoff, 0
		rec.verdict(h.id, urls[cur], took)
		next = v.Next
		sleep(ctx, time.Duration(next.IntervalMS)*time.Millisecond)
	}
}

// firstBackoff is the agent's first backoff step after an error.
const firstBackoff = 500 * time.Millisecond

// failoverPause is the wait before trying the next verifier, as the agent's.
const failoverPause = 100 * time.Millisecond

// unavailable reports whether err says the verifier cannot be reached or
// cannot serve now, as the agent judges it: a refusal of the request itself
// is not the verifier's fault, and another replica would refuse it too.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ref *agent.RefusedError
	return !errors.As(err, &ref) || ref.Status == http.StatusServiceUnavailable
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// agentClient is one host's HTTP client: its own transport, so its own
// keep-alive TLS connection to the verifier.
// It notes where a request was redirected to in h.redirected.
func agentClient(cfg *tls.Config, h *host) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg.Clone(), MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute},
		Timeout:   30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			h.redirected = req.URL.Scheme + "://" + req.URL.Host
			return nil
		},
	}
}

// parallel runs f(0..n-1) on workers goroutines and returns the first
// error; it stops handing out work after an error or when ctx ends.
func parallel(ctx context.Context, n, workers int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if first != nil || next >= n || ctx.Err() != nil {
					if first == nil && ctx.Err() != nil {
						first = ctx.Err()
					}
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
