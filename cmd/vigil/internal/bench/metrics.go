package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Names on a verifier's /metrics that the bench reads. The process_* pair
// is what client_golang's process collector exports; a verifier without it
// has no CPU figure to offer, and the bench then needs the verifier's PID.
const (
	metricCPU       = "process_cpu_seconds_total"
	metricRSS       = "process_resident_memory_bytes"
	metricVerdictTS = "vigil_verifier_verdict_seconds"
)

// maxMetricsBody bounds a /metrics scrape: a verifier's page is a few kB.
const maxMetricsBody = 16 << 20

// verifierMetrics is what one scrape of a verifier's /metrics told.
type verifierMetrics struct {
	CPUSeconds float64
	HasCPU     bool
	RSSBytes   float64
	HasRSS     bool
	// Verdicts is the cumulative histogram of the verifier's own verdict
	// times (evidence received to verdict stored), nil when absent.
	Verdicts []bucket
}

// bucket is one cumulative histogram bucket: Count observations were at
// most LE seconds.
type bucket struct {
	LE    float64
	Count uint64
}

// parseMetrics reads the Prometheus text exposition format.
func parseMetrics(r io.Reader) (verifierMetrics, error) {
	var m verifierMetrics
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return m, err
	}
	if v, ok := single(fams[metricCPU]); ok {
		m.CPUSeconds, m.HasCPU = v, true
	}
	if v, ok := single(fams[metricRSS]); ok {
		m.RSSBytes, m.HasRSS = v, true
	}
	if f := fams[metricVerdictTS]; f != nil && len(f.GetMetric()) == 1 && f.GetMetric()[0].GetHistogram() != nil {
		h := f.GetMetric()[0].GetHistogram()
		for i, b := range h.GetBucket() {
			le := b.GetUpperBound()
			if math.IsNaN(le) {
				return m, fmt.Errorf("%s: bucket %d has no upper bound", metricVerdictTS, i)
			}
			m.Verdicts = append(m.Verdicts, bucket{LE: le, Count: b.GetCumulativeCount()})
		}
		slices.SortStableFunc(m.Verdicts, func(a, b bucket) int { return cmp.Compare(a.LE, b.LE) })
		// Exporters write the +Inf bucket; if one did not, the sample
		// count is its count.
		if len(m.Verdicts) == 0 || !math.IsInf(m.Verdicts[len(m.Verdicts)-1].LE, 1) {
			m.Verdicts = append(m.Verdicts, bucket{LE: math.Inf(1), Count: h.GetSampleCount()})
		}
		for i := 1; i < len(m.Verdicts); i++ {
			if m.Verdicts[i].Count < m.Verdicts[i-1].Count {
				return m, fmt.Errorf("%s: bucket le=%g counts %d, fewer than the %d below it", metricVerdictTS, m.Verdicts[i].LE, m.Verdicts[i].Count, m.Verdicts[i-1].Count)
			}
		}
	}
	return m, nil
}

// single is the value of an unlabelled counter or gauge family.
func single(f *dto.MetricFamily) (float64, bool) {
	if f == nil || len(f.GetMetric()) != 1 {
		return 0, false
	}
	m := f.GetMetric()[0]
	var v float64
	switch {
	case m.GetCounter() != nil:
		v = m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, false
	}
	return v, true
}

// scrapeMetrics fetches and parses baseURL/metrics.
func scrapeMetrics(ctx context.Context, client *http.Client, baseURL string) (verifierMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/metrics", nil)
	if err != nil {
		return verifierMetrics{}, err
	}
	// The plain text format, which every Prometheus client serves.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	rsp, err := client.Do(req)
	if err != nil {
		return verifierMetrics{}, err
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		return verifierMetrics{}, fmt.Errorf("%s/metrics: %s", baseURL, rsp.Status)
	}
	m, err := parseMetrics(io.LimitReader(rsp.Body, maxMetricsBody))
	if err != nil {
		return m, fmt.Errorf("%s/metrics: %w", baseURL, err)
	}
	return m, nil
}

// histogramLatency estimates the distribution of the observations made
// between two scrapes of a cumulative histogram, as Prometheus's
// histogram_quantile does: linear interpolation inside the bucket that holds
// the rank. Max is the upper bound of the highest bucket that gained an
// observation (the highest finite bound when that is +Inf). It also returns
// how many observations there were.
func histogramLatency(before, after []bucket) (Latency, uint64, error) {
	if len(before) != 0 && len(before) != len(after) {
		return Latency{}, 0, fmt.Errorf("histogram changed shape between scrapes: %d buckets, then %d", len(before), len(after))
	}
	delta := make([]bucket, len(after))
	for i, b := range after {
		delta[i] = b
		if len(before) != 0 {
			if before[i].LE != b.LE || before[i].Count > b.Count {
				return Latency{}, 0, fmt.Errorf("histogram bucket %d went from le=%g count %d to le=%g count %d: the verifier restarted?", i, before[i].LE, before[i].Count, b.LE, b.Count)
			}
			delta[i].Count = b.Count - before[i].Count
		}
	}
	if len(delta) == 0 || delta[len(delta)-1].Count == 0 {
		return Latency{}, 0, nil
	}
	total := delta[len(delta)-1].Count
	highestFinite := 0.0
	for _, b := range delta {
		if !math.IsInf(b.LE, 1) {
			highestFinite = b.LE
		}
	}
	quantile := func(q float64) float64 {
		rank := q * float64(total)
		lower, below := 0.0, uint64(0)
		for _, b := range delta {
			if float64(b.Count) >= rank {
				if math.IsInf(b.LE, 1) {
					return highestFinite
				}
				if b.Count == below {
					return b.LE
				}
				return lower + (b.LE-lower)*(rank-float64(below))/float64(b.Count-below)
			}
			lower, below = b.LE, b.Count
		}
		return highestFinite
	}
	top := highestFinite
	for _, b := range delta {
		if b.Count == total {
			if !math.IsInf(b.LE, 1) {
				top = b.LE
			}
			break
		}
	}
	msOf := func(s float64) float64 { return round(s*1000, 3) }
	return Latency{P50: msOf(quantile(0.5)), P90: msOf(quantile(0.9)), P99: msOf(quantile(0.99)), Max: msOf(top)}, total, nil
}
