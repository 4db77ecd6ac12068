package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
)

// runAll runs vigil in-process and returns standard output, standard
// error, the exit code and the returned error's message.
func runAll(t *testing.T, args ...string) (stdout, stderr string, code int, msg string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(context.Background(), hoistFlags(app, append([]string{"vigil"}, args...)))
	if err != nil {
		msg = err.Error()
	}
	return out.String(), errOut.String(), exitCode(err), msg
}

// createPolicy runs `vigil policy create runtime ARGS` and reads the policy
// it prints.
func createPolicy(t *testing.T, args ...string) (ima.RuntimePolicy, string) {
	t.Helper()
	out, stderr, code, msg := runAll(t, append([]string{"policy", "create", "runtime"}, args...)...)
	if code != 0 {
		t.Fatalf("create %v: exit %d %s", args, code, msg)
	}
	var rp ima.RuntimePolicy
	if err := json.Unmarshal([]byte(out), &rp); err != nil {
		t.Fatalf("create %v: %v", args, err)
	}
	if _, err := ima.ParsePolicy([]byte(out)); err != nil {
		t.Fatalf("create %v wrote a policy Vigil refuses: %v", args, err)
	}
	return rp, stderr
}

func writePolicyJSON(t *testing.T, path string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// policyDiff runs `vigil policy diff A B --json`.
func policyDiff(t *testing.T, a, b string) (ima.PolicyDiff, int) {
	t.Helper()
	out, _, code, msg := runAll(t, "policy", "diff", a, b, "--json")
	if code == exitUsage {
		t.Fatalf("diff %s %s: %s", a, b, msg)
	}
	var d ima.PolicyDiff
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("diff: %v %s", err, out)
	}
	return d, code
}

// checkReport runs `vigil policy check POLICY --ima-log LOG --json ARGS`.
func checkReport(t *testing.T, pol, log string, args ...string) (policyCheckReport, int) {
	t.Helper()
	out, _, code, msg := runAll(t, append([]string{"policy", "check", pol, "--ima-log", log, "--json"}, args...)...)
	if code == exitUsage {
		t.Fatalf("check %s %s: %s", pol, log, msg)
	}
	var rep policyCheckReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("check: %v %s", err, out)
	}
	return rep, code
}

func failureRules(fs []ima.Failure) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Path+":"+string(f.Rule))
	}
	return strings.Join(out, " ")
}

// Keylime's create-runtime-policy test data: one log per digest algorithm
// and, for each, the base policy Keylime's tests merge it into. Those
// "keylime-policy-*" files are not generated from the logs: each lists a
// single digest in the log's algorithm for a file the log does not hold
// ("/base_policy_data", "/rootfs_data" for sm3_256). So a policy
// Vigil makes from the log alone differs from it by exactly that file
// (removed) and the log's own entries (added); made with the file as
// --base-policy, as Keylime's tests make theirs, it differs by the log's
// entries only. Two real differences follow from the logs themselves:
//   - boot_aggregate: in every log but sha256's, entry 0 has an all-zero
//     template hash, which IMA writes for a violation. Vigil skips
//     violations when generating (their digest is not a measured file's)
//     and fails them when verifying; Keylime's generator would list
//     boot_aggregate with the all-zero digest.
//   - the sm3_256 log's template hashes are 32-byte SM3 digests Vigil reads
//     only when told (--template-hash-alg sm3_256) and cannot recompute.
func TestPolicyCreateFromKeylimeLogs(t *testing.T) {
	dir := t.TempDir()
	for _, alg := range []string{"sha1", "sha256", "sha384", "sha512", "sm3_256"} {
		t.Run(alg, func(t *testing.T) {
			log := testenv.Data(t, "ima", "keylime-ima-log-"+alg)
			keylime := testenv.Data(t, "policy", "keylime-policy-"+alg+".json")
			var extra []string
			if alg == "sm3_256" {
				extra = []string{"--template-hash-alg", "sm3_256"}
			}
			logData, _ := os.ReadFile(log)
			dataDigest := strings.TrimSpace(string(logData[bytes.LastIndexByte(logData, ':')+1 : bytes.LastIndexByte(logData, ' ')]))

			rp, _ := createPolicy(t, append([]string{"--ima-log", log}, extra...)...)
			wantPaths := []string{"/data"}
			if alg == "sha256" {
				wantPaths = []string{"/data", "boot_aggregate"}
			}
			paths := make([]string, 0, len(rp.Digests))
			for p := range rp.Digests {
				paths = append(paths, p)
			}
			slices.Sort(paths)
			if !slices.Equal(paths, wantPaths) || rp.Digests["/data"][0] != dataDigest || rp.IMA.LogHashAlg != "sha1" {
				t.Fatalf("paths %v, /data %v, log_hash_alg %s", paths, rp.Digests["/data"], rp.IMA.LogHashAlg)
			}
			own := writePolicyJSON(t, filepath.Join(dir, alg+"-own.json"), rp)

			// The policy accepts its log, except (as the verifier would)
			// a violation.
			rep, code := checkReport(t, own, log, extra...)
			if alg == "sha256" {
				if code != 0 || !rep.OK || rep.Entries != 2 || rep.BootAggregate != "policy" {
					t.Fatalf("check: exit %d %+v", code, rep)
				}
			} else if code != 1 || rep.FailureCount != 1 || rep.Failures[0].Entry != 0 || rep.Failures[0].Rule != ima.RuleViolation {
				t.Fatalf("check: exit %d %+v", code, rep)
			}

			// Against Keylime's file: its one unrelated digest out, the
			// log's entries in, nothing else.
			d, code := policyDiff(t, keylime, own)
			kp, err := ima.ParsePolicy(mustRead(t, keylime))
			if err != nil || len(kp.Source.Digests) != 1 {
				t.Fatalf("Keylime's policy: %v", err)
			}
			if code != 1 || !slices.Equal(sortedKeysOf(d.Digests.Removed), sortedKeysOf(kp.Source.Digests)) || len(d.Digests.Added) != len(wantPaths) || len(d.Digests.Changed) != 0 ||
				d.Counts.ExcludesAdded+d.Counts.ExcludesRemove+d.Counts.Other != 0 {
				t.Fatalf("diff against Keylime's policy: exit %d %+v", code, d)
			}

			// Merged into it, as Keylime's own tests do: only additions.
			merged, _ := createPolicy(t, append([]string{"--base-policy", keylime, "--ima-log", log}, extra...)...)
			mergedFile := writePolicyJSON(t, filepath.Join(dir, alg+"-merged.json"), merged)
			d, code = policyDiff(t, keylime, mergedFile)
			added := sortedKeysOf(d.Digests.Added)
			if code != 1 || !slices.Equal(added, wantPaths) || len(d.Digests.Removed)+len(d.Digests.Changed) != 0 ||
				d.Counts.ExcludesAdded+d.Counts.ExcludesRemove+d.Counts.Other != 0 || d.Digests.Added["/data"][0] != dataDigest {
				t.Fatalf("diff against the merged policy: exit %d %+v", code, d)
			}
		})
	}
	// A created policy passes its log with the quoted PCR 10 too.
	log := testenv.Data(t, "ima", "keylime-ima-log-sha256")
	data, _ := os.ReadFile(log)
	rep, _ := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1)
	if out, code := run(t, context.Background(), "ima", "verify", log, "--policy", filepath.Join(dir, "sha256-own.json"), "--pcr10", hex.EncodeToString(rep.PCR["sha1"])); code != 0 {
		t.Fatalf("ima verify: exit %d %s", code, out)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Keylime refuses to merge sources whose digests are in different
// algorithms, and so does Vigil.
func TestPolicyCreateMixedAlgorithms(t *testing.T) {
	_, _, code, msg := runAll(t, "policy", "create", "runtime", "--base-policy", testenv.Data(t, "policy", "keylime-policy-sha1.json"),
		"--ima-log", testenv.Data(t, "ima", "keylime-ima-log-sha256"))
	if code != exitUsage || !strings.Contains(msg, "digest algorithms disagree") || !strings.Contains(msg, "sha1") || !strings.Contains(msg, "sha256") {
		t.Fatalf("exit %d %s", code, msg)
	}
}

// The rust-keylime ASCII log (826 ima-ng sha1 entries of a real machine,
// boot_aggregate zero: no TPM).
func TestPolicyCreateRustKeylimeLog(t *testing.T) {
	log := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	dir := t.TempDir()
	rp, _ := createPolicy(t, "--ima-log", log)
	pol := writePolicyJSON(t, filepath.Join(dir, "p.json"), rp)
	if rp.Digests["boot_aggregate"][0] != strings.Repeat("0", 40) {
		t.Fatalf("boot_aggregate %v", rp.Digests["boot_aggregate"])
	}
	rep, code := checkReport(t, pol, log)
	if code != 0 || !rep.OK || rep.Entries != 826 || rep.BootAggregate != "policy" || rep.NotChecked != noQuote {
		t.Fatalf("check: exit %d %+v", code, rep)
	}
	out, code := run(t, context.Background(), "policy", "check", pol, "--ima-log", log)
	if code != 0 || !strings.Contains(out, "there is no quote") || !strings.Contains(out, "ok: 826 entries") {
		t.Fatalf("check text: exit %d %s", code, out)
	}
	if d, code := policyDiff(t, pol, pol); code != 0 || !d.Identical {
		t.Fatalf("self diff: exit %d %+v", code, d)
	}
	// Keylime's runtime-policy test file as the base (sha1 file digests, a
	// sha256: boot_aggregate, a .ima keyring): all of it is kept.
	base := testenv.Data(t, "policy", "keylime-runtime-policy-test.json")
	merged, _ := createPolicy(t, "--base-policy", base, "--ima-log", log)
	mergedFile := writePolicyJSON(t, filepath.Join(dir, "merged.json"), merged)
	d, code := policyDiff(t, base, mergedFile)
	if code != 1 || len(d.Digests.Removed) != 0 || len(d.Keyrings.Removed)+len(d.Keyrings.Changed) != 0 ||
		len(d.Digests.Changed) != 1 || !slices.Equal(d.Digests.Changed["boot_aggregate"].Added, []string{strings.Repeat("0", 40)}) ||
		len(d.Digests.Added) != len(rp.Digests)-1 {
		t.Fatalf("merged: exit %d changed %+v, %d added, %d removed", code, d.Digests.Changed, len(d.Digests.Added), len(d.Digests.Removed))
	}
	if rep, code := checkReport(t, mergedFile, log); code != 0 || !rep.OK {
		t.Fatalf("merged check: exit %d %+v", code, rep.Failures)
	}
}

// writeTree lays out a root filesystem: an executable script, an ELF-like
// library without x bits, a text file, a symbolic link, a directory the
// exclude list covers, one --skip-path names, and /var (always skipped).
func writeTree(t *testing.T) (dir string, files map[string]string) {
	t.Helper()
	dir = t.TempDir()
	files = map[string]string{
		"usr/bin/tool":        "#!/bin/sh\necho hi\n",
		"usr/lib/libx.so.1":   "\x7fELF rest of a library",
		"usr/lib/notes.txt":   "not code",
		"opt/app/bin/app":     "\x7fELF app",
		"opt/app/cache/gen":   "#!/bin/sh\ngenerated\n",
		"srv/scratch/run":     "#!/bin/sh\nscratch\n",
		"var/lib/app/install": "#!/bin/sh\n",
	}
	for p, body := range files {
		mode := os.FileMode(0o755)
		if strings.HasSuffix(p, ".txt") || strings.Contains(p, ".so") {
			mode = 0o644
		}
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("tool", filepath.Join(dir, "usr/bin/alias")); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

func TestPolicyCreateRootfsMerged(t *testing.T) {
	root, files := writeTree(t)
	dir := t.TempDir()
	excl := filepath.Join(dir, "exclude.txt")
	os.WriteFile(excl, []byte("# generated at run time\n/opt/app/cache/.*\n\n/tmp/.*\n"), 0o644)

	rp, stderr := createPolicy(t, "--rootfs", root, "--exclude", excl, "--skip-path", "/srv/scratch")
	want := []string{"/opt/app/bin/app", "/usr/bin/tool", "/usr/lib/libx.so.1"}
	if got := sortedKeysOf(rp.Digests); !slices.Equal(got, want) {
		t.Fatalf("paths %v, want %v", got, want)
	}
	for _, p := range want {
		s := sha256.Sum256([]byte(files[p[1:]]))
		if rp.Digests[p][0] != hex.EncodeToString(s[:]) {
			t.Errorf("%s: %v", p, rp.Digests[p])
		}
	}
	if !slices.Equal(rp.Excludes, []string{"/opt/app/cache/.*", "/tmp/.*"}) {
		t.Fatalf("excludes %q", rp.Excludes)
	}
	// No log, so no boot_aggregate: the command says what that means.
	if !strings.Contains(stderr, "lists no boot_aggregate") || !strings.Contains(stderr, "PCRs 0-9") {
		t.Fatalf("stderr %q", stderr)
	}

	// Such a policy passes a host's list whose entry 0 is the right
	// boot_aggregate when the verifier has PCRs 0-9, as verdict.Runtime
	// calls ima.Verify.
	pcrs := map[int][]byte{}
	for i := 0; i < 10; i++ {
		s := sha256.Sum256([]byte{byte(i)})
		pcrs[i] = s[:]
	}
	agg, _ := ima.BootAggregate(ima.SHA256, pcrs)
	log := imaNGLine(t, "sha256", agg, "boot_aggregate")
	for _, p := range []string{"usr/bin/tool", "opt/app/cache/gen", "usr/lib/libx.so.1"} {
		s := sha256.Sum256([]byte(files[p]))
		log += imaNGLine(t, "sha256", s[:], "/"+p)
	}
	pol, err := ima.CompilePolicy(rp)
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := ima.Replay([]byte(log), ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA256)
	res, err := ima.Verify(ima.NewState(ima.SHA256), []byte(log), map[ima.Algorithm][]byte{ima.SHA256: rep.PCR["sha256"]}, pol,
		ima.VerifyOptions{MaxFailures: 100, BootPCRs: map[ima.Algorithm]map[int][]byte{ima.SHA256: pcrs}})
	if err != nil || !res.OK() || res.State.Entries != 4 {
		t.Fatalf("verify with PCRs 0-9: %v %+v", err, res.Failures)
	}
	// Offline, `policy check` leaves entry 0 to the quote and says so.
	polFile := writePolicyJSON(t, filepath.Join(dir, "rootfs.json"), rp)
	logFile := filepath.Join(dir, "host.log")
	os.WriteFile(logFile, []byte(log), 0o644)
	crep, code := checkReport(t, polFile, logFile)
	if code != 0 || crep.BootAggregate != "pcrs" || crep.BootAggregateDigest != "sha256:"+hex.EncodeToString(agg) {
		t.Fatalf("check: exit %d %+v", code, crep)
	}
	out, _ := run(t, context.Background(), "policy", "check", polFile, "--ima-log", logFile)
	if !strings.Contains(out, "entry 0 boot_aggregate (sha256:") || !strings.Contains(out, "only if it matches the quoted PCRs 0-9") {
		t.Fatalf("check text: %s", out)
	}

	// Merged with a log: the rootfs is hashed in the log's algorithm (the
	// rust-keylime log's file digests are sha1), the log's paths join it.
	rk := testenv.Data(t, "ima", "rust-keylime-ascii_runtime_measurements")
	both, stderr := createPolicy(t, "--rootfs", root, "--ima-log", rk, "--exclude", excl)
	s1 := sha1Sum([]byte(files["usr/bin/tool"]))
	if both.Digests["/usr/bin/tool"][0] != hex.EncodeToString(s1) || len(both.Digests["boot_aggregate"]) != 1 || strings.Contains(stderr, "boot_aggregate") {
		t.Fatalf("merged: tool %v boot_aggregate %v stderr %q", both.Digests["/usr/bin/tool"], both.Digests["boot_aggregate"], stderr)
	}
	// --algo that contradicts the log is refused; --algo sha512 alone is fine.
	if _, _, code, msg := runAll(t, "policy", "create", "runtime", "--rootfs", root, "--ima-log", rk, "--algo", "sha256"); code != exitUsage || !strings.Contains(msg, "--algo are sha256") {
		t.Fatalf("--algo against the log: exit %d %s", code, msg)
	}
	r512, _ := createPolicy(t, "--rootfs", root, "--algo", "sha512")
	if len(r512.Digests["/usr/bin/tool"][0]) != 128 {
		t.Fatalf("sha512: %v", r512.Digests["/usr/bin/tool"])
	}
}

// imaNGLine is an ima-ng ASCII entry with its template hash.
func imaNGLine(t *testing.T, alg string, digest []byte, path string) string {
	t.Helper()
	return withTemplateHash(t, "ima-ng", alg+":"+hex.EncodeToString(digest), path)
}

// withTemplateHash renders an ASCII entry, its template hash computed from
// the fields as the parser rebuilds them.
func withTemplateHash(t *testing.T, template string, fields ...string) string {
	t.Helper()
	rest := template + " " + strings.Join(fields, " ") + "\n"
	es, err := ima.ParseAll([]byte("10 "+strings.Repeat("0", 40)+" "+rest), ima.ParseOptions{})
	if err != nil || len(es) != 1 {
		t.Fatalf("%q: %v", rest, err)
	}
	return "10 " + hex.EncodeToString(sha1Sum(es[0].TemplateData)) + " " + rest
}

// ecKey is an IMA signing key with the kernel's id for it and a
// certificate whose subject key identifier ends in certID.
type ecKey struct {
	priv   *ecdsa.PrivateKey
	id     uint32
	cert   []byte
	certID uint32
}

func newECKey(t *testing.T, certID uint32) ecKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := k.PublicKey.ECDH()
	s := sha1Sum(e.Bytes())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ima"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		SubjectKeyId: binary.BigEndian.AppendUint32([]byte{9, 9}, certID)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return ecKey{priv: k, id: binary.BigEndian.Uint32(s[16:]), cert: cert, certID: certID}
}

// sigLine is an ima-sig entry for content signed (IMA v2 signature,
// sha256) with the key whose id is id.
func (k ecKey) sigLine(t *testing.T, id uint32, path, content string) string {
	t.Helper()
	d := sha256.Sum256([]byte(content))
	body, err := ecdsa.SignASN1(rand.Reader, k.priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := binary.BigEndian.AppendUint32([]byte{3, 2, 4}, id)
	sig = binary.BigEndian.AppendUint16(sig, uint16(len(body)))
	sig = append(sig, body...)
	return withTemplateHash(t, "ima-sig", "sha256:"+hex.EncodeToString(d[:]), path, hex.EncodeToString(sig))
}

// bufLine is an ima-buf entry measuring buf under name.
func bufLine(t *testing.T, name string, buf []byte) string {
	t.Helper()
	d := sha256.Sum256(buf)
	return withTemplateHash(t, "ima-buf", "sha256:"+hex.EncodeToString(d[:]), name, hex.EncodeToString(buf))
}

// Keys measured into keyrings (ima-buf entries) go into "keyrings": every
// keyring's without --keyring, the named ones with it.
func TestPolicyCreateKeyrings(t *testing.T) {
	dir := t.TempDir()
	imaKey, builtin := newECKey(t, 0x11111111), newECKey(t, 0x22222222)
	builtinSPKI, _ := x509.MarshalPKIXPublicKey(&builtin.priv.PublicKey)
	log := bufLine(t, ".ima", imaKey.cert) + bufLine(t, ".builtin_trusted_keys", builtinSPKI) +
		bufLine(t, "kexec-cmdline", []byte("BOOT_IMAGE=/vmlinuz ro")) + imaKey.sigLine(t, imaKey.certID, "/usr/bin/signed", "a")
	logFile := filepath.Join(dir, "keys.log")
	os.WriteFile(logFile, []byte(log), 0o644)
	certDigest := sha256.Sum256(imaKey.cert)

	all, _ := createPolicy(t, "--ima-log", logFile)
	if got := sortedKeysOf(all.Keyrings); !slices.Equal(got, []string{".builtin_trusted_keys", ".ima"}) || len(all.IMABuf["kexec-cmdline"]) != 1 {
		t.Fatalf("keyrings %v ima-buf %v", all.Keyrings, all.IMABuf)
	}
	if rep, code := checkReport(t, writePolicyJSON(t, filepath.Join(dir, "all.json"), all), logFile); code != 0 {
		t.Fatalf("all: exit %d %+v", code, rep.Failures)
	}

	one, stderr := createPolicy(t, "--ima-log", logFile, "--keyring", ".ima")
	if got := sortedKeysOf(one.Keyrings); !slices.Equal(got, []string{".ima"}) || one.Keyrings[".ima"][0] != hex.EncodeToString(certDigest[:]) {
		t.Fatalf("keyrings %v", one.Keyrings)
	}
	if !strings.Contains(stderr, ".builtin_trusted_keys are left out") {
		t.Fatalf("stderr %q", stderr)
	}
	// The key left out fails, and the check says which entry and why.
	oneFile := writePolicyJSON(t, filepath.Join(dir, "one.json"), one)
	rep, code := checkReport(t, oneFile, logFile)
	if code != 1 || rep.FailureCount != 1 || rep.Failures[0].Entry != 1 || rep.Failures[0].Rule != ima.RuleKeyring || rep.Failures[0].Path != ".builtin_trusted_keys" {
		t.Fatalf("one: exit %d %+v", code, rep)
	}
	// Ignoring that keyring instead passes.
	ign, _ := createPolicy(t, "--ima-log", logFile, "--keyring", ".ima", "--ignored-keyring", ".builtin_trusted_keys")
	if !slices.Equal(ign.IMA.IgnoredKeyrings, []string{".builtin_trusted_keys"}) {
		t.Fatalf("%+v", ign.IMA)
	}
	if rep, code := checkReport(t, writePolicyJSON(t, filepath.Join(dir, "ign.json"), ign), logFile); code != 0 {
		t.Fatalf("ignored: exit %d %+v", code, rep.Failures)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ima-log", logFile, "--keyring", ".platform"}, "--keyring .platform: no key was measured"},
		{[]string{"--rootfs", dir, "--keyring", ".ima"}, "--keyring takes keys from an IMA log"},
		{[]string{"--ima-log", logFile, "--keyring", ".ima", "--ignored-keyring", ".ima"}, "either judged or ignored"},
	} {
		if _, _, code, msg := runAll(t, append([]string{"policy", "create", "runtime"}, tc.args...)...); code != exitUsage || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: exit %d %q, want %q", tc.args, code, msg, tc.want)
		}
	}
}

// --ima-key puts keys in "verification-keys" (Keylime's format), where
// they vouch for signed files the policy does not list.
func TestPolicyCreateIMAKeys(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newECKey(t, 0x0a0b0c0d), newECKey(t, 0x0e0f1011)
	spki, _ := x509.MarshalPKIXPublicKey(&k1.priv.PublicKey)
	pubFile := filepath.Join(dir, "k1.pub")
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644)
	certFile := filepath.Join(dir, "k2.der")
	os.WriteFile(certFile, k2.cert, 0o644)
	empty := t.TempDir()

	rp, _ := createPolicy(t, "--rootfs", empty, "--ima-key", pubFile, "--ima-key", certFile, "--ima-key", pubFile)
	keys, err := ima.ParseVerificationKeys(rp.VerificationKeys)
	if err != nil || len(keys) != 2 || keys[0].KeyID != k1.id || keys[1].KeyID != k2.certID || !bytes.Equal(keys[0].DER, spki) {
		t.Fatalf("keys %v %+v (want %08x, %08x)", err, keys, k1.id, k2.certID)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(rp.VerificationKeys), &raw); err != nil || raw["keyids"] == nil || raw["pubkeys"] == nil {
		t.Fatalf("not Keylime's keyring JSON: %s", rp.VerificationKeys)
	}
	polFile := writePolicyJSON(t, filepath.Join(dir, "keys.json"), rp)
	pcrs := map[int][]byte{}
	for i := 0; i < 10; i++ {
		pcrs[i] = make([]byte, 32)
	}
	agg, _ := ima.BootAggregate(ima.SHA256, pcrs)
	log := imaNGLine(t, "sha256", agg, "boot_aggregate") + k1.sigLine(t, k1.id, "/usr/bin/one", "1") + k2.sigLine(t, k2.certID, "/usr/bin/two", "2") +
		newECKey(t, 5).sigLine(t, 5, "/usr/bin/stranger", "3")
	logFile := filepath.Join(dir, "signed.log")
	os.WriteFile(logFile, []byte(log), 0o644)
	rep, code := checkReport(t, polFile, logFile)
	if code != 1 || failureRules(rep.Failures) != "/usr/bin/stranger:not-in-policy" || !strings.Contains(rep.Failures[0].Detail, "signature") {
		t.Fatalf("exit %d %+v", code, rep)
	}
	// Merged into a base policy that holds one of them: no duplicate.
	again, _ := createPolicy(t, "--base-policy", polFile, "--ima-key", certFile)
	if keys, _ := ima.ParseVerificationKeys(again.VerificationKeys); len(keys) != 2 {
		t.Fatalf("merged keys %+v", keys)
	}
}

// Every bad input is exit 2 with one line naming the file and place.
func TestPolicyCreateBadInput(t *testing.T) {
	dir := t.TempDir()
	root, _ := writeTree(t)
	log := testenv.Data(t, "ima", "keylime-ima-log-sha256")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	badExcl := write("bad-exclude.txt", "# ok\n/tmp/.*\n/home/(?!me)\n")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	privFile := write("key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})))
	bootPolicy := write("boot.json", `{"kind": "boot", "secure_boot": true}`)
	truncated := write("truncated.log", "10 "+strings.Repeat("1", 40)+" ima-ng sha256:zz /x\n")
	empty := write("empty.log", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give --ima-log FILE and/or --rootfs DIR"},
		{[]string{"--rootfs", root, "--exclude", badExcl}, badExcl + `:3: "/home/(?!me)" is not a regular expression`},
		{[]string{"--rootfs", root, "--exclude", filepath.Join(dir, "missing.txt")}, "missing.txt"},
		{[]string{"--rootfs", root, "--ima-key", privFile}, privFile + ": a private key"},
		{[]string{"--rootfs", root, "--ima-key", badExcl}, badExcl + ": neither an X.509 certificate nor a public key"},
		{[]string{"--rootfs", filepath.Join(dir, "nowhere")}, "nowhere: not a directory"},
		{[]string{"--rootfs", badExcl}, "bad-exclude.txt: not a directory"},
		{[]string{"--ima-log", truncated}, truncated + ": ima: ascii list, line 1"},
		{[]string{"--ima-log", empty}, "no measurement in it"},
		{[]string{"--base-policy", bootPolicy}, "--base-policy " + bootPolicy + ": ima: runtime policy"},
		{[]string{"--base-policy", badExcl}, "not JSON"},
		{[]string{"--ima-log", log, "--algo", "sha256"}, "--algo is the digest algorithm of --rootfs"},
		{[]string{"--rootfs", root, "--algo", "md5"}, `--algo: "md5"`},
		{[]string{"--ima-log", log, "--skip-path", "/x"}, "--skip-path applies to --rootfs"},
		{[]string{"--rootfs", root, "stray"}, `unexpected argument "stray"`},
		{[]string{"--rootfs", root, "--out", filepath.Join(dir, "no", "such", "dir.json")}, "--out"},
	} {
		_, _, code, msg := runAll(t, append([]string{"policy", "create", "runtime"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%v: exit %d %q, want one line with %q", tc.args, code, msg, tc.want)
		}
	}
}

// Repeatable flags take each value whole (a comma is part of a file name)
// and once.
func TestPolicyCreateRepeatedFlags(t *testing.T) {
	dir := t.TempDir()
	src, _ := os.ReadFile(testenv.Data(t, "ima", "keylime-ima-log-sha256"))
	a := filepath.Join(dir, "host,a.log")
	os.WriteFile(a, src, 0o644)
	other := imaNGLine(t, "sha256", bytes.Repeat([]byte{7}, 32), "/data")
	b := filepath.Join(dir, "host-b.log")
	os.WriteFile(b, append(append([]byte{}, src...), other...), 0o644)
	rp, _ := createPolicy(t, "--ima-log", a, "--ima-log", b)
	if len(rp.Digests["/data"]) != 2 || len(rp.Digests["boot_aggregate"]) != 1 {
		t.Fatalf("%v", rp.Digests)
	}
}
