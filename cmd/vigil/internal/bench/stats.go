package bench

import (
	"context"
	"errors"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/vigil-attest/vigil/agent"
)

// recorder collects verdicts and errors from every simulated agent. Only
// what happens inside the measurement window counts towards the summary;
// errors count whenever they happen, because an error during warm-up is
// still an error.
type recorder struct {
	mu        sync.Mutex
	measuring bool
	latencies []time.Duration
	verdicts  uint64 // good verdicts in the window
	total     uint64 // good verdicts since start
	errors    map[string]uint64
	good      map[string]bool // agents with at least one good verdict
	// failed holds agents the verifier refused a challenge to (403): they
	// failed and wait for an operator, so warm-up waits no longer for them.
	failed map[string]bool
}

func newRecorder() *recorder {
	return &recorder{errors: map[string]uint64{}, good: map[string]bool{}, failed: map[string]bool{}}
}

func (r *recorder) verdict(agentID string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	r.good[agentID] = true
	if r.measuring {
		r.verdicts++
		r.latencies = append(r.latencies, took)
	}
}

func (r *recorder) fail(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[kind]++
}

// agentFailed notes that the verifier holds agentID as failed.
func (r *recorder) agentFailed(agentID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[agentID] = true
}

// setMeasuring opens or closes the measurement window.
func (r *recorder) setMeasuring(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measuring = on
}

type snapshot struct {
	verdicts, total, errors uint64
	goodAgents              int
	// settled counts agents with a good verdict or held as failed.
	settled int
}

func (r *recorder) snapshot() snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := snapshot{verdicts: r.verdicts, total: r.total, goodAgents: len(r.good), settled: len(r.good)}
	for id := range r.failed {
		if !r.good[id] {
			s.settled++
		}
	}
	for _, n := range r.errors {
		s.errors += n
	}
	return s
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (r *recorder) latency() Latency {
	r.mu.Lock()
	l := slices.Clone(r.latencies)
	r.mu.Unlock()
	return percentiles(l)
}

// percentiles uses the nearest-rank method: the p-th percentile is a
// latency some verdict actually had.
func percentiles(l []time.Duration) Latency {
	if len(l) == 0 {
		return Latency{}
	}
	slices.Sort(l)
	rank := func(p float64) float64 {
		i := int(p*float64(len(l))+0.999999) - 1
		i = min(max(i, 0), len(l)-1)
		return ms(l[i])
	}
	return Latency{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: ms(l[len(l)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// errorKind names an error for the summary's "errors by kind": few,
// stable names an operator can act on, not one per message.
func errorKind(step string, err error) string {
	var refused *agent.RefusedError
	var netErr net.Error
	var urlErr *url.Error
	switch {
	case errors.As(err, &refused):
		return step + ": refused " + httpStatus(refused.Status)
	case errors.Is(err, context.DeadlineExceeded):
		return step + ": timeout"
	case errors.As(err, &netErr) && netErr.Timeout():
		return step + ": timeout"
	case errors.As(err, &urlErr):
		return step + ": transport"
	default:
		return step + ": other"
	}
}

func httpStatus(code int) string {
	b := []byte("000")
	for i := 2; i >= 0 && code > 0; i-- {
		b[i] = byte('0' + code%10)
		code /= 10
	}
	return string(b)
}
