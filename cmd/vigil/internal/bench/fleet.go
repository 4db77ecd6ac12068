package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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
	ima   simhost.IMALog
	att   *agent.Attester
	// http is this host's own client: every host keeps one keep-alive
	// connection to the verifier, as a fleet of separate machines does.
	http *http.Client
	// next is where in the pool of measured files this host goes on.
	next int
}

func (h *host) open(context.Context) (agent.TPM, error) { return agent.NewSoftTPM(h.tpm), nil }

// newHost manufactures a soft TPM, boots it with the fleet's boot log and
// starts its measurement list with boot_aggregate. Its agent ID is
// idPrefix and its index.
func newHost(ctx context.Context, dir, idPrefix string, index int, mfr *soft.Manufacturer, keys *soft.KeyCache, boot *simhost.BootLog) (*host, error) {
	t, err := soft.New(soft.Options{Manufacturer: mfr, EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, Keys: keys, Host: index})
	if err != nil {
		return nil, err
	}
	h := &host{index: index, id: fmt.Sprintf("%s%05d", idPrefix, index), tpm: t, next: index}
	h.dir = filepath.Join(dir, "hosts", h.id)
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, err
	}
	h.ima = simhost.IMALog{Path: filepath.Join(h.dir, "binary_runtime_measurements")}
	conn := agent.NewSoftTPM(t)
	defer conn.Close()
	if _, err := boot.Boot(ctx, conn); err != nil {
		return nil, fmt.Errorf("%s: boot: %w", h.id, err)
	}
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
// (Attester.Collect) and sent over the host's keep-alive connection.
func (h *host) attestLoop(ctx context.Context, verifierURL string, pool []simhost.IMAEntry, k int, phase, retry time.Duration, rec *recorder) {
	if !sleep(ctx, phase) {
		return
	}
	var next *wire.Challenge
	started := true
	// Errors back off as the agent's do (doubling up to a minute), so a
	// host the verifier failed does not keep loading it at every interval.
	wait := retry
	backoff := func() {
		sleep(ctx, wait)
		wait = min(2*wait, time.Minute)
	}
	for ctx.Err() == nil {
		if next == nil {
			var ch wire.Challenge
			if err := agent.PostCBOR(ctx, h.http, verifierURL+wire.PathChallenge, wire.ChallengeRequest{AgentID: h.id, Started: started}, &ch); err != nil {
				if ctx.Err() == nil {
					rec.fail(errorKind("challenge", err))
				}
				var refused *agent.RefusedError
				if errors.As(err, &refused) && refused.Status == http.StatusForbidden {
					rec.agentFailed(h.id)
				}
				backoff()
				continue
			}
			next = &ch
		}
		if err := h.measure(ctx, pool, k); err != nil {
			if ctx.Err() == nil {
				rec.fail(errorKind("measure", err))
			}
			return
		}
		ev, err := h.att.Collect(ctx, *next)
		next = nil
		if err != nil {
			if ctx.Err() == nil {
				rec.fail(errorKind("collect", err))
			}
			backoff()
			continue
		}
		start := time.Now()
		v, err := agent.PostEvidence(ctx, h.http, verifierURL, ev)
		took := time.Since(start)
		if err != nil {
			if ctx.Err() == nil {
				rec.fail(errorKind("evidence", err))
			}
			backoff()
			continue
		}
		if v.Next == nil {
			rec.fail(fmt.Sprintf("verdict: %s (%s)", v.State, v.Reason))
			backoff()
			continue
		}
		started, wait = false, retry
		rec.verdict(h.id, took)
		next = v.Next
		sleep(ctx, time.Duration(next.IntervalMS)*time.Millisecond)
	}
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
func agentClient(cfg *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg.Clone(), MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute},
		Timeout:   30 * time.Second,
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
