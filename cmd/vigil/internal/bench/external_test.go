package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/registrar"
)

// verifierPage is a verifier's /metrics as client_golang writes it, cut down.
const verifierPage = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 15
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 2.08
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.5807232e+07
# HELP vigil_verifier_agents Admitted agents by state.
# TYPE vigil_verifier_agents gauge
vigil_verifier_agents{state="attesting"} 3
# HELP vigil_verifier_verdict_seconds Time from evidence received to verdict stored.
# TYPE vigil_verifier_verdict_seconds histogram
vigil_verifier_verdict_seconds_bucket{le="0.0005"} 1288
vigil_verifier_verdict_seconds_bucket{le="0.001"} 1308
vigil_verifier_verdict_seconds_bucket{le="0.002"} 1322
vigil_verifier_verdict_seconds_bucket{le="+Inf"} 1538
vigil_verifier_verdict_seconds_sum 2.5162502000000013
vigil_verifier_verdict_seconds_count 1538
`

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(verifierPage))
	if err != nil {
		t.Fatal(err)
	}
	if !m.HasCPU || m.CPUSeconds != 2.08 || !m.HasRSS || m.RSSBytes != 35807232 {
		t.Errorf("process metrics: %+v", m)
	}
	want := []bucket{{0.0005, 1288}, {0.001, 1308}, {0.002, 1322}, {math.Inf(1), 1538}}
	if fmt.Sprint(m.Verdicts) != fmt.Sprint(want) {
		t.Errorf("verdict histogram %v, want %v", m.Verdicts, want)
	}

	// A verifier without the process collector or the histogram.
	m, err = parseMetrics(strings.NewReader("# TYPE vigil_verifier_agents gauge\nvigil_verifier_agents{state=\"failed\"} 0\n"))
	if err != nil || m.HasCPU || m.HasRSS || m.Verdicts != nil {
		t.Errorf("bare page: %+v, %v", m, err)
	}
	// A histogram without its +Inf bucket gets one from the count.
	m, err = parseMetrics(strings.NewReader("# TYPE vigil_verifier_verdict_seconds histogram\n" +
		"vigil_verifier_verdict_seconds_bucket{le=\"0.001\"} 4\nvigil_verifier_verdict_seconds_count 6\nvigil_verifier_verdict_seconds_sum 1\n"))
	if err != nil || fmt.Sprint(m.Verdicts) != fmt.Sprint([]bucket{{0.001, 4}, {math.Inf(1), 6}}) {
		t.Errorf("histogram without +Inf: %v, %v", m.Verdicts, err)
	}

	for name, page := range map[string]string{
		"not the text format": "process_cpu_seconds_total two\n",
		"buckets decrease": "# TYPE vigil_verifier_verdict_seconds histogram\n" +
			"vigil_verifier_verdict_seconds_bucket{le=\"0.001\"} 5\nvigil_verifier_verdict_seconds_bucket{le=\"0.002\"} 4\n",
	} {
		if m, err := parseMetrics(strings.NewReader(page)); err == nil {
			t.Errorf("%s: accepted: %+v", name, m)
		}
	}
	// A negative or infinite CPU counter is not a CPU figure.
	m, err = parseMetrics(strings.NewReader("process_cpu_seconds_total +Inf\n"))
	if err != nil || m.HasCPU {
		t.Errorf("infinite CPU: %+v, %v", m, err)
	}
}

func TestHistogramLatency(t *testing.T) {
	inf := math.Inf(1)
	before := []bucket{{0.001, 10}, {0.002, 10}, {0.004, 10}, {inf, 10}}
	for _, tc := range []struct {
		name          string
		before, after []bucket
		want          Latency
		n             uint64
		bad           bool
	}{
		{
			name:   "interpolated within buckets",
			before: before, after: []bucket{{0.001, 60}, {0.002, 100}, {0.004, 110}, {inf, 110}},
			// 100 new: 50 ≤ 1 ms, 40 in (1, 2], 10 in (2, 4].
			want: Latency{P50: 1, P90: 2, P99: 3.8, Max: 4}, n: 100,
		},
		{
			name:   "beyond the last finite bound",
			before: before, after: []bucket{{0.001, 60}, {0.002, 100}, {0.004, 110}, {inf, 120}},
			// 110 new: 50 ≤ 1 ms, 40 in (1, 2], 10 in (2, 4], 10 above.
			want: Latency{P50: 1.125, P90: 3.8, P99: 4, Max: 4}, n: 110,
		},
		{
			name:  "no earlier scrape",
			after: []bucket{{0.001, 4}, {0.002, 4}, {0.004, 4}, {inf, 4}},
			want:  Latency{P50: 0.5, P90: 0.9, P99: 0.99, Max: 1}, n: 4,
		},
		{name: "nothing new", before: before, after: before},
		{name: "no histogram"},
		{name: "shape changed", before: before, after: before[:3], bad: true},
		{name: "counts went back", before: before, after: []bucket{{0.001, 9}, {0.002, 10}, {0.004, 10}, {inf, 10}}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := histogramLatency(tc.before, tc.after)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil || got != tc.want || n != tc.n {
				t.Fatalf("got %+v (%d), %v; want %+v (%d)", got, n, err, tc.want, tc.n)
			}
		})
	}
}

// TestMetricsMeter reads CPU and peak RSS from a /metrics that moves.
func TestMetricsMeter(t *testing.T) {
	var scrape atomic.Int64
	rss := []float64{30e6, 90e6, 40e6}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := scrape.Add(1) - 1
		fmt.Fprintf(w, "process_cpu_seconds_total %g\nprocess_resident_memory_bytes %g\n", 1.5+float64(n), rss[min(int(n), len(rss)-1)])
	}))
	defer srv.Close()
	m := metricsMeter(srv.Client(), srv.URL, true)
	ctx := context.Background()
	u0, err := m.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.sample(ctx) // the 90 MB peak, between the two ends
	u1, err := m.read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := u1.CPU - u0.CPU; d != 2*time.Second {
		t.Errorf("CPU over the window %v, want 2s", d)
	}
	if u1.PeakRSS != 90e6 {
		t.Errorf("peak RSS %d, want the sampled 90e6", u1.PeakRSS)
	}
	if !strings.Contains(m.cpuSource, metricCPU) || !strings.Contains(m.rssSource, "sampled") {
		t.Errorf("sources %q, %q", m.cpuSource, m.rssSource)
	}

	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "up 1") }))
	defer bare.Close()
	if _, err := metricsMeter(bare.Client(), bare.URL, false).read(ctx); err == nil {
		t.Error("a /metrics without process_cpu_seconds_total gave a CPU figure")
	}
}

func TestParseListenInodes(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:49CB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 446040 2 00000000f06a2596 100 0 0 10 0
   1: 0100007F:49CA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 446033 2 0000000097a40ddb 100 0 0 10 0
   2: 0100007F:49CB 0100007F:9A66 06 00000000:00000000 03:00000C92 00000000     0        0 0 3 00000000c4bd00e7
   3: 0100007F:9A66 0100007F:49CB 01 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 20 4 30 10 -1
`
	got, err := parseListenInodes([]byte(table), 0x49CB)
	if err != nil || len(got) != 1 || got[0] != 446040 {
		t.Errorf("port 0x49CB: %v, %v; want the listening socket 446040 only", got, err)
	}
	if got, err := parseListenInodes([]byte(table), 8080); err != nil || len(got) != 0 {
		t.Errorf("port 8080: %v, %v", got, err)
	}
	for _, bad := range []string{
		"header\n 0: 0100007F:49CB 00000000:0000 0A\n",
		"header\n 0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 7\n",
		"header\n 0: 0100007F:zz 00000000:0000 0A 0:0 0:0 0 0 0 7\n",
		"header\n 0: 0100007F:49CB 00000000:0000 0A 0:0 0:0 0 0 0 x\n",
	} {
		if got, err := parseListenInodes([]byte(bad), 0x49CB); err == nil {
			t.Errorf("%q: accepted, got %v", bad, got)
		}
	}
}

// TestFindListener finds this test process by a port it listens on.
func TestFindListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	pid, err := findListener(port)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("port %d: found process %d, want this one (%d)", port, pid, os.Getpid())
	}
	ln.Close()
	if pid, err := findListener(port); err == nil {
		t.Errorf("closed port %d: found process %d", port, pid)
	}
}

func TestIsThisMachine(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "192.0.2.1": false} {
		if got := isThisMachine(host); got != want {
			t.Errorf("%s: %v, want %v", host, got, want)
		}
	}
}

// TestEKCA: the manufacturer a registrar is given as --ek-roots is the one
// the bench issues EK certificates from, and the registrar never reads its
// key.
func TestEKCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ek-ca")
	if err := InitEKCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := InitEKCA(dir); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second InitEKCA: %v", err)
	}
	m, err := LoadEKCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := registrar.LoadEKRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the manufacturer is not among the registrar's EK roots: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, EKCAKey)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v", st, err)
	}
	if _, err := LoadEKCA(t.TempDir()); err == nil || !strings.Contains(err.Error(), "vigil bench ek-ca") {
		t.Errorf("empty directory: %v", err)
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte(verifierPage))
	f.Add([]byte("process_cpu_seconds_total -1\n"))
	f.Add([]byte("# TYPE vigil_verifier_verdict_seconds histogram\nvigil_verifier_verdict_seconds_bucket{le=\"NaN\"} 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMetrics(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		if m.HasCPU && (m.CPUSeconds < 0 || math.IsInf(m.CPUSeconds, 0) || math.IsNaN(m.CPUSeconds)) {
			t.Fatalf("CPU %v accepted", m.CPUSeconds)
		}
		if _, _, err := histogramLatency(nil, m.Verdicts); err != nil {
			t.Fatalf("a parsed histogram is not usable: %v", err)
		}
	})
}

func FuzzParseListenInodes(f *testing.F) {
	f.Add([]byte("h\n 0: 0100007F:49CB 00000000:0000 0A 0:0 0:0 0 0 0 446040 2\n"), 0x49CB)
	f.Add([]byte("h\n 0: :::\n"), 0)
	f.Fuzz(func(t *testing.T, b []byte, port int) {
		inodes, err := parseListenInodes(b, port)
		if err == nil {
			for _, in := range inodes {
				if in == 0 {
					t.Fatal("inode 0 returned")
				}
			}
		}
	})
}
