package tpmsim

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// SwtpmConfig configures a new swtpm instance.
type SwtpmConfig struct {
	// Dir holds the TPM state and logs. It must exist and be private to this
	// instance.
	Dir string
	// CADir holds the simulated manufacturer CA (swtpm-localca's root and
	// issuing CA) that signs the EK and platform certificates. Several
	// instances may share one; it is created on first use. Empty means
	// Dir/ca.
	CADir string
}

// Swtpm is a running swtpm process serving one TPM 2.0 on loopback TCP.
//
// The TPM is manufactured by swtpm_setup with SHA-1 and SHA-256 PCR banks, an
// RSA-2048 and an ECC P-384 EK, and EK and platform certificates issued by a
// local CA. swtpm serves one client connection at a time; Open a connection,
// use it, close it.
type Swtpm struct {
	dir   string
	caDir string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	port    int
	logPath string
}

// StartSwtpm manufactures a TPM in cfg.Dir (unless one is there already) and
// starts swtpm serving it on 127.0.0.1:P (commands) and P+1 (control), the
// layout `--tpm swtpm:HOST:PORT` expects. The process is killed if the
// calling process dies.
func StartSwtpm(ctx context.Context, cfg SwtpmConfig) (*Swtpm, error) {
	if cfg.Dir == "" {
		return nil, errors.New("swtpm: no state directory given")
	}
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("swtpm: %s not found on PATH (Debian packages swtpm, swtpm-tools): %w", bin, err)
		}
	}
	s := &Swtpm{dir: cfg.Dir, caDir: cfg.CADir}
	if s.caDir == "" {
		s.caDir = filepath.Join(cfg.Dir, "ca")
	}
	if err := s.manufacture(ctx); err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Swtpm) stateDir() string { return filepath.Join(s.dir, "state") }

// manufacture runs swtpm_setup with a private swtpm_localca configuration so
// that the EK certificate chains to a CA this instance controls.
func (s *Swtpm) manufacture(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.stateDir(), "tpm2-00.permall")); err == nil {
		return nil
	}
	if err := os.MkdirAll(s.stateDir(), 0o700); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	if err := os.MkdirAll(s.caDir, 0o700); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	localca := filepath.Join(s.dir, "swtpm-localca.conf")
	if err := os.WriteFile(localca, []byte(fmt.Sprintf(
		"statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n",
		s.caDir)), 0o600); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	opts := filepath.Join(s.dir, "swtpm-localca.options")
	if err := os.WriteFile(opts, []byte("--platform-manufacturer Vigil\n--platform-version 1.0\n--platform-model tpmsim\n"), 0o600); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	setup := filepath.Join(s.dir, "swtpm_setup.conf")
	if err := os.WriteFile(setup, []byte(fmt.Sprintf(
		"create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha1,sha256\n",
		localca, opts)), 0o600); err != nil {
		return fmt.Errorf("swtpm: %w", err)
	}
	cmd := exec.CommandContext(ctx, "swtpm_setup", "--tpm2",
		"--tpm-state", s.stateDir(),
		"--pcr-banks", "sha1,sha256",
		"--create-ek-cert", "--create-platform-cert",
		"--config", setup,
		"--logfile", filepath.Join(s.dir, "swtpm_setup.log"),
	)
	// swtpm_setup looks for user configuration under $HOME and XDG paths;
	// point them at the instance so a developer's own config cannot leak in.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+s.dir, "HOME="+s.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		logged, _ := os.ReadFile(filepath.Join(s.dir, "swtpm_setup.log"))
		return fmt.Errorf("swtpm_setup: %w: %s%s", err, out, lastLines(string(logged), 10))
	}
	return nil
}

// start runs swtpm on 127.0.0.1:P (commands) and P+1 (control). The ports
// are found free and then released for swtpm to bind, so another process
// can take one in between; start notices (swtpm exits) and tries a new pair.
// A restart reuses the instance's ports.
func (s *Swtpm) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lastErr error
	for range 10 {
		if s.port == 0 {
			port, err := freePortPair()
			if err != nil {
				return fmt.Errorf("swtpm: %w", err)
			}
			s.port = port
		}
		err := s.startOn(s.port)
		if err == nil {
			return nil
		}
		lastErr = err
		s.port = 0
	}
	return lastErr
}

func (s *Swtpm) startOn(port int) error {
	s.logPath = filepath.Join(s.dir, "swtpm.log")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.stateDir(),
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+s.logPath+",level=1",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("swtpm: start: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("swtpm exited at start on port %d:%s", port, lastLines(readFile(s.logPath), 5))
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			// swtpm serves one client at a time and takes the next once this
			// one closes, so a probe connection costs nothing.
			conn.Close()
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("swtpm did not listen on %s within 10s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePortPair finds P such that 127.0.0.1:P and P+1 are both free now.
func freePortPair() (int, error) {
	for range 100 {
		l1, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		l1.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, errors.New("no free pair of loopback ports")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// Addr is the host:port of the TPM command channel.
func (s *Swtpm) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Spec is the --tpm value that reaches this TPM.
func (s *Swtpm) Spec() string { return "swtpm:" + s.Addr() }

// Open connects to the TPM. swtpm serves one connection at a time, so close
// it before opening another. Connecting is retried briefly because swtpm may
// still be starting up or finishing with the previous client.
func (s *Swtpm) Open(ctx context.Context) (transport.TPMCloser, error) {
	return DialSwtpm(ctx, s.Addr())
}

// DialSwtpm opens a go-tpm transport to an swtpm command channel at addr.
func DialSwtpm(ctx context.Context, addr string) (transport.TPMCloser, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("swtpm %s: %w", addr, err)
	}
	return transport.FromReadWriteCloser(conn), nil
}

// Restart stops the swtpm process and starts it again on the same state and
// ports: a power cycle, after which the TPM's resetCount has moved on and the
// PCRs are back at their initial values.
func (s *Swtpm) Restart() error {
	if err := s.kill(); err != nil {
		return err
	}
	return s.start()
}

func (s *Swtpm) kill() error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return nil
}

// Stop ends the swtpm process. The state directory
// is left for the caller to remove.
func (s *Swtpm) Stop() error {
	return s.kill()
}

// Log returns the tail of swtpm's log, for failure messages.
func (s *Swtpm) Log() string {
	return lastLines(readFile(s.logPath), 20)
}

// CACertificates returns the local CA's certificates: the root first, then
// the issuing CA that signed the EK certificates.
func (s *Swtpm) CACertificates() ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(s.caDir, name))
		if err != nil {
			return nil, fmt.Errorf("swtpm CA: %w", err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("swtpm CA: %s: no PEM block", name)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("swtpm CA: %s: %w", name, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// CADir is the directory of the local CA that issued the EK certificate.
func (s *Swtpm) CADir() string { return s.caDir }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return "\n" + strings.Join(lines, "\n")
}
