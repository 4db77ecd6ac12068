package bench

import (
	"context"
	"errors"
	"maps"
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

	// failingOver is set once a replica was killed: from then on a host's
	// errors are pending until its next good verdict, which makes them
	// failoverErrors; those of a host that never recovers are errors.
	failingOver    bool
	closed         bool
	pending        map[string]map[string]uint64
	failoverErrors map[string]uint64
	// lastGood is each host's last good verdict; longestGap the longest
	// time between two of one host's good verdicts in the window.
	lastGood       map[string]time.Time
	longestGap     time.Duration
	longestGapHost string
	// byURL counts the window's verdicts by the verifier URL that gave them.
	byURL map[string]uint64

	// The window's evidence requests (attempts), those that started after
	// their slot had passed (late), the lean generator's lag waking up for
	// the others (lags), and the errors counted in it (winErrors).
	attempts  uint64
	late      uint64
	lags      []time.Duration
	winErrors map[string]uint64
}

func newRecorder() *recorder {
	return &recorder{errors: map[string]uint64{}, good: map[string]bool{}, failed: map[string]bool{},
		pending: map[string]map[string]uint64{}, failoverErrors: map[string]uint64{},
		lastGood: map[string]time.Time{}, byURL: map[string]uint64{}, winErrors: map[string]uint64{}}
}

// attempt records an evidence request of the lean generator's: late when
// it started after its slot had passed, else lag after its slot.
func (r *recorder) attempt(lag time.Duration, late bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.measuring {
		return
	}
	r.attempts++
	if late {
		r.late++
	} else {
		r.lags = append(r.lags, lag)
	}
}

// startWindow opens a measurement window: what is counted per window
// starts from zero.
func (r *recorder) startWindow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measuring = true
	r.verdicts, r.attempts, r.late = 0, 0, 0
	r.latencies, r.lags = nil, nil
	r.byURL = map[string]uint64{}
	r.winErrors = map[string]uint64{}
}

// windowStats is what the window now closed counted.
type windowStats struct {
	verdicts, attempts, late uint64
	latency                  Latency
	lagP99                   float64
	errors                   map[string]uint64
}

func (r *recorder) window() windowStats {
	r.mu.Lock()
	w := windowStats{verdicts: r.verdicts, attempts: r.attempts, late: r.late, errors: maps.Clone(r.winErrors)}
	l, lags := slices.Clone(r.latencies), slices.Clone(r.lags)
	r.mu.Unlock()
	w.latency = percentiles(l)
	w.lagP99 = percentiles(lags).P99
	return w
}

// verdict records a good verdict of agentID, which took took, from the
// verifier at url.
func (r *recorder) verdict(agentID, url string, took time.Duration) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	r.good[agentID] = true
	for k, n := range r.pending[agentID] {
		r.failoverErrors[k] += n
	}
	delete(r.pending, agentID)
	if r.measuring {
		r.verdicts++
		r.latencies = append(r.latencies, took)
		r.byURL[url]++
		if last, ok := r.lastGood[agentID]; ok {
			r.gap(agentID, now.Sub(last))
		}
	}
	r.lastGood[agentID] = now
}

func (r *recorder) gap(agentID string, d time.Duration) {
	if d > r.longestGap {
		r.longestGap, r.longestGapHost = d, agentID
	}
}

// fail records an error of agentID's. A transient one (with replicas: a
// verifier that cannot be reached or cannot serve the host now, such as a
// 503 unassigned for a host just admitted) and any after a replica was
// killed wait for the host's next good verdict to count as a failover
// error.
func (r *recorder) fail(agentID, kind string, transient bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if (r.failingOver || transient) && !r.closed {
		if r.pending[agentID] == nil {
			r.pending[agentID] = map[string]uint64{}
		}
		r.pending[agentID][kind]++
		return
	}
	r.errors[kind]++
	if r.measuring {
		r.winErrors[kind]++
	}
}

// failInWindow records an error of agentID's if the window is open, and
// nothing otherwise.
func (r *recorder) failInWindow(agentID, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.measuring {
		r.errors[kind]++
		r.winErrors[kind]++
	}
}

// startFailover notes that a replica was killed: errors from now on are
// the failover's if the host recovers.
func (r *recorder) startFailover() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failingOver = true
}

// closeWindow ends the window at end: a host's time since its last good
// verdict counts as a gap too (a host that never recovered has the longest),
// and errors of hosts that did not recover are errors.
func (r *recorder) closeWindow(end time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, last := range r.lastGood {
		r.gap(id, end.Sub(last))
	}
	for _, kinds := range r.pending {
		for k, n := range kinds {
			r.errors[k] += n
		}
	}
	r.pending = map[string]map[string]uint64{}
	r.failingOver = false
	r.closed = true
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
	// failoverErrors counts errors seen since a replica was killed, of
	// hosts recovered or not yet.
	failoverErrors uint64
	byURL          map[string]uint64
	goodAgents     int
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
	for _, kinds := range r.pending {
		for _, n := range kinds {
			s.failoverErrors += n
		}
	}
	for _, n := range r.failoverErrors {
		s.failoverErrors += n
	}
	s.byURL = maps.Clone(r.byURL)
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
