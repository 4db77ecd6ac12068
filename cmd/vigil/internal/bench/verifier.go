package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
	"github.com/vigil-attest/vigil/verifier/pgstore"
)

// VerifierConfig is what the bench's verifier is built from, in this process
// or in a child.
type VerifierConfig struct {
	DataDir string
	// Store, when set, is a PostgreSQL URL the verifier keeps its state in
	// instead of an embedded store in DataDir.
	Store        string
	TLSDir       string
	RegistrarURL string
	// Interval is the default attestation interval.
	Interval time.Duration
	// Listen is the address the verifier serves on; empty means a free
	// loopback port. A replica's address is chosen in advance, so that it
	// can advertise it.
	Listen string
	// ReplicaURL and ReplicaID, when set, run the verifier as one replica
	// of several over the shared Store (verifier.Config.ReplicaURL and
	// ReplicaID, as `vigil verifier --advertise --replica-id` sets them).
	ReplicaURL string
	ReplicaID  string
	Log        *slog.Logger
}

// Endpoints is what a started verifier tells the bench: where it serves
// agents and admin calls, and where its pprof handlers are (plain HTTP on
// loopback, only in a child process).
type Endpoints struct {
	URL   string `json:"url"`
	PProf string `json:"pprof,omitempty"`
}

// ServeVerifier runs a verifier, built as `vigil verifier` builds it, on
// 127.0.0.1 with TLS until ctx ends. It calls ready once both listeners are
// up. With withPProf, it also serves net/http/pprof on a loopback port, so
// the bench can profile the verifier alone.
func ServeVerifier(ctx context.Context, cfg VerifierConfig, withPProf bool, ready func(Endpoints, *serverTimes)) error {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srvCfg, err := tlsutil.ServerConfig(cfg.TLSDir)
	if err != nil {
		return err
	}
	adminCfg, err := tlsutil.AdminClientConfig(cfg.TLSDir)
	if err != nil {
		return err
	}
	server := newServerTimes()
	vcfg := verifier.DefaultConfig()
	vcfg.DataDir, vcfg.Log = cfg.DataDir, log
	if cfg.Store != "" {
		st, err := pgstore.Open(ctx, cfg.Store)
		if err != nil {
			return err
		}
		defer st.Close()
		vcfg.Store = st
	}
	vcfg.RegistrarURL, vcfg.RegistrarTLS = cfg.RegistrarURL, adminCfg
	// The bench sweeps intervals below what operators may admit.
	vcfg.Interval, vcfg.MinInterval = cfg.Interval, min(time.Second, cfg.Interval)
	vcfg.OnVerdict = func(_ verifier.Agent, _ *verifier.Failure, took time.Duration) { server.observe(took) }
	if cfg.ReplicaURL != "" {
		if cfg.Store == "" {
			return errors.New("a verifier replica needs a shared store")
		}
		vcfg.ReplicaURL, vcfg.ReplicaID = cfg.ReplicaURL, cfg.ReplicaID
	}
	ver, err := verifier.New(ctx, vcfg)
	if err != nil {
		return err
	}
	defer ver.Close()
	h := ver.Handler()
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := httpapi.NewServer(h, srvCfg, log)
	ep := Endpoints{URL: "https://" + ln.Addr().String()}
	var servers []*http.Server
	errc := make(chan error, 2)
	servers = append(servers, srv)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	if withPProf {
		pln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			ln.Close()
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("POST /bench/server-times", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("raw") {
				json.NewEncoder(w).Encode(server.takeRaw())
				return
			}
			json.NewEncoder(w).Encode(server.take())
		})
		psrv := httpapi.NewServer(mux, nil, log)
		servers = append(servers, psrv)
		ep.PProf = "http://" + pln.Addr().String()
		go func() { errc <- psrv.Serve(pln) }()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- ver.Run(runCtx) }()
	ready(ep, server)
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	shut, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShut()
	for _, s := range servers {
		s.Shutdown(shut)
	}
	cancel()
	if rerr := <-ran; rerr != nil && err == nil {
		err = rerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// verifierHandle is the bench's view of the verifier under test.
type verifierHandle struct {
	Endpoints
	// pid is the child's process ID, 0 when the verifier runs in this
	// process.
	pid  int
	stop func()
	// kill sends a child SIGKILL and waits for it to be gone.
	kill func()
	// stderr keeps the child's last output for error reports.
	stderr *tailBuffer
	// server is the in-process verifier's own verdict times.
	server *serverTimes
}

// serverTimes takes the verifier's own verdict times (evidence received to
// verdict stored) since the last call: from the in-process verifier, or from
// the child over its loopback debug port.
func (v *verifierHandle) serverTimes(ctx context.Context) (Latency, error) {
	if v.server != nil {
		return v.server.take(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.PProf+"/bench/server-times", nil)
	if err != nil {
		return Latency{}, err
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Latency{}, err
	}
	defer rsp.Body.Close()
	var l Latency
	if rsp.StatusCode != http.StatusOK {
		return l, fmt.Errorf("verifier server times: %s", rsp.Status)
	}
	return l, json.NewDecoder(io.LimitReader(rsp.Body, 1<<20)).Decode(&l)
}

// serverTimes collects the verifier's own verdict times.
type serverTimes struct {
	mu sync.Mutex
	l  []time.Duration
}

func newServerTimes() *serverTimes { return &serverTimes{} }

func (s *serverTimes) observe(d time.Duration) {
	s.mu.Lock()
	s.l = append(s.l, d)
	s.mu.Unlock()
}

// take returns the distribution so far and starts afresh.
func (s *serverTimes) take() Latency { return percentiles(s.takeRaw()) }

// takeRaw returns the times so far and starts afresh: replicas' times are
// merged by the bench before their percentiles are taken.
func (s *serverTimes) takeRaw() []time.Duration {
	s.mu.Lock()
	l := s.l
	s.l = nil
	s.mu.Unlock()
	return l
}

// rawServerTimes takes a child's own verdict times since the last call.
func (v *verifierHandle) rawServerTimes(ctx context.Context) ([]time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.PProf+"/bench/server-times?raw=1", nil)
	if err != nil {
		return nil, err
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer rsp.Body.Close()
	var l []time.Duration
	if rsp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("verifier server times: %s", rsp.Status)
	}
	return l, json.NewDecoder(io.LimitReader(rsp.Body, 64<<20)).Decode(&l)
}

// startChildVerifier runs the verifier as `exe bench verifier-process …`
// and waits for it to report its endpoints on standard output.
func startChildVerifier(ctx context.Context, exe string, cfg VerifierConfig) (*verifierHandle, error) {
	args := []string{"bench", "verifier-process",
		"--data", cfg.DataDir, "--store", cfg.Store, "--tls-dir", cfg.TLSDir, "--registrar", cfg.RegistrarURL,
		"--interval", cfg.Interval.String()}
	if cfg.Listen != "" {
		args = append(args, "--listen", cfg.Listen)
	}
	if cfg.ReplicaURL != "" {
		args = append(args, "--advertise", cfg.ReplicaURL, "--replica-id", cfg.ReplicaID)
	}
	cmd := exec.Command(exe, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	tail := &tailBuffer{max: 8 << 10}
	cmd.Stderr = tail
	// The child must not outlive the bench, whatever happens to the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start verifier process %s: %w", exe, err)
	}
	done := make(chan struct{})
	var waitErr error
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		waitErr = cmd.Wait()
		close(done)
	}()
	stop := func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	h := &verifierHandle{pid: cmd.Process.Pid, stop: stop, stderr: tail}
	h.kill = func() {
		cmd.Process.Kill()
		<-done
	}
	select {
	case line := <-lines:
		if err := json.Unmarshal([]byte(line), &h.Endpoints); err != nil || h.URL == "" {
			stop()
			return nil, fmt.Errorf("verifier process: unexpected first line %q", line)
		}
		return h, nil
	case <-done:
		return nil, fmt.Errorf("verifier process exited (%v): %s", waitErr, strings.TrimSpace(tail.String()))
	case <-time.After(30 * time.Second):
		stop()
		return nil, errors.New("verifier process did not start within 30s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// startInProcessVerifier runs the verifier in this process (tests, or when
// no vigil binary is at hand).
func startInProcessVerifier(ctx context.Context, cfg VerifierConfig) (*verifierHandle, error) {
	ctx, cancel := context.WithCancel(ctx)
	eps := make(chan Endpoints, 1)
	errc := make(chan error, 1)
	var server *serverTimes
	go func() {
		errc <- ServeVerifier(ctx, cfg, false, func(e Endpoints, st *serverTimes) {
			server = st
			eps <- e
		})
	}()
	select {
	case e := <-eps:
		var once sync.Once
		return &verifierHandle{Endpoints: e, server: server, stop: func() {
			once.Do(func() {
				cancel()
				<-errc
			})
		}}, nil
	case err := <-errc:
		cancel()
		return nil, err
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// ChildMain is the body of the hidden `vigil bench verifier-process`: it
// serves the verifier and announces its endpoints as one JSON line on out.
func ChildMain(ctx context.Context, cfg VerifierConfig, out io.Writer) error {
	return ServeVerifier(ctx, cfg, true, func(e Endpoints, _ *serverTimes) {
		b, _ := json.Marshal(e)
		fmt.Fprintf(out, "%s\n", b)
		if f, ok := out.(*os.File); ok {
			f.Sync()
		}
	})
}
