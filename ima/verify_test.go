package ima

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/internal/dsse"
)

// specReplay replays an ASCII ima-ng list from the spec helpers alone.
func specReplay(t *testing.T, data []byte) (sha1PCR, sha256PCR []byte) {
	sha1PCR, sha256PCR = make([]byte, 20), make([]byte, 32)
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		f := strings.SplitN(line, " ", 5)
		alg, hx, _ := strings.Cut(f[3], ":")
		td := specTemplateData(specDigestNG(alg, mustHex(t, hx)), specName(f[4]))
		if strings.Trim(f[1], "0") == "" {
			sha1PCR = extend(sha1Of, sha1PCR, ff(20))
			sha256PCR = extend(sha256Of, sha256PCR, ff(32))
			continue
		}
		sha1PCR = extend(sha1Of, sha1PCR, sha1Of(td))
		sha256PCR = extend(sha256Of, sha256PCR, sha256Of(td))
	}
	return sha1PCR, sha256PCR
}

func TestReplayRealLogs(t *testing.T) {
	for _, file := range []string{"rust-keylime-ascii_runtime_measurements", "keylime-ima-log-sha1", "keylime-ima-log-sha256", "keylime-ima-log-sha512"} {
		t.Run(file, func(t *testing.T) {
			data := readData(t, "ima", file)
			want1, want256 := specReplay(t, data)
			res, err := Replay(data, ParseOptions{}, ReplayOptions{}, SHA1, SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.PCR["sha1"], want1) || !bytes.Equal(res.PCR["sha256"], want256) {
				t.Fatalf("replay sha1 %x sha256 %x; spec %x %x", res.PCR["sha1"], res.PCR["sha256"], want1, want256)
			}
			if want := uint64(bytes.Count(data, []byte("\n"))); res.Entries != want {
				t.Fatalf("%d entries, want %d", res.Entries, want)
			}
		})
	}
}

// A violation extends 0xFF..FF; legacy kernels pad the SHA-1 digest (and
// the 0xFF violation digest) with zeros in wider banks.
func TestReplayViolationsAndPadding(t *testing.T) {
	data := readData(t, "ima", "tpm2-tss-sml-ima-sig-sha256-invalidated.bin")
	es, err := ParseAll(data, ParseOptions{})
	if err != nil || len(es) != 2 || !es[1].IsViolation() {
		t.Fatalf("%v %d", err, len(es))
	}
	th0 := es[0].TemplateHash // checked against its data in TestRealBinaryLogs
	td0 := es[0].TemplateData
	zero32 := make([]byte, 32)
	pad := func(b []byte) []byte { return append(append([]byte{}, b...), make([]byte, 12)...) }
	tests := []struct {
		name        string
		opts        ReplayOptions
		want1, want []byte
	}{
		{"per-bank", ReplayOptions{},
			extend(sha1Of, extend(sha1Of, make([]byte, 20), th0), ff(20)),
			extend(sha256Of, extend(sha256Of, zero32, sha256Of(td0)), ff(32))},
		{"padded sha1", ReplayOptions{PadSHA1: true},
			extend(sha1Of, extend(sha1Of, make([]byte, 20), th0), ff(20)),
			extend(sha256Of, extend(sha256Of, zero32, pad(th0)), pad(ff(20)))},
	}
	for _, tc := range tests {
		res, err := Replay(data, ParseOptions{}, tc.opts, SHA1, SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if res.Violations != 1 || !bytes.Equal(res.PCR["sha1"], tc.want1) || !bytes.Equal(res.PCR["sha256"], tc.want) {
			t.Fatalf("%s: %+v", tc.name, res)
		}
	}
}

func TestBootAggregate(t *testing.T) {
	pcrs1, pcrs256 := map[int][]byte{}, map[int][]byte{}
	var cat1, cat256 []byte
	for i := 0; i < 10; i++ {
		pcrs1[i] = sha1Of([]byte{byte(i)})
		pcrs256[i] = sha256Of([]byte{byte(i)})
		if i < 8 {
			cat1 = append(cat1, pcrs1[i]...)
		}
		cat256 = append(cat256, pcrs256[i]...)
	}
	got1, err1 := BootAggregate(SHA1, pcrs1)
	got256, err256 := BootAggregate(SHA256, pcrs256)
	if err1 != nil || err256 != nil || !bytes.Equal(got1, sha1Of(cat1)) || !bytes.Equal(got256, sha256Of(cat256)) {
		t.Fatalf("sha1 %x %v, sha256 %x %v", got1, err1, got256, err256)
	}
	delete(pcrs256, 9)
	if _, err := BootAggregate(SHA256, pcrs256); err == nil || !strings.Contains(err.Error(), "PCR 9") {
		t.Fatalf("missing PCR 9: %v", err)
	}

	// In Verify: the boot_aggregate entry must match the quoted PCRs.
	pcrs256[9] = sha256Of([]byte{9})
	line := func(d []byte) []byte {
		td := specTemplateData(specDigestNG("sha256", d), specName("boot_aggregate"))
		return []byte(asciiLine(10, sha1Of(td), "ima-ng", "sha256:"+hex.EncodeToString(d), "boot_aggregate"))
	}
	pol := mustPolicy(t, NewRuntimePolicy())
	opts := VerifyOptions{BootPCRs: map[Algorithm]map[int][]byte{SHA256: pcrs256}}
	if res, err := Verify(NewState(SHA1), line(got256), nil, pol, opts); err != nil || !res.OK() {
		t.Fatalf("good boot_aggregate: %v %+v", err, res.Failures)
	}
	res, err := Verify(NewState(SHA1), line(sha256Of([]byte("other"))), nil, pol, opts)
	if err != nil || res.OK() || res.Failures[0].Rule != RuleBootAggregate || res.Failures[0].Entry != 0 {
		t.Fatalf("bad boot_aggregate: %v %+v", err, res.Failures)
	}
}

func mustPolicy(t testing.TB, rp RuntimePolicy) *Policy {
	t.Helper()
	p, err := CompilePolicy(rp)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lineEnds returns the byte offset after each line.
func lineEnds(data []byte) []int {
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	return ends
}

// quoteAt is PCR 10 after the first n entries, as a TPM would report it.
func quoteAt(t *testing.T, data []byte, ends []int, n int) map[Algorithm][]byte {
	t.Helper()
	prefix := data[:0]
	if n > 0 {
		prefix = data[:ends[n-1]]
	}
	res, err := Replay(prefix, ParseOptions{}, ReplayOptions{}, SHA1, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		return map[Algorithm][]byte{SHA1: make([]byte, 20), SHA256: make([]byte, 32)}
	}
	return map[Algorithm][]byte{SHA1: res.PCR["sha1"], SHA256: res.PCR["sha256"]}
}

// TestVerifyIncremental walks the real 826-entry log the way a verifier
// does: a few entries per attestation, the quote sometimes behind the log.
func TestVerifyIncremental(t *testing.T) {
	data := readData(t, "ima", "rust-keylime-ascii_runtime_measurements")
	ends := lineEnds(data)
	rp, err := PolicyFromLog(data, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol := mustPolicy(t, rp)
	state := NewState(SHA1, SHA256)
	// Each step: send entries from state.Entries to sendTo, quote covers quoteAt.
	steps := []struct{ sendTo, quote int }{
		{1, 1},     // boot_aggregate alone
		{100, 100}, // caught up
		{300, 250}, // log ahead of the quote: 50 pending
		{300, 300}, // the pending 50 sent again, now quoted
		{310, 300}, // quote made no progress: nothing committed, still OK
		{826, 826},
	}
	for i, s := range steps {
		from := 0
		if state.Entries > 0 {
			from = ends[state.Entries-1]
		}
		before := state.Entries
		res, err := Verify(state, data[from:ends[s.sendTo-1]], quoteAt(t, data, ends, s.quote), pol, VerifyOptions{})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if !res.OK() {
			t.Fatalf("step %d: %+v", i, res.Failures)
		}
		if res.State.Entries != uint64(s.quote) || res.Committed != uint64(s.quote)-before || res.Pending != uint64(s.sendTo-s.quote) {
			t.Fatalf("step %d: state at %d, committed %d, pending %d", i, res.State.Entries, res.Committed, res.Pending)
		}
		state = res.State
	}
	want := quoteAt(t, data, ends, 826)
	if !bytes.Equal(state.PCR10["sha1"], want[SHA1]) || !bytes.Equal(state.PCR10["sha256"], want[SHA256]) {
		t.Fatalf("final state %x", state.PCR10)
	}

	// The state survives JSON (the verifier stores it).
	js, err := json.Marshal(state)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(js, &back); err != nil || back.Entries != 826 || !bytes.Equal(back.PCR10["sha256"], want[SHA256]) {
		t.Fatalf("JSON round trip: %v %s", err, js)
	}
}

func TestVerifyFailures(t *testing.T) {
	data := readData(t, "ima", "rust-keylime-ascii_runtime_measurements")
	ends := lineEnds(data)
	rp, err := PolicyFromLog(data, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all, _ := ParseAll(data, ParseOptions{})
	victim := all[42]
	vpath := string(victim.Path())
	vdig, _ := victim.Digest()
	full := quoteAt(t, data, ends, 826)

	t.Run("pcr mismatch", func(t *testing.T) {
		bad := map[Algorithm][]byte{SHA1: sha1Of([]byte("x")), SHA256: full[SHA256]}
		res, err := Verify(NewState(SHA1, SHA256), data, bad, mustPolicy(t, rp), VerifyOptions{})
		if err != nil || res.OK() || res.Failures[0].Rule != RulePCRMismatch || res.State.Entries != 0 {
			t.Fatalf("%v %+v", err, res)
		}
	})
	t.Run("path not in policy", func(t *testing.T) {
		p := rp
		p.Digests = cloneMap(rp.Digests)
		delete(p.Digests, vpath)
		res, err := Verify(NewState(SHA1, SHA256), data, full, mustPolicy(t, p), VerifyOptions{})
		if err != nil || res.OK() {
			t.Fatalf("%v %+v", err, res.Failures)
		}
		f := res.Failures[0]
		if f.Rule != RuleNotInPolicy || f.Entry != 42 || f.Path != vpath || f.Digest != vdig.String() || f.Line != 43 {
			t.Fatalf("%+v", f)
		}
		if res.State.Entries != 0 {
			t.Fatal("failed verification advanced the state")
		}
		// An exclude covering the path makes it pass.
		p.Excludes = []string{strings.ReplaceAll(vpath[:len(vpath)-2], ".", `\.`)}
		res, err = Verify(NewState(SHA1, SHA256), data, full, mustPolicy(t, p), VerifyOptions{})
		if err != nil || !res.OK() {
			t.Fatalf("excluded: %v %+v", err, res.Failures)
		}
	})
	t.Run("digest mismatch", func(t *testing.T) {
		p := rp
		p.Digests = cloneMap(rp.Digests)
		p.Digests[vpath] = []string{strings.Repeat("ab", 20)}
		res, _ := Verify(NewState(SHA1, SHA256), data, full, mustPolicy(t, p), VerifyOptions{})
		if res.OK() || res.Failures[0].Rule != RuleDigestMismatch || res.Failures[0].Entry != 42 {
			t.Fatalf("%+v", res.Failures)
		}
	})
	t.Run("tampered entry", func(t *testing.T) {
		// Change the file digest but keep the logged template hash.
		line := string(data[ends[41]:ends[42]])
		hx := hex.EncodeToString(vdig.Digest)
		tampered := bytes.Replace(data, []byte(line), []byte(strings.Replace(line, hx, strings.Repeat("0", 39)+"1", 1)), 1)
		res, err := Verify(NewState(SHA1, SHA256), tampered, full, mustPolicy(t, rp), VerifyOptions{})
		if err != nil || res.OK() {
			t.Fatalf("%v", err)
		}
		rules := map[Rule]bool{}
		for _, f := range res.Failures {
			rules[f.Rule] = true
			if f.Rule == RuleTemplateHash && (f.Entry != 42 || f.Path != vpath) {
				t.Fatalf("%+v", f)
			}
		}
		if !rules[RuleTemplateHash] || !rules[RuleDigestMismatch] || !rules[RulePCRMismatch] {
			t.Fatalf("rules %v", rules)
		}
	})
	t.Run("violation denied by default", func(t *testing.T) {
		v := readData(t, "ima", "keylime-ima-log-sha1") // boot_aggregate is a violation
		p, _ := PolicyFromLog(v, ParseOptions{})
		res, _ := Verify(NewState(SHA1), v, nil, mustPolicy(t, p), VerifyOptions{})
		if res.OK() || res.Failures[0].Rule != RuleViolation || res.Violations != 1 {
			t.Fatalf("%+v", res)
		}
		res, _ = Verify(NewState(SHA1), v, nil, mustPolicy(t, p), VerifyOptions{AllowViolations: true})
		if !res.OK() {
			t.Fatalf("%+v", res.Failures)
		}
	})
}

func cloneMap(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Keylime's policy-* files are the base policies of its policy-creation
// tests: they list /base_policy_data (or /rootfs_data), not the /data their
// sibling logs measure. Read unchanged, they must therefore reject those
// logs, naming the entries; merged with what the log shows they accept it.
func TestKeylimePolicies(t *testing.T) {
	for _, alg := range []string{"sha1", "sha256", "sha384", "sha512", "sm3_256"} {
		t.Run(alg, func(t *testing.T) {
			pol, err := ParsePolicy(readData(t, "policy", "keylime-policy-"+alg+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if pol.Paths() != 1 || pol.LogHashAlg() != SHA1 {
				t.Fatalf("paths %d log hash %s", pol.Paths(), pol.LogHashAlg())
			}
			log := readData(t, "ima", "keylime-ima-log-"+alg)
			popts := ParseOptions{}
			if alg == "sm3_256" {
				popts.TemplateHashAlg = SM3
			}
			opts := VerifyOptions{Parse: popts, AllowViolations: true}
			res, err := Verify(NewState(SHA1, SHA256), log, nil, pol, opts)
			if err != nil {
				t.Fatal(err)
			}
			var failed []string
			for _, f := range res.Failures {
				failed = append(failed, f.Path+"/"+string(f.Rule))
			}
			want := "/data/" + string(RuleNotInPolicy)
			if alg == "sha256" { // the only log whose boot_aggregate is not a violation
				want = "boot_aggregate/" + string(RuleNotInPolicy) + " " + want
			}
			if strings.Join(failed, " ") != want {
				t.Fatalf("failures %v, want %s", failed, want)
			}
			// The base policy merged with the log's own entries passes.
			gen, err := PolicyFromLog(log, popts)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range pol.Source.Digests {
				gen.Digests[k] = v
			}
			res, err = Verify(NewState(SHA1, SHA256), log, nil, mustPolicy(t, gen), opts)
			if err != nil || !res.OK() {
				t.Fatalf("merged: %v %+v", err, res.Failures)
			}
		})
	}
}

// Keylime's runtime-policy test file, plain and in DSSE envelopes, reads
// the same; its boot_aggregate digest carries an algorithm prefix.
func TestKeylimeRuntimePolicyFiles(t *testing.T) {
	plain, err := ParsePolicy(readData(t, "policy", "keylime-runtime-policy-test.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Source.Keyrings[".ima"]) != 1 || plain.Paths() != len(plain.Source.Digests) {
		t.Fatalf("%+v", plain.Source.Keyrings)
	}
	ba := plain.Source.Digests["boot_aggregate"][0]
	d := mustHex(t, strings.TrimPrefix(ba, "sha256:"))
	if _, ok := match(plain.digests, []byte("boot_aggregate"), SHA256, d); !ok {
		t.Fatal("prefixed boot_aggregate digest does not match")
	}
	if _, ok := match(plain.digests, []byte("boot_aggregate"), SHA1, d); ok {
		t.Fatal("prefixed digest matched another algorithm")
	}
	keys, err := dsse.ParsePublicKeys(readData(t, "policy", "keylime-runtime-policy-pubkey.pub"), "keylime-runtime-policy-pubkey.pub")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := ParseSignedPolicy(readData(t, "policy", "keylime-runtime-policy-test-signed.json"), keys)
	if err != nil {
		t.Fatal(err)
	}
	if signed.Paths() != plain.Paths() {
		t.Fatalf("signed policy has %d paths, plain %d", signed.Paths(), plain.Paths())
	}
}

// --- signatures ---

type signer struct {
	key   crypto.Signer
	keyID uint32
}

func (s signer) sign(t *testing.T, digest []byte) []byte {
	var body []byte
	var err error
	switch k := s.key.(type) {
	case *rsa.PrivateKey:
		body, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest)
	case *ecdsa.PrivateKey:
		body, err = ecdsa.SignASN1(rand.Reader, k, digest)
	}
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{xattrDigsig, 2, 4}
	hdr = binary.BigEndian.AppendUint32(hdr, s.keyID)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(body)))
	return append(hdr, body...)
}

func newSigner(t *testing.T, ec bool) signer {
	var k crypto.Signer
	var err error
	if ec {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's id for a bare key: SHA-1 of the PKCS#1 key or EC point.
	var raw []byte
	switch p := k.Public().(type) {
	case *rsa.PublicKey:
		raw = x509.MarshalPKCS1PublicKey(p)
	case *ecdsa.PublicKey:
		e, _ := p.ECDH()
		raw = e.Bytes()
	}
	id := binary.BigEndian.Uint32(sha1Of(raw)[16:])
	return signer{key: k, keyID: id}
}

func sigLine(t *testing.T, s *signer, path, content string) string {
	d := sha256Of([]byte(content))
	var sig []byte
	if s != nil {
		sig = s.sign(t, d)
	}
	td := specTemplateData(specDigestNG("sha256", d), specName(path), sig)
	return asciiLine(10, sha1Of(td), "ima-sig", "sha256:"+hex.EncodeToString(d), path, hex.EncodeToString(sig))
}

func TestSignatures(t *testing.T) {
	for _, ec := range []bool{false, true} {
		name := "rsa"
		if ec {
			name = "ecdsa"
		}
		t.Run(name, func(t *testing.T) {
			good, other := newSigner(t, ec), newSigner(t, ec)
			der, _ := x509.MarshalPKIXPublicKey(good.key.Public())
			pub, _ := x509.ParsePKIXPublicKey(der)
			vk, err := newKey(pub, der, "policy")
			if err != nil || vk.KeyID != good.keyID {
				t.Fatalf("key id %08x, want %08x: %v", vk.KeyID, good.keyID, err)
			}
			keys, err := VerificationKeysJSON([]VerificationKey{vk})
			if err != nil {
				t.Fatal(err)
			}
			rp := NewRuntimePolicy()
			rp.VerificationKeys = keys
			pol := mustPolicy(t, rp)
			log := sigLine(t, &good, "/usr/bin/signed", "a") + sigLine(t, &other, "/usr/bin/forged", "b") + sigLine(t, nil, "/usr/bin/unsigned", "c")
			res, err := Verify(NewState(SHA1), []byte(log), nil, pol, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.FailureCount != 2 || res.Failures[0].Path != "/usr/bin/forged" || res.Failures[1].Path != "/usr/bin/unsigned" {
				t.Fatalf("%+v", res.Failures)
			}
			if !strings.Contains(res.Failures[0].Detail, "signature") {
				t.Fatalf("detail %q", res.Failures[0].Detail)
			}
		})
	}
}

func selfSigned(t *testing.T, s signer) []byte {
	skid := binary.BigEndian.AppendUint32([]byte{1, 2, 3, 4}, s.keyID)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ima signing"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.key.Public(), s.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A key measured into the .ima keyring (an ima-buf entry) is trusted once
// the policy's "keyrings" allows it, also in later attestations.
func TestKeyringLearnedFromLog(t *testing.T) {
	s := newSigner(t, false)
	s.keyID = 0x0badcafe // certificates name keys by their subject key id
	cert := selfSigned(t, s)
	bufTD := specTemplateData(specDigestNG("sha256", sha256Of(cert)), specName(".ima"), cert)
	keyLine := asciiLine(10, sha1Of(bufTD), "ima-buf", "sha256:"+hex.EncodeToString(sha256Of(cert)), ".ima", hex.EncodeToString(cert))
	first := keyLine + sigLine(t, &s, "/usr/bin/a", "a")
	second := sigLine(t, &s, "/usr/bin/b", "b")

	rp := NewRuntimePolicy()
	rp.Keyrings[".ima"] = []string{hex.EncodeToString(sha256Of(cert))}
	pol := mustPolicy(t, rp)
	res, err := Verify(NewState(SHA1), []byte(first), nil, pol, VerifyOptions{})
	if err != nil || !res.OK() || len(res.State.Keys) != 1 || res.State.Keys[0].KeyID != s.keyID {
		t.Fatalf("%v %+v", err, res)
	}
	res, err = Verify(res.State, []byte(second), nil, pol, VerifyOptions{})
	if err != nil || !res.OK() || res.State.Entries != 3 {
		t.Fatalf("second attestation: %v %+v", err, res)
	}
	// Without the keyrings entry the key is refused, and so is what it signed.
	res, _ = Verify(NewState(SHA1), []byte(first), nil, mustPolicy(t, NewRuntimePolicy()), VerifyOptions{})
	if res.FailureCount != 2 || res.Failures[0].Rule != RuleKeyring || res.Failures[1].Rule != RuleNotInPolicy {
		t.Fatalf("%+v", res.Failures)
	}
	// An ignored keyring is not judged (and its keys not trusted).
	rp2 := NewRuntimePolicy()
	rp2.IMA.IgnoredKeyrings = []string{".ima"}
	res, _ = Verify(NewState(SHA1), []byte(keyLine), nil, mustPolicy(t, rp2), VerifyOptions{})
	if !res.OK() || len(res.State.Keys) != 0 {
		t.Fatalf("ignored keyring: %+v", res)
	}
}

func TestIMABufPolicy(t *testing.T) {
	buf := []byte("BOOT_IMAGE=/vmlinuz ro")
	d := sha256Of(buf)
	td := specTemplateData(specDigestNG("sha256", d), specName("kexec-cmdline"), buf)
	line := asciiLine(10, sha1Of(td), "ima-buf", "sha256:"+hex.EncodeToString(d), "kexec-cmdline", hex.EncodeToString(buf))
	rp := NewRuntimePolicy()
	res, _ := Verify(NewState(SHA1), []byte(line), nil, mustPolicy(t, rp), VerifyOptions{})
	if res.OK() || res.Failures[0].Rule != RuleNotInPolicy || res.Failures[0].Path != "kexec-cmdline" {
		t.Fatalf("%+v", res.Failures)
	}
	rp.IMABuf["kexec-cmdline"] = []string{hex.EncodeToString(d)}
	if res, _ := Verify(NewState(SHA1), []byte(line), nil, mustPolicy(t, rp), VerifyOptions{}); !res.OK() {
		t.Fatalf("%+v", res.Failures)
	}
	// Generation puts it in the same place.
	gen, err := PolicyFromLog([]byte(line), ParseOptions{})
	if err != nil || len(gen.IMABuf["kexec-cmdline"]) != 1 || len(gen.Digests) != 0 {
		t.Fatalf("%v %+v", err, gen)
	}
}

func TestVerifyBadState(t *testing.T) {
	data := readData(t, "ima", "keylime-ima-log-sha256")
	tests := []struct {
		name   string
		state  State
		quoted map[Algorithm][]byte
	}{
		{"bank not tracked", NewState(SHA1), map[Algorithm][]byte{SHA256: make([]byte, 32)}},
		{"wrong quote size", NewState(SHA1), map[Algorithm][]byte{SHA1: make([]byte, 5)}},
		{"unknown bank", State{PCR10: map[string]HexBytes{"md4": {1}}}, nil},
		{"entries without PCRs", State{Entries: 3}, nil},
		{"bad PCR size", State{PCR10: map[string]HexBytes{"sha1": {1}}}, nil},
	}
	for _, tc := range tests {
		if _, err := Verify(tc.state, data, tc.quoted, nil, VerifyOptions{}); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	// A parse error is an error, not a failure.
	if _, err := Verify(NewState(SHA1), []byte("10 zz ima-ng x y\n"), nil, nil, VerifyOptions{}); err == nil {
		t.Error("parse error not returned")
	}
}
