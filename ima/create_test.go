package ima

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseExcludeList(t *testing.T) {
	list := "# Keylime exclude list\n\n/tmp/.*\r\n  /var/log/.*  \n#/not/a/pattern\nboot_aggregate\n/opt/[a-z]+/cache"
	got, err := ParseExcludeList([]byte(list), "ex.txt")
	want := []string{"/tmp/.*", "/var/log/.*", "boot_aggregate", "/opt/[a-z]+/cache"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("%q %v, want %q", got, err, want)
	}
	if got, err := ParseExcludeList(nil, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q %v", got, err)
	}
	for _, tc := range []struct {
		data string
		line int
		want string
	}{
		{"/ok\n/tmp/(?!keep)\n", 2, `"/tmp/(?!keep)" is not a regular expression`},
		{"# c\n\n[\n", 3, "missing closing ]"},
		{"/a\x00b\n", 1, "NUL"},
		{"/ok\n/\xff\n", 2, "invalid UTF-8"},
		{strings.Repeat("a", MaxExcludeLine+1), 1, "longer than"},
	} {
		_, err := ParseExcludeList([]byte(tc.data), "ex.txt")
		var ee *ExcludeListError
		if !errors.As(err, &ee) || ee.File != "ex.txt" || ee.Line != tc.line || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want ex.txt line %d saying %q", tc.data, err, tc.line, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "ex.txt:") {
			t.Errorf("%q: %v does not start with the file and line", tc.data, err)
		}
	}
}

// What the exclude-list reader accepts, a policy compiles and matches with;
// what it refuses is an *ExcludeListError naming a line of the input.
func FuzzParseExcludeList(f *testing.F) {
	f.Add([]byte("# comment\n/tmp/.*\n\n/var/log/.*\r\n"))
	f.Add([]byte("[\n"))
	f.Add([]byte("/a|/b\n(x)\n^/c$\n"))
	f.Add([]byte("\x00\xff\n#\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := ParseExcludeList(data, "f")
		if err != nil {
			var ee *ExcludeListError
			if !errors.As(err, &ee) || ee.Line < 1 || ee.Line > strings.Count(string(data), "\n")+1 {
				t.Fatalf("error %T %v", err, err)
			}
			return
		}
		for _, s := range list {
			if s == "" || s[0] == '#' || strings.TrimSpace(s) != s {
				t.Fatalf("pattern %q", s)
			}
		}
		rp := NewRuntimePolicy()
		rp.Excludes = list
		pol, err := CompilePolicy(rp)
		if err != nil {
			t.Fatalf("accepted %q, the policy refuses them: %v", list, err)
		}
		pol.Excluded([]byte("/usr/bin/x"))
	})
}

// writeRootfs lays out a small root filesystem: an executable script, an
// ELF-like library without x bits, a text file, a symbolic link, a FIFO,
// a directory an exclude pattern covers, and /var (skipped by default).
func writeRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"usr/bin", "usr/lib", "opt/app/cache", "var/lib/x"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		path, body string
		mode       os.FileMode
	}{
		{"usr/bin/tool", "#!/bin/sh\necho hi\n", 0o755},
		{"usr/lib/libx.so.1", "\x7fELF rest of a library", 0o644},
		{"usr/lib/notes.txt", "not code", 0o644},
		{"opt/app/run", "\x7fELF app", 0o755},
		{"opt/app/cache/gen.so", "\x7fELF generated", 0o755},
		{"var/lib/x/helper", "#!/bin/sh\n", 0o755},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.path), []byte(f.body), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("tool", filepath.Join(dir, "usr/bin/alias")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "usr/bin/fifo"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPolicyFromRootfsWith(t *testing.T) {
	dir := writeRootfs(t)
	ctx := context.Background()
	rp, err := PolicyFromRootfsWith(ctx, dir, RootfsOptions{Alg: SHA256, Skip: DefaultRootfsSkip, Excludes: []string{"/opt/app/cache/"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/usr/bin/tool":      "#!/bin/sh\necho hi\n",
		"/usr/lib/libx.so.1": "\x7fELF rest of a library",
		"/opt/app/run":       "\x7fELF app",
	}
	if len(rp.Digests) != len(want) {
		t.Fatalf("digests %v, want the paths of %v", rp.Digests, want)
	}
	for p, body := range want {
		if d := rp.Digests[p]; len(d) != 1 || d[0] != hex.EncodeToString(sha256Of([]byte(body))) {
			t.Errorf("%s: %v", p, d)
		}
	}
	// Other algorithms, no skips; a skipped file; the root given as a link.
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	rp, err = PolicyFromRootfsWith(ctx, link, RootfsOptions{Alg: SHA1, Skip: []string{"opt/app/run"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rp.Digests["/var/lib/x/helper"]; !ok || len(rp.Digests) != 4 || rp.Digests["/usr/bin/tool"][0] != hex.EncodeToString(sha1Of([]byte("#!/bin/sh\necho hi\n"))) {
		t.Fatalf("%v", rp.Digests)
	}
	// The old entry point skips the default directories.
	rp, err = PolicyFromRootfs(ctx, dir, SHA256)
	if _, ok := rp.Digests["/var/lib/x/helper"]; err != nil || ok || len(rp.Digests) != 4 {
		t.Fatalf("%v %v", err, rp.Digests)
	}
	if _, err := PolicyFromRootfsWith(ctx, dir, RootfsOptions{Alg: SM3}); !errors.Is(err, ErrUnsupportedHash) {
		t.Fatalf("sm3: %v", err)
	}
	if _, err := PolicyFromRootfsWith(ctx, dir, RootfsOptions{Alg: SHA256, Excludes: []string{"("}}); err == nil {
		t.Fatal("bad exclude accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := PolicyFromRootfsWith(cancelled, dir, RootfsOptions{Alg: SHA256}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// bootLog is a list whose entry 0 is the boot_aggregate of pcrs (SHA-256
// bank, PCRs 0-9) followed by one ima-ng entry per file.
func bootLog(t *testing.T, agg []byte, files map[string]string) []byte {
	t.Helper()
	td := specTemplateData(specDigestNG("sha256", agg), specName("boot_aggregate"))
	log := asciiLine(10, sha1Of(td), "ima-ng", "sha256:"+hex.EncodeToString(agg), "boot_aggregate")
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		d := sha256Of([]byte(files[p]))
		td := specTemplateData(specDigestNG("sha256", d), specName(p))
		log += asciiLine(10, sha1Of(td), "ima-ng", "sha256:"+hex.EncodeToString(d), p)
	}
	return []byte(log)
}

// A policy made from a root filesystem alone holds no boot_aggregate; a
// host's list whose entry 0 is the right boot_aggregate passes when the
// verifier has the quoted PCRs 0-9, called as verdict.Runtime calls Verify
// (state in the quoted banks, quoted PCR 10, BootPCRs at offset 0).
func TestRootfsPolicyAcceptsBootAggregateFromPCRs(t *testing.T) {
	dir := writeRootfs(t)
	rp, err := PolicyFromRootfsWith(context.Background(), dir, RootfsOptions{Alg: SHA256, Skip: DefaultRootfsSkip})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rp.Digests["boot_aggregate"]; ok {
		t.Fatal("a rootfs policy lists boot_aggregate")
	}
	pol := mustPolicy(t, rp)
	pcrs := map[int][]byte{}
	for i := 0; i < 10; i++ {
		pcrs[i] = sha256Of([]byte{byte(i), 'p'})
	}
	agg, err := BootAggregate(SHA256, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(log []byte, boot map[int][]byte) Result {
		t.Helper()
		rep, err := Replay(log, ParseOptions{}, ReplayOptions{}, SHA256)
		if err != nil {
			t.Fatal(err)
		}
		var opts VerifyOptions
		opts.MaxFailures = 64
		if boot != nil {
			opts.BootPCRs = map[Algorithm]map[int][]byte{SHA256: boot}
		}
		res, err := Verify(NewState(SHA256), log, map[Algorithm][]byte{SHA256: rep.PCR["sha256"]}, pol, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	files := map[string]string{"/usr/bin/tool": "#!/bin/sh\necho hi\n", "/usr/lib/libx.so.1": "\x7fELF rest of a library"}
	good := bootLog(t, agg, files)
	if res := verify(good, pcrs); !res.OK() || res.State.Entries != 3 {
		t.Fatalf("right boot_aggregate: %+v", res.Failures)
	}
	// Another boot's aggregate fails on entry 0, and so does one from a
	// bank the quote does not hold.
	res := verify(bootLog(t, sha256Of([]byte("other boot")), files), pcrs)
	if res.OK() || res.Failures[0].Entry != 0 || res.Failures[0].Rule != RuleBootAggregate {
		t.Fatalf("wrong boot_aggregate: %+v", res.Failures)
	}
	// A SHA-1 boot_aggregate (ima_hash sha1) cannot be checked against
	// SHA-256 PCRs, and the failure says so.
	td := specTemplateData(specDigestNG("sha1", sha1Of([]byte("agg"))), specName("boot_aggregate"))
	sha1Agg := []byte(asciiLine(10, sha1Of(td), "ima-ng", "sha1:"+hex.EncodeToString(sha1Of([]byte("agg"))), "boot_aggregate"))
	res = verify(sha1Agg, pcrs)
	if res.OK() || res.Failures[0].Rule != RuleBootAggregate || !strings.Contains(res.Failures[0].Detail, "quoted in other banks") {
		t.Fatalf("sha1 boot_aggregate: %+v", res.Failures)
	}
	// Without PCRs 0-9 (a verifier that quotes PCR 10 alone) entry 0 cannot
	// pass such a policy, and the failure says why.
	res = verify(good, nil)
	if res.FailureCount != 1 || res.Failures[0].Entry != 0 || !strings.Contains(res.Failures[0].Detail, "PCRs 0-9 were not quoted") {
		t.Fatalf("no boot PCRs: %+v", res.Failures)
	}
	// An offline check defers it.
	res, err = Verify(NewState(SHA1, SHA256), good, nil, pol, VerifyOptions{DeferBootAggregate: true})
	if err != nil || !res.OK() || !res.BootAggregateUnchecked {
		t.Fatalf("deferred: %v %+v", err, res)
	}
	// A policy from a log lists it, and so passes either way.
	fromLog, err := PolicyFromLog(good, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = Verify(NewState(SHA1, SHA256), good, nil, mustPolicy(t, fromLog), VerifyOptions{DeferBootAggregate: true})
	if err != nil || !res.OK() || res.BootAggregateUnchecked {
		t.Fatalf("log policy: %v %+v", err, res)
	}
}

// keyLine is an ima-buf entry measuring der into keyring.
func keyLine(keyring string, der []byte) string {
	td := specTemplateData(specDigestNG("sha256", sha256Of(der)), specName(keyring), der)
	return asciiLine(10, sha1Of(td), "ima-buf", "sha256:"+hex.EncodeToString(sha256Of(der)), keyring, hex.EncodeToString(der))
}

func TestPolicyFromLogKeyrings(t *testing.T) {
	a, b := newSigner(t, true), newSigner(t, false)
	certA := selfSigned(t, a)
	derB, _ := x509.MarshalPKIXPublicKey(b.key.Public())
	cmdline := []byte("BOOT_IMAGE=/vmlinuz ro")
	bufTD := specTemplateData(specDigestNG("sha256", sha256Of(cmdline)), specName("kexec-cmdline"), cmdline)
	log := []byte(keyLine(".ima", certA) + keyLine(".builtin_trusted_keys", derB) +
		asciiLine(10, sha1Of(bufTD), "ima-buf", "sha256:"+hex.EncodeToString(sha256Of(cmdline)), "kexec-cmdline", hex.EncodeToString(cmdline)) +
		sigLine(t, &a, "/usr/bin/signed", "a"))

	all, info, err := PolicyFromLogWith(log, LogPolicyOptions{})
	if err != nil || len(all.Keyrings) != 2 || len(all.IMABuf) != 1 || info.KeyringKeys[".ima"] != 1 || len(info.SkippedKeyrings) != 0 {
		t.Fatalf("%v %+v %+v", err, all, info)
	}
	if info.MainFileDigestAlg() != SHA256 || info.Entries != 4 || info.BootAggregate != "" {
		t.Fatalf("%+v", info)
	}
	if res, err := Verify(NewState(SHA1), log, nil, mustPolicy(t, all), VerifyOptions{}); err != nil || !res.OK() {
		t.Fatalf("own log: %v %+v", err, res.Failures)
	}
	one, info, err := PolicyFromLogWith(log, LogPolicyOptions{Keyrings: []string{".ima"}})
	if err != nil || len(one.Keyrings) != 1 || one.Keyrings[".ima"][0] != hex.EncodeToString(sha256Of(certA)) || !slices.Equal(info.SkippedKeyrings, []string{".builtin_trusted_keys"}) {
		t.Fatalf("%v %+v %+v", err, one.Keyrings, info)
	}
	// The key left out fails; the one taken vouches for the signed file
	// (which is also listed, as measured).
	res, _ := Verify(NewState(SHA1), log, nil, mustPolicy(t, one), VerifyOptions{})
	if res.FailureCount != 1 || res.Failures[0].Rule != RuleKeyring || res.Failures[0].Path != ".builtin_trusted_keys" {
		t.Fatalf("%+v", res.Failures)
	}
	ign, info, err := PolicyFromLogWith(log, LogPolicyOptions{IgnoredKeyrings: []string{".builtin_trusted_keys"}})
	if err != nil || len(ign.Keyrings) != 1 || len(info.SkippedKeyrings) != 0 {
		t.Fatalf("%v %+v %+v", err, ign.Keyrings, info)
	}
	star, _, _ := PolicyFromLogWith(log, LogPolicyOptions{IgnoredKeyrings: []string{"*"}})
	if len(star.Keyrings) != 0 || len(star.IMABuf) != 1 {
		t.Fatalf("%+v", star)
	}
}

func TestMergeAndNormalize(t *testing.T) {
	s1, s2 := newSigner(t, true), newSigner(t, false)
	k1, _, _ := KeyFromBytes(selfSigned(t, s1), "policy")
	k2, _, _ := KeyFromBytes(selfSigned(t, s2), "policy")
	keys1, _ := VerificationKeysJSON([]VerificationKey{k1})
	keys12, _ := VerificationKeysJSON([]VerificationKey{k2, k1})

	base := NewRuntimePolicy()
	base.Release = 7
	base.Digests["/usr/bin/a"] = []string{"BB", "aa"}
	base.Digests["/usr/bin/b"] = []string{"cc"}
	base.Excludes = []string{"/tmp/.*"}
	base.Keyrings[".ima"] = []string{"dd"}
	base.IMABuf["kexec-cmdline"] = []string{"ee"}
	base.IMA.IgnoredKeyrings = []string{".platform"}
	base.VerificationKeys = keys1

	rp := NewRuntimePolicy()
	if err := rp.Merge(base); err != nil {
		t.Fatal(err)
	}
	gen := NewRuntimePolicy()
	gen.Digests["/usr/bin/a"] = []string{"aa", "ff"}
	gen.Digests["/usr/bin/c"] = []string{"11"}
	gen.Excludes = []string{"/var/log/.*", "/tmp/.*"}
	gen.Keyrings[".ima"] = []string{"22"}
	gen.VerificationKeys = keys12
	if err := rp.Merge(gen); err != nil {
		t.Fatal(err)
	}
	rp.Normalize()
	if !slices.Equal(rp.Digests["/usr/bin/a"], []string{"aa", "bb", "ff"}) || !slices.Equal(rp.Digests["/usr/bin/b"], []string{"cc"}) || len(rp.Digests) != 3 {
		t.Fatalf("digests %v", rp.Digests)
	}
	if !slices.Equal(rp.Excludes, []string{"/tmp/.*", "/var/log/.*"}) || !slices.Equal(rp.Keyrings[".ima"], []string{"22", "dd"}) ||
		!slices.Equal(rp.IMABuf["kexec-cmdline"], []string{"ee"}) || !slices.Equal(rp.IMA.IgnoredKeyrings, []string{".platform"}) {
		t.Fatalf("%+v", rp)
	}
	keys, err := ParseVerificationKeys(rp.VerificationKeys)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys %v %v", keys, err)
	}
	// Merge keeps the receiver's scalars: the caller decides them.
	if rp.Release != 0 {
		t.Fatalf("release %d", rp.Release)
	}
	bad := NewRuntimePolicy()
	bad.VerificationKeys = "{"
	if err := rp.Merge(bad); err == nil {
		t.Fatal("bad keys merged")
	}
	if a := base.DigestAlg(); a != AlgUnknown { // 1-byte digests: no algorithm
		t.Fatalf("alg %s", a)
	}
	withAgg := NewRuntimePolicy()
	withAgg.Digests["boot_aggregate"] = []string{strings.Repeat("0", 40)}
	withAgg.Digests["/a"] = []string{strings.Repeat("1", 64), "sha256:" + strings.Repeat("2", 64)}
	if a := withAgg.DigestAlg(); a != SHA256 {
		t.Fatalf("alg %s", a)
	}
	withAgg.Digests["/b"] = []string{strings.Repeat("1", 40)}
	if a := withAgg.DigestAlg(); a != AlgUnknown {
		t.Fatalf("mixed: %s", a)
	}
}

func TestDiffPolicies(t *testing.T) {
	s1, s2 := newSigner(t, true), newSigner(t, false)
	k1, _, _ := KeyFromBytes(selfSigned(t, s1), "policy")
	k2, _, _ := KeyFromBytes(selfSigned(t, s2), "policy")
	keysA, _ := VerificationKeysJSON([]VerificationKey{k1})
	keysB, _ := VerificationKeysJSON([]VerificationKey{k2})
	a := NewRuntimePolicy()
	a.Digests["/same"] = []string{"aa", "bb"}
	a.Digests["/gone"] = []string{"cc"}
	a.Digests["/changed"] = []string{"dd", "ee"}
	a.Excludes = []string{"/tmp/.*", "/keep"}
	a.Keyrings[".ima"] = []string{"01"}
	a.VerificationKeys = keysA
	b := NewRuntimePolicy()
	b.Meta.Timestamp = "another day" // meta and release are not compared
	b.Release = 3
	b.Digests["/same"] = []string{"BB", "aa", "aa"}
	b.Digests["/new"] = []string{"ff"}
	b.Digests["/changed"] = []string{"ee", "11"}
	b.Excludes = []string{"/keep", "/var/.*"}
	b.IMABuf["kexec-cmdline"] = []string{"02"}
	b.IMA.IgnoredKeyrings = []string{"*"}
	b.IMA.LogHashAlg = "sha256"
	b.VerificationKeys = keysB

	d := DiffPolicies(mustPolicy(t, a), mustPolicy(t, b))
	if d.Identical {
		t.Fatal("identical")
	}
	if len(d.Digests.Added) != 1 || d.Digests.Added["/new"][0] != "ff" || len(d.Digests.Removed) != 1 || len(d.Digests.Removed["/gone"]) != 1 ||
		len(d.Digests.Changed) != 1 || !slices.Equal(d.Digests.Changed["/changed"].Added, []string{"11"}) || !slices.Equal(d.Digests.Changed["/changed"].Removed, []string{"dd"}) {
		t.Fatalf("digests %+v", d.Digests)
	}
	if !slices.Equal(d.Excludes.Added, []string{"/var/.*"}) || !slices.Equal(d.Excludes.Removed, []string{"/tmp/.*"}) {
		t.Fatalf("excludes %+v", d.Excludes)
	}
	if len(d.Keyrings.Removed) != 1 || len(d.IMABuf.Added) != 1 || !slices.Equal(d.IgnoredKeyrings.Added, []string{"*"}) || d.LogHashAlg == nil || d.LogHashAlg.From != "sha1" || d.LogHashAlg.To != "sha256" {
		t.Fatalf("%+v", d)
	}
	if len(d.VerificationKeys.Added) != 1 || len(d.VerificationKeys.Removed) != 1 || d.VerificationKeys.Removed[0].KeyID != hex.EncodeToString([]byte{byte(k1.KeyID >> 24), byte(k1.KeyID >> 16), byte(k1.KeyID >> 8), byte(k1.KeyID)}) {
		t.Fatalf("keys %+v (k1 %08x)", d.VerificationKeys, k1.KeyID)
	}
	c := d.Counts
	if c.PathsAdded != 1 || c.PathsRemoved != 1 || c.PathsChanged != 1 || c.ExcludesAdded != 1 || c.ExcludesRemove != 1 || c.Other != 6 {
		t.Fatalf("counts %+v", c)
	}
	lines := strings.Join(d.Lines(), "\n")
	for _, want := range []string{"- digests /gone: cc", "+ digests /new: ff", "~ digests /changed: +11 -dd", "+ excludes /var/.*", "- excludes /tmp/.*",
		"- keyrings .ima: 01", "+ ima-buf kexec-cmdline: 02", "+ ima.ignored_keyrings *", "~ ima.log_hash_alg: sha1 -> sha256", "+ verification-keys rsa-2048 key id", "- verification-keys ecdsa-P-256 key id"} {
		if !strings.Contains(lines, want) {
			t.Errorf("lines lack %q:\n%s", want, lines)
		}
	}
	// A policy and itself, and two spellings of the same policy.
	if d := DiffPolicies(mustPolicy(t, a), mustPolicy(t, a)); !d.Identical || len(d.Lines()) != 0 {
		t.Fatalf("self: %+v", d)
	}
	a2 := a
	a2.IMA.LogHashAlg = ""
	a2.Digests = map[string][]string{"/same": {"BB", "AA"}, "/gone": {"cc"}, "/changed": {"ee", "dd", "dd"}}
	if d := DiffPolicies(mustPolicy(t, a), mustPolicy(t, a2)); !d.Identical {
		t.Fatalf("respelt: %v", d.Lines())
	}
}

func TestReadVerificationKey(t *testing.T) {
	s := newSigner(t, true)
	s.keyID = 0x01020304
	cert := selfSigned(t, s)
	spki, _ := x509.MarshalPKIXPublicKey(s.key.Public())
	p8, _ := x509.MarshalPKCS8PrivateKey(s.key)
	r := newSigner(t, false)
	rsaPub, _ := r.key.Public().(*rsa.PublicKey)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edSPKI, _ := x509.MarshalPKIXPublicKey(edPriv.Public())
	enc := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

	for name, tc := range map[string]struct {
		data []byte
		id   uint32
	}{
		"cert PEM":  {enc("CERTIFICATE", cert), 0x01020304},
		"cert DER":  {cert, 0x01020304},
		"spki PEM":  {enc("PUBLIC KEY", spki), s.keyIDFromKey(t)},
		"spki DER":  {spki, s.keyIDFromKey(t)},
		"pkcs1 PEM": {enc("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(rsaPub)), r.keyID},
	} {
		k, err := ReadVerificationKey(tc.data)
		if err != nil || k.KeyID != tc.id || len(k.DER) == 0 {
			t.Errorf("%s: %v id %08x, want %08x", name, err, k.KeyID, tc.id)
		}
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"private PEM":  {enc("PRIVATE KEY", p8), "a private key"},
		"private DER":  {p8, "a private key"},
		"EC private":   {enc("EC PRIVATE KEY", []byte{1}), "a private key"},
		"other PEM":    {enc("X509 CRL", []byte{1}), "neither a CERTIFICATE nor a PUBLIC KEY"},
		"garbage":      {[]byte("hello"), "neither an X.509 certificate nor a public key"},
		"bad PKCS1":    {enc("RSA PUBLIC KEY", []byte{1}), "RSA PUBLIC KEY"},
		"ed25519":      {enc("PUBLIC KEY", edSPKI), "unsupported key type"},
		"empty":        {nil, "neither"},
		"ecdsa P-256?": {enc("PUBLIC KEY", mustECSPKI(t)), ""},
	} {
		_, err := ReadVerificationKey(tc.data)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// keyIDFromKey is the kernel's id of the signer's bare key.
func (s signer) keyIDFromKey(t *testing.T) uint32 {
	t.Helper()
	k, err := newKey(s.key.Public(), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return k.KeyID
}

func mustECSPKI(t *testing.T) []byte {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return der
}

// A key ReadVerificationKey accepts goes into a policy and reads back the
// same (Keylime's verification-keys format).
func FuzzReadVerificationKey(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	f.Add(spki)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte{0x30, 0}}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ReadVerificationKey(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		js, err := VerificationKeysJSON([]VerificationKey{key})
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseVerificationKeys(js)
		if err != nil || len(back) != 1 || !bytes.Equal(back[0].DER, key.DER) || (key.KeyID != 0 && back[0].KeyID != key.KeyID) {
			t.Fatalf("round trip: %v %+v", err, back)
		}
	})
}
