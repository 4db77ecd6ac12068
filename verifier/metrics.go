package verifier

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the verifier's Prometheus metrics, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry
	verdicts *prometheus.CounterVec
	passes   prometheus.Counter // verdicts{result="pass"}, resolved once: it is counted on every verdict
	latency  prometheus.Histogram
	evidence prometheus.Histogram
	refused  *prometheus.CounterVec
	leases   *prometheus.CounterVec

	checkpoints       *prometheus.CounterVec
	checkpointRecords prometheus.Counter
	checkpointTime    prometheus.Histogram
}

// StateCounter counts agents by state at scrape time.
type StateCounter interface {
	CountStates(ctx context.Context) (map[State]int, error)
}

// NewMetrics registers the verifier's metrics, including the number of
// agents by state, counted at scrape time.
func NewMetrics(agents StateCounter) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_verifier_verdicts_total",
			Help: "Verdicts by result (pass, fail) and failure reason.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_verifier_verdict_seconds",
			Help:    "Time from evidence received to verdict stored.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		evidence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_verifier_evidence_bytes",
			Help:    "Size of evidence bodies.",
			Buckets: prometheus.ExponentialBuckets(512, 4, 10),
		}),
	}
	m.passes = m.verdicts.WithLabelValues("pass", "")
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_verifier_refused_total",
		Help: "Agent requests refused without changing anything (unknown agent, forged or stale nonce, unsigned quote, body too large, ...), by reason.",
	}, []string{"reason"})
	m.checkpoints = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_verifier_checkpoints_total",
		Help: "Checkpoints of attesting agents' progress, by result (ok, error).",
	}, []string{"result"})
	m.checkpointRecords = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vigil_verifier_checkpoint_records_total",
		Help: "Agent records written by checkpoints.",
	})
	m.checkpointTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "vigil_verifier_checkpoint_seconds",
		Help:    "Time to write one checkpoint.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	// The process collector gives the verifier's own CPU seconds and
	// resident memory, which is what sizing a deployment (and vigil bench
	// against an external verifier) needs.
	m.leases = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_verifier_lease_moves_total",
		Help: "Agents this replica took over (gained) or let go (lost) between verifier replicas sharing a store.",
	}, []string{"direction"})
	m.Registry.MustRegister(m.verdicts, m.latency, m.evidence, m.refused, m.leases, agentsByState{agents},
		m.checkpoints, m.checkpointRecords, m.checkpointTime,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// ObserveVerdict is a Service.OnVerdict hook.
func (m *Metrics) ObserveVerdict(a Agent, f *Failure, took time.Duration) {
	if f == nil {
		m.passes.Inc()
	} else {
		m.verdicts.WithLabelValues("fail", string(f.Reason)).Inc()
	}
	if took > 0 {
		m.latency.Observe(took.Seconds())
	}
}

// ObserveLeaseMoves is a Service.OnLeaseMoves hook.
func (m *Metrics) ObserveLeaseMoves(gained, lost int) {
	m.leases.WithLabelValues("gained").Add(float64(gained))
	m.leases.WithLabelValues("lost").Add(float64(lost))
}

// ObserveRefused is a Service.OnRefused hook.
func (m *Metrics) ObserveRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ObserveCheckpoint is a Service.OnCheckpoint hook.
func (m *Metrics) ObserveCheckpoint(records int, took time.Duration, err error) {
	if err != nil {
		m.checkpoints.WithLabelValues("error").Inc()
		return
	}
	m.checkpoints.WithLabelValues("ok").Inc()
	m.checkpointRecords.Add(float64(records))
	m.checkpointTime.Observe(took.Seconds())
}

// ObserveEvidenceBytes is a HandlerOptions.OnEvidenceBytes hook.
func (m *Metrics) ObserveEvidenceBytes(n int) { m.evidence.Observe(float64(n)) }

// agentsByState counts agents by state when scraped.
type agentsByState struct{ agents StateCounter }

var agentsDesc = prometheus.NewDesc("vigil_verifier_agents", "Admitted agents by state.", []string{"state"}, nil)

func (c agentsByState) Describe(ch chan<- *prometheus.Desc) { ch <- agentsDesc }

func (c agentsByState) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.agents.CountStates(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(agentsDesc, err)
		return
	}
	for _, s := range []State{StatePending, StateAttesting, StateFailed} {
		ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
}
