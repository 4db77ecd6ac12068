package registrar

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the registrar's Prometheus metrics, on a registry of their own.
type Metrics struct {
	Registry      *prometheus.Registry
	registrations *prometheus.CounterVec
	refused       *prometheus.CounterVec
}

// NewMetrics registers the registrar's metrics, including the number of
// agents by activation state, read from the store at scrape time.
func NewMetrics(st Store) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_registrar_registrations_total",
			Help: "Accepted registrations by AK algorithm and the EK rule that admitted them.",
		}, []string{"ak_alg", "ek_trust"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_registrar_refused_total",
			Help: "Refused registrations and activations by reason.",
		}, []string{"reason"}),
	}
	// Every reason is exported from the start, so that a rate over a
	// reason that has not happened yet is 0 rather than absent.
	for _, r := range Reasons() {
		m.refused.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.registrations, m.refused, agentsCollector{st})
	return m
}

// ObserveRefusal is a Service.OnRefuse hook.
func (m *Metrics) ObserveRefusal(reason string) {
	m.refused.WithLabelValues(reason).Inc()
}

// ObserveRegistration is a Service.OnRegister hook.
func (m *Metrics) ObserveRegistration(akAlg, ekTrust string) {
	m.registrations.WithLabelValues(akAlg, ekTrust).Inc()
}

type agentsCollector struct{ st Store }

var agentsDesc = prometheus.NewDesc("vigil_registrar_agents", "Registered agents by whether their AK is active.", []string{"active"}, nil)

func (c agentsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- agentsDesc }

func (c agentsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := c.st.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(agentsDesc, err)
		return
	}
	var active, inactive float64
	for _, r := range recs {
		if r.Active {
			active++
		} else {
			inactive++
		}
	}
	ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, active, "true")
	ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, inactive, "false")
}
