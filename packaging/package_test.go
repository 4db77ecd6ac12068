package main

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipOrFail skips the test, or fails it where CI demands the tests that
// need a real machine run (VIGIL_REQUIRE_SWTPM=1, as .ci/run sets).
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("VIGIL_REQUIRE_SWTPM") == "1" {
		t.Fatalf("VIGIL_REQUIRE_SWTPM=1 but the package test cannot run: %s", why)
	}
	t.Skip(why)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func hasUser(name string) bool  { return exec.Command("getent", "passwd", name).Run() == nil }
func hasGroup(name string) bool { return exec.Command("getent", "group", name).Run() == nil }
func installed() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "vigil").Output()
	return err == nil && strings.Contains(string(out), "installed")
}

// TestDebPackage builds the package for this machine's architecture, checks
// what it holds, installs it, runs the registrar it ships from its config
// (adjusted to a scratch TLS and data directory), upgrades it over an edited
// conffile, and purges it. It changes the machine only between dpkg -i and
// the purge its cleanup always runs, so it refuses to start where vigil is
// already installed or its user or directories exist.
func TestDebPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (dpkg -i)")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, tool+" not found")
		}
	}
	if installed() || hasUser("vigil") || hasGroup("vigil") || exists("/etc/vigil") || exists("/var/lib/vigil") {
		skipOrFail(t, "vigil is installed here, or its user, group, /etc/vigil or /var/lib/vigil exist: the test would not leave them as it found them")
	}
	tssBefore := hasGroup("tss")

	arch := runtime.GOARCH
	dist := t.TempDir()
	debs, err := Build(Options{Root: "..", Out: dist, Version: "0.0.1~test", Arches: []string{arch}})
	if err != nil {
		t.Fatal(err)
	}
	deb := debs[0]

	// What the package holds.
	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: vigil", "Architecture: " + arch, "Version: 0.0.1~test", "Depends: adduser", "conffiles", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I: no %q in\n%s", want, info)
		}
	}
	conffiles := strings.Fields(run(t, "dpkg-deb", "-I", deb, "conffiles"))
	if want := []string{"/etc/vigil/agent.yaml", "/etc/vigil/registrar.yaml", "/etc/vigil/verifier.yaml"}; !slices.Equal(conffiles, want) {
		t.Errorf("conffiles %q, want %q", conffiles, want)
	}
	for script, want := range map[string]string{
		"postinst": "adduser --system", "prerm": "systemctl stop", "postrm": "rm -rf /var/lib/vigil",
	} {
		body := run(t, "dpkg-deb", "-I", deb, script)
		if !strings.Contains(body, want) || !strings.Contains(body, "[ -d /run/systemd/system ]") {
			t.Errorf("%s lacks %q or the systemd guard:\n%s", script, want, body)
		}
	}
	listing := run(t, "dpkg-deb", "-c", deb)
	files := map[string]string{ // path → mode
		"./usr/bin/vigil":                 "-rwxr-xr-x",
		"./usr/share/man/man1/vigil.1.gz": "-rw-r--r--",
	}
	for _, s := range Services {
		files["./etc/vigil/"+s+".yaml"] = "-rw-r--r--"
		files["./usr/lib/systemd/system/vigil-"+s+".service"] = "-rw-r--r--"
	}
	for _, line := range strings.Split(listing, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		if mode, ok := files[f[5]]; ok {
			if f[0] != mode || f[1] != "root/root" {
				t.Errorf("%s: %s %s, want %s root/root", f[5], f[0], f[1], mode)
			}
			delete(files, f[5])
		}
	}
	for f := range files {
		t.Errorf("dpkg-deb -c: %s missing", f)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Install; whatever happens next, purge.
	t.Cleanup(func() {
		if installed() {
			if out, err := exec.Command("dpkg", "--purge", "vigil").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge vigil: %v\n%s", err, out)
			}
		}
		if hasUser("vigil") {
			exec.Command("userdel", "vigil").Run()
		}
		if hasGroup("vigil") {
			exec.Command("groupdel", "vigil").Run()
		}
		if !tssBefore && hasGroup("tss") {
			exec.Command("groupdel", "tss").Run()
		}
		os.RemoveAll("/var/lib/vigil")
	})
	t.Log(run(t, "dpkg", "-i", deb))

	run(t, "/usr/bin/vigil", "--help")
	if !hasUser("vigil") || !hasGroup("vigil") || !hasGroup("tss") {
		t.Fatalf("after install: user vigil %v, group vigil %v, group tss %v", hasUser("vigil"), hasGroup("vigil"), hasGroup("tss"))
	}
	if pw := run(t, "getent", "passwd", "vigil"); !strings.HasSuffix(strings.TrimSpace(pw), ":/usr/sbin/nologin") {
		t.Errorf("vigil user: %s", pw)
	}
	if groups := strings.Fields(run(t, "id", "-nG", "vigil")); !slices.Contains(groups, "tss") {
		t.Errorf("vigil is not in group tss: %v", groups)
	}
	for _, s := range Services {
		if !exists("/etc/vigil/" + s + ".yaml") {
			t.Errorf("/etc/vigil/%s.yaml missing", s)
		}
	}
	checkManPage(t)

	// systemd-analyze verify works offline (no running systemd needed): it
	// loads each unit, checks its directives, that ExecStart is executable
	// and that the man page of Documentation= exists.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found: units not verified")
	} else {
		for _, s := range Services {
			unit := "/usr/lib/systemd/system/vigil-" + s + ".service"
			if out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}
		}
	}

	runServices(t)

	// An upgrade keeps an edited conffile.
	edited := append(must(os.ReadFile("/etc/vigil/verifier.yaml")), "# edited by the operator\n"...)
	if err := os.WriteFile("/etc/vigil/verifier.yaml", edited, 0o644); err != nil {
		t.Fatal(err)
	}
	debs2, err := Build(Options{Root: "..", Out: dist, Version: "0.0.2~test", Arches: []string{arch}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", "--force-confdef", "--force-confold", debs2[0])
	if v := run(t, "dpkg-query", "-W", "-f=${Version}", "vigil"); v != "0.0.2~test" {
		t.Errorf("after upgrade: version %q", v)
	}
	if got := must(os.ReadFile("/etc/vigil/verifier.yaml")); !bytes.Equal(got, edited) {
		t.Errorf("the upgrade did not keep the edited /etc/vigil/verifier.yaml")
	}

	// Purge removes everything, state included.
	if err := os.MkdirAll("/var/lib/vigil/registrar", 0o750); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "--purge", "vigil")
	for _, p := range []string{"/usr/bin/vigil", "/usr/share/man/man1/vigil.1.gz", "/etc/vigil", "/var/lib/vigil", "/usr/lib/systemd/system/vigil-agent.service"} {
		if exists(p) {
			t.Errorf("after purge: %s still exists", p)
		}
	}
	if hasUser("vigil") || hasGroup("vigil") {
		t.Errorf("after purge: user vigil %v, group vigil %v", hasUser("vigil"), hasGroup("vigil"))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func checkManPage(t *testing.T) {
	t.Helper()
	f, err := os.Open("/usr/share/man/man1/vigil.1.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".TH vigil 1", "registrar", "verifier", "agent", "tenant", "--config"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("vigil.1 has no %q", want)
		}
	}
}

// runServices starts the installed binary's registrar and verifier with
// the shipped configuration files (data, tls-dir, listen, registrar URL and
// EK policy pointed at scratch values), checks each answers /healthz,
// enrolls a soft TPM with `vigil agent enroll` from the shipped agent.yaml,
// and stops both services with SIGTERM.
func runServices(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	run(t, "/usr/bin/vigil", "ca", "init", "--san", "127.0.0.1", tlsDir)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(must(os.ReadFile(filepath.Join(tlsDir, "ca.crt")))) {
		t.Fatal("ca.crt: no certificate")
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	regAddr, verAddr := freeAddr(t), freeAddr(t)
	stopReg := startInstalled(t, client, "registrar", regAddr, map[string]string{
		"data": filepath.Join(dir, "registrar"), "tls-dir": tlsDir, "listen": regAddr, "ek-policy": "any", "ek-roots": "",
	})
	stopVer := startInstalled(t, client, "verifier", verAddr, map[string]string{
		"data": filepath.Join(dir, "verifier"), "tls-dir": tlsDir, "listen": verAddr, "registrar": "https://" + regAddr,
	})

	// The agent as the package ships it enrolls a TPM (a soft one here).
	agentConf := configFrom(t, dir, "agent", map[string]string{
		"data": filepath.Join(dir, "agent"), "tpm": "soft:" + filepath.Join(dir, "soft-tpm"), "registrar": "https://" + regAddr,
		"ca": filepath.Join(tlsDir, "ca.crt"), "verifier": "",
	})
	if out := run(t, "/usr/bin/vigil", "agent", "enroll", "--config", agentConf, "--json"); !strings.Contains(out, `"active": true`) {
		t.Errorf("agent enroll from the shipped agent.yaml:\n%s", out)
	}

	// The agent service itself: it runs from the shipped agent.yaml (here
	// with logs a simulated boot wrote into the soft TPM) until stopped.
	soft := "soft:" + filepath.Join(dir, "soft-tpm")
	bootLog, imaLog := filepath.Join(dir, "boot.log"), filepath.Join(dir, "ima.log")
	run(t, "/usr/bin/vigil", "sim", "boot", "--tpm", soft, "--out", bootLog)
	run(t, "/usr/bin/vigil", "sim", "ima", "--tpm", soft, "--log", imaLog, "--init")
	runConf := configFrom(t, t.TempDir(), "agent", map[string]string{
		"data": filepath.Join(dir, "agent"), "tpm": soft, "registrar": "https://" + regAddr,
		"ca": filepath.Join(tlsDir, "ca.crt"), "verifier": "",
	})
	var logs bytes.Buffer
	// Started as root with --user vigil, as the unit starts it: it opens
	// the TPM and the logs (made root-only here, like securityfs's), then
	// runs as vigil in group tss.
	for _, f := range []string{bootLog, imaLog} {
		if err := os.Chmod(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ag := exec.Command("/usr/bin/vigil", "agent", "--config", runConf, "--verifier", "https://"+verAddr,
		"--boot-log", bootLog, "--ima-log", imaLog, "--user", "vigil")
	ag.Stdout, ag.Stderr = &logs, &logs
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Wait() }()
	select {
	case err := <-agentDone:
		t.Errorf("the agent exited: %v\n%s", err, logs.String())
	case <-time.After(3 * time.Second):
		checkRunsAsVigil(t, ag.Process.Pid)
		ag.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-agentDone:
			if err != nil {
				t.Errorf("the agent stopped with %v\n%s", err, logs.String())
			}
		case <-time.After(15 * time.Second):
			ag.Process.Kill()
			<-agentDone
			t.Errorf("the agent did not stop on SIGTERM\n%s", logs.String())
		}
	}
	stopVer()
	stopReg()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// configFrom writes a copy of the shipped /etc/vigil/<service>.yaml with
// the keys of override set (a key set to "" is dropped, with the indented
// lines of its value) and returns its path.
func configFrom(t *testing.T, dir, service string, override map[string]string) string {
	t.Helper()
	var cfg []string
	dropping := false
	for _, line := range strings.Split(string(must(os.ReadFile("/etc/vigil/"+service+".yaml"))), "\n") {
		if dropping && strings.HasPrefix(line, " ") {
			continue
		}
		dropping = false
		key, _, ok := strings.Cut(line, ":")
		if v, over := override[key]; ok && over {
			if v == "" {
				dropping = true
				continue
			}
			line = key + ": " + v
		}
		cfg = append(cfg, line)
	}
	conf := filepath.Join(dir, service+".yaml")
	if err := os.WriteFile(conf, []byte(strings.Join(cfg, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// startInstalled runs `/usr/bin/vigil <service> --config` from a copy of the
// shipped config with override, waits for /healthz at addr, and returns a
// function that stops it with SIGTERM and checks it exits cleanly.
func startInstalled(t *testing.T, client *http.Client, service, addr string, override map[string]string) (stop func()) {
	t.Helper()
	conf := configFrom(t, t.TempDir(), service, override)
	var logs bytes.Buffer
	cmd := exec.Command("/usr/bin/vigil", service, "--config", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s /healthz: %s\n%s", service, resp.Status, logs.String())
			}
			break
		}
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("the %s exited: %v\n%s", service, err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /healthz: %v\n%s", service, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return func() {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			stopped = true
			if err != nil {
				t.Errorf("the %s stopped with %v\n%s", service, err, logs.String())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("the %s did not stop on SIGTERM\n%s", service, logs.String())
		}
	}
}

// checkRunsAsVigil reads the process's credentials from /proc: every uid is
// vigil's and tss is among its groups, so it can reach /dev/tpmrm0 and
// nothing root could.
func checkRunsAsVigil(t *testing.T, pid int) {
	t.Helper()
	uid := strings.TrimSpace(run(t, "id", "-u", "vigil"))
	tss := strings.TrimSpace(run(t, "getent", "group", "tss"))
	tssGID := strings.Split(tss, ":")[2]
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var uids, groups []string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uids = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(line, "Groups:"); ok {
			groups = strings.Fields(v)
		}
	}
	if len(uids) != 4 || slices.ContainsFunc(uids, func(u string) bool { return u != uid }) {
		t.Errorf("the agent's uids are %v, want vigil's (%s) in all four", uids, uid)
	}
	if !slices.Contains(groups, tssGID) {
		t.Errorf("the agent's groups are %v, want tss (%s) among them", groups, tssGID)
	}
}
