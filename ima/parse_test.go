package ima

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestRealASCIILogs parses the real ASCII logs and checks every entry two
// ways: the parser's template data against the spec helpers' reading of the
// same line, and the logged template hash against the recomputed one.
func TestRealASCIILogs(t *testing.T) {
	tests := []struct {
		file string
		alg  Algorithm // file digest algorithm of the non-boot entries
	}{
		{"rust-keylime-ascii_runtime_measurements", SHA1},
		{"rust-keylime-ima_log.txt", SHA256},
		{"keylime-ima-log-sha1", SHA1},
		{"keylime-ima-log-sha256", SHA256},
		{"keylime-ima-log-sha384", SHA384},
		{"keylime-ima-log-sha512", SHA512},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := readData(t, "ima", tc.file)
			lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
			p := NewParser(data, ParseOptions{})
			n := 0
			for p.Next() {
				e := p.Entry()
				f := strings.SplitN(lines[n], " ", 5)
				alg, hx, _ := strings.Cut(f[3], ":")
				want := specTemplateData(specDigestNG(alg, mustHex(t, hx)), specName(f[4]))
				if !bytes.Equal(e.TemplateData, want) {
					t.Fatalf("entry %d: template data\n got %x\nwant %x", n, e.TemplateData, want)
				}
				if e.Index != uint64(n) || e.Line != n+1 || e.PCR != 10 || e.TemplateName != "ima-ng" {
					t.Fatalf("entry %d: index %d line %d pcr %d template %q", n, e.Index, e.Line, e.PCR, e.TemplateName)
				}
				if err := e.CheckTemplateHash(); err != nil {
					t.Fatalf("entry %d: %v", n, err)
				}
				d, ok := e.Digest()
				if !ok || d.String() != f[3] || string(e.Path()) != f[4] {
					t.Fatalf("entry %d: digest %v path %q, line %q", n, d, e.Path(), lines[n])
				}
				if n > 0 && d.Alg != tc.alg {
					t.Fatalf("entry %d: digest algorithm %s, want %s", n, d.Alg, tc.alg)
				}
				n++
			}
			if err := p.Err(); err != nil {
				t.Fatal(err)
			}
			if n != len(lines) {
				t.Fatalf("parsed %d entries, file has %d lines", n, len(lines))
			}
		})
	}
}

// The README says the rust-keylime log has 826 entries.
func TestRealLogEntryCount(t *testing.T) {
	entries, err := ParseAll(readData(t, "ima", "rust-keylime-ascii_runtime_measurements"), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 826 {
		t.Fatalf("%d entries, the README says 826", len(entries))
	}
}

// Keylime's sm3 test log carries SM3 template digests (64 hex digits). Read
// as SHA-256 they do not match; declared SM3 they cannot be computed and say
// so.
func TestSM3Log(t *testing.T) {
	data := readData(t, "ima", "keylime-ima-log-sm3_256")
	p := NewParser(data, ParseOptions{TemplateHashAlg: SM3})
	var got []error
	for p.Next() {
		e := p.Entry()
		d, ok := e.Digest()
		if !ok || d.Alg != SM3 || len(d.Digest) != 32 {
			t.Fatalf("entry %d: digest %+v", e.Index, d)
		}
		if e.TemplateHashAlg != SM3 {
			t.Fatalf("entry %d: template hash alg %s", e.Index, e.TemplateHashAlg)
		}
		got = append(got, e.CheckTemplateHash())
	}
	if p.Err() != nil || len(got) != 2 {
		t.Fatalf("err %v, %d entries", p.Err(), len(got))
	}
	if got[0] != nil { // boot_aggregate's digest is all zeros: a violation
		t.Fatalf("violation entry: %v", got[0])
	}
	if !errors.Is(got[1], ErrUnsupportedHash) {
		t.Fatalf("sm3 template hash: %v, want ErrUnsupportedHash", got[1])
	}
	// Without the hint, 32 bytes read as sha256 and mismatch.
	p = NewParser(data, ParseOptions{})
	p.Next()
	p.Next()
	var the *TemplateHashError
	if err := p.Entry().CheckTemplateHash(); !errors.As(err, &the) || the.Index != 1 || the.Path != "/data" {
		t.Fatalf("as sha256: %v", err)
	}
	// Replay still works: the banks hash the template data themselves.
	res, err := Replay(data, ParseOptions{TemplateHashAlg: SM3}, ReplayOptions{}, SHA1)
	if err != nil || res.Entries != 2 || res.Unchecked != 1 || res.Violations != 1 {
		t.Fatalf("replay %+v %v", res, err)
	}
}

// TestRealBinaryLogs parses the tpm2-tss binary logs. Three of them end in
// a partial entry (a stray byte, or the start of an entry): the parser
// returns every whole entry, then an error naming the byte offset.
func TestRealBinaryLogs(t *testing.T) {
	tests := []struct {
		file       string
		template   string
		violations int
		errAt      int64 // byte offset of the partial tail, -1 when whole
	}{
		{"tpm2-tss-sml-ima-sha1.bin", "ima", 0, -2},
		{"tpm2-tss-sml-ima-ng-sha1.bin", "ima-ng", 0, -2},
		{"tpm2-tss-sml-ima-sig-sha256.bin", "ima-sig", 0, -2},
		{"tpm2-tss-sml-ima-sha1-invalidated.bin", "ima", 1, -1},
		{"tpm2-tss-sml-ima-sig-sha256-invalidated.bin", "ima-sig", 1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := readData(t, "ima", tc.file)
			p := NewParser(data, ParseOptions{})
			if p.Format() != FormatBinary {
				t.Fatalf("detected %s", p.Format())
			}
			n, viol, end := 0, 0, 0
			for p.Next() {
				e := p.Entry()
				if e.TemplateName != tc.template || e.PCR != 10 {
					t.Fatalf("entry %d: template %q pcr %d", n, e.TemplateName, e.PCR)
				}
				if int(e.Offset) != end {
					t.Fatalf("entry %d at offset %d, previous ended at %d", n, e.Offset, end)
				}
				if err := e.CheckTemplateHash(); err != nil {
					t.Fatalf("entry %d: %v", n, err)
				}
				if e.IsViolation() {
					viol++
				}
				// Round trip through the ASCII form: the kernel's two
				// renderings of one entry must hash alike.
				line := AppendASCII(nil, e)
				back, err := ParseAll(line, ParseOptions{})
				if err != nil || len(back) != 1 || !bytes.Equal(back[0].TemplateData, e.TemplateData) {
					t.Fatalf("entry %d: ASCII round trip of %q: %v", n, line, err)
				}
				// And back to binary, byte for byte.
				if bin := AppendBinary(nil, e, binary.LittleEndian); !bytes.Equal(bin, data[e.Offset:p.Offset()]) {
					t.Fatalf("entry %d: binary re-encoding differs", n)
				}
				end = p.Offset()
				n++
			}
			if n == 0 || viol != tc.violations {
				t.Fatalf("%d entries, %d violations; want %d violations", n, viol, tc.violations)
			}
			err := p.Err()
			if tc.errAt == -1 {
				if err != nil || end != len(data) {
					t.Fatalf("err %v, consumed %d of %d bytes", err, end, len(data))
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Offset < int64(end) || pe.Entry != uint64(n) || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("tail at %d of %d: err %v", end, len(data), err)
			}
		})
	}
}

// The binary "ima-ng invalidated" log is corrupt on purpose: it claims more
// template data than it holds.
func TestRealBinaryCorrupt(t *testing.T) {
	data := readData(t, "ima", "tpm2-tss-sml-ima-ng-sha1-invalidated.bin")
	_, err := ParseAll(data, ParseOptions{})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Field != "template-data" || pe.Entry != 0 {
		t.Fatalf("err %v", err)
	}
}

// The same measurement in two real logs (ASCII from rust-keylime, binary from
// tpm2-tss) must give the same template digest.
func TestBootAggregateAcrossLogs(t *testing.T) {
	a, err := ParseAll(readData(t, "ima", "rust-keylime-ascii_runtime_measurements"), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := NewParser(readData(t, "ima", "tpm2-tss-sml-ima-ng-sha1.bin"), ParseOptions{})
	if !p.Next() {
		t.Fatal(p.Err())
	}
	b := p.Entry()
	if !bytes.Equal(a[0].TemplateData, b.TemplateData) || !bytes.Equal(a[0].TemplateHash, b.TemplateHash) {
		t.Fatalf("boot_aggregate differs: %x vs %x", a[0].TemplateHash, b.TemplateHash)
	}
}

// TestTemplates builds one entry of every template by hand, from the spec,
// in both forms, and checks what the parser makes of it.
func TestTemplates(t *testing.T) {
	d1 := sha1Of([]byte("file"))
	d256 := sha256Of([]byte("file"))
	d384 := make([]byte, 48)
	d512 := make([]byte, 64)
	for i := range d512 {
		d512[i] = byte(i + 1)
		if i < 48 {
			d384[i] = byte(2*i + 1)
		}
	}
	dsm3 := bytes.Repeat([]byte{0x5a}, 32)
	sig := append([]byte{3, 2, 4, 0xde, 0xad, 0xbe, 0xef, 0, 3}, 1, 2, 3)
	buf := []byte("root=/dev/sda1 ro")
	uid := le32(1000)
	mode := []byte{0xed, 0x81} // 0100755 little-endian

	type tc struct {
		name     string
		template string
		fields   [][]byte // hashed field data, in order
		ascii    []string // ASCII rendering of each field
		path     string
		digest   string // FileDigest.String()
		sig      []byte
		buf      []byte
	}
	tests := []tc{
		{"ima-ng sha1", "ima-ng", [][]byte{specDigestNG("sha1", d1), specName("/bin/ls")},
			[]string{"sha1:" + hex.EncodeToString(d1), "/bin/ls"}, "/bin/ls", "sha1:" + hex.EncodeToString(d1), nil, nil},
		{"ima-ng sha256", "ima-ng", [][]byte{specDigestNG("sha256", d256), specName("/bin/ls")},
			[]string{"sha256:" + hex.EncodeToString(d256), "/bin/ls"}, "/bin/ls", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"ima-ng sha384", "ima-ng", [][]byte{specDigestNG("sha384", d384), specName("/x")},
			[]string{"sha384:" + hex.EncodeToString(d384), "/x"}, "/x", "sha384:" + hex.EncodeToString(d384), nil, nil},
		{"ima-ng sha512", "ima-ng", [][]byte{specDigestNG("sha512", d512), specName("/x")},
			[]string{"sha512:" + hex.EncodeToString(d512), "/x"}, "/x", "sha512:" + hex.EncodeToString(d512), nil, nil},
		{"ima-ng sm3", "ima-ng", [][]byte{specDigestNG("sm3", dsm3), specName("/x")},
			[]string{"sm3:" + hex.EncodeToString(dsm3), "/x"}, "/x", "sm3:" + hex.EncodeToString(dsm3), nil, nil},
		{"ima-ng name with spaces", "ima-ng", [][]byte{specDigestNG("sha256", d256), specName("/home/a b/c d")},
			[]string{"sha256:" + hex.EncodeToString(d256), "/home/a b/c d"}, "/home/a b/c d", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"ima-ngv2", "ima-ngv2", [][]byte{specDigestNG("ima:sha256", d256), specName("/usr/bin/x")},
			[]string{"ima:sha256:" + hex.EncodeToString(d256), "/usr/bin/x"}, "/usr/bin/x", "ima:sha256:" + hex.EncodeToString(d256), nil, nil},
		{"ima-sig with signature", "ima-sig", [][]byte{specDigestNG("sha256", d256), specName("/bin/a b"), sig},
			[]string{"sha256:" + hex.EncodeToString(d256), "/bin/a b", hex.EncodeToString(sig)}, "/bin/a b", "sha256:" + hex.EncodeToString(d256), sig, nil},
		{"ima-sig empty signature", "ima-sig", [][]byte{specDigestNG("sha1", d1), specName("/init"), {}},
			[]string{"sha1:" + hex.EncodeToString(d1), "/init", ""}, "/init", "sha1:" + hex.EncodeToString(d1), nil, nil},
		{"ima-sigv2", "ima-sigv2", [][]byte{specDigestNG("verity:sha256", d256), specName("/v"), sig},
			[]string{"verity:sha256:" + hex.EncodeToString(d256), "/v", hex.EncodeToString(sig)}, "/v", "verity:sha256:" + hex.EncodeToString(d256), sig, nil},
		{"ima-buf", "ima-buf", [][]byte{specDigestNG("sha256", sha256Of(buf)), specName("kexec-cmdline"), buf},
			[]string{"sha256:" + hex.EncodeToString(sha256Of(buf)), "kexec-cmdline", hex.EncodeToString(buf)}, "kexec-cmdline", "sha256:" + hex.EncodeToString(sha256Of(buf)), nil, buf},
		{"ima-modsig empty", "ima-modsig", [][]byte{specDigestNG("sha256", d256), specName("/lib/m.ko"), {}, {}, {}},
			[]string{"sha256:" + hex.EncodeToString(d256), "/lib/m.ko", "", "", ""}, "/lib/m.ko", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"ima-modsig with modsig", "ima-modsig", [][]byte{specDigestNG("sha256", d256), specName("/lib/m.ko"), {}, specDigestNG("sha256", d256), {0x30, 0x82}},
			[]string{"sha256:" + hex.EncodeToString(d256), "/lib/m.ko", "", "sha256:" + hex.EncodeToString(d256), "3082"}, "/lib/m.ko", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"evm-sig", "evm-sig", [][]byte{specDigestNG("sha256", d256), specName("/etc/x"), {5, 2}, []byte("security.ima|security.evm"), le32(3), {1, 2, 3}, uid, uid, mode},
			[]string{"sha256:" + hex.EncodeToString(d256), "/etc/x", "0502", "security.ima|security.evm", "03000000", "010203", "1000", "1000", "33261"}, "/etc/x", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"evm-sig without file data", "evm-sig", [][]byte{specDigestNG("sha256", d256), specName("/etc/x"), {}, {}, {}, {}, {}, {}, {}},
			[]string{"sha256:" + hex.EncodeToString(d256), "/etc/x", "", "", "", "", "", "", ""}, "/etc/x", "sha256:" + hex.EncodeToString(d256), nil, nil},
		{"custom format template", "d-ng|n-ng|sig", [][]byte{specDigestNG("sha256", d256), specName("/c"), {}},
			[]string{"sha256:" + hex.EncodeToString(d256), "/c", ""}, "/c", "sha256:" + hex.EncodeToString(d256), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td := specTemplateData(tc.fields...)
			th := sha1Of(td)
			ascii := asciiLine(10, th, tc.template, tc.ascii...)
			bin := specBinaryEntry(10, th, tc.template, td)
			for _, in := range []struct {
				name string
				data []byte
			}{{"ascii", []byte(ascii)}, {"binary", bin}} {
				entries, err := ParseAll(in.data, ParseOptions{})
				if err != nil {
					t.Fatalf("%s: %v\n%q", in.name, err, in.data)
				}
				e := &entries[0]
				if e.TemplateName != tc.template || !bytes.Equal(e.TemplateData, td) {
					t.Fatalf("%s: template %q data\n got %x\nwant %x", in.name, e.TemplateName, e.TemplateData, td)
				}
				if err := e.CheckTemplateHash(); err != nil {
					t.Fatalf("%s: %v", in.name, err)
				}
				d, _ := e.Digest()
				if string(e.Path()) != tc.path || d.String() != tc.digest {
					t.Fatalf("%s: path %q digest %s", in.name, e.Path(), d)
				}
				if !bytes.Equal(e.Signature(), tc.sig) || !bytes.Equal(e.Buffer(), tc.buf) {
					t.Fatalf("%s: sig %x buf %q", in.name, e.Signature(), e.Buffer())
				}
				if got := string(AppendASCII(nil, e)); got != ascii {
					t.Fatalf("%s: rendered\n%q\nwant\n%q", in.name, got, ascii)
				}
			}
		})
	}
}

// The legacy 'ima' template hashes the SHA-1 digest and the name padded to
// 256 bytes, and its binary form has no template data length.
func TestTemplateIMA(t *testing.T) {
	d := sha1Of([]byte("x"))
	name := "/usr/lib/a b.so"
	padded := append(append(append([]byte{}, d...), name...), make([]byte, 256-len(name))...)
	th := sha1Of(padded)
	ascii := asciiLine(10, th, "ima", hex.EncodeToString(d), name)
	bin := le32(10)
	bin = append(bin, th...)
	bin = append(bin, le32(3)...)
	bin = append(bin, "ima"...)
	bin = append(bin, d...)
	bin = append(bin, le32(len(name))...)
	bin = append(bin, name...)
	for _, in := range [][]byte{[]byte(ascii), bin} {
		es, err := ParseAll(in, ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e := &es[0]
		if err := e.CheckTemplateHash(); err != nil || string(e.Path()) != name {
			t.Fatalf("%v path %q", err, e.Path())
		}
		if fd, _ := e.Digest(); fd.Alg != SHA1 || !bytes.Equal(fd.Digest, d) {
			t.Fatalf("digest %+v", fd)
		}
		if !bytes.Equal(AppendBinary(nil, e, binary.LittleEndian), bin) {
			t.Fatal("binary re-encoding differs")
		}
	}
}

// A big-endian host writes (and hashes) every length in its own order.
func TestBigEndianBinary(t *testing.T) {
	be := func(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }
	dg := specDigestNG("sha256", sha256Of([]byte("be")))
	nm := specName("/be")
	td := append(append(append(be(len(dg)), dg...), be(len(nm))...), nm...)
	th := sha1Of(td)
	data := be(10)
	data = append(data, th...)
	data = append(data, be(6)...)
	data = append(data, "ima-ng"...)
	data = append(data, be(len(td))...)
	data = append(data, td...)
	p := NewParser(data, ParseOptions{})
	if p.Format() != FormatBinaryBigEndian || !p.Next() {
		t.Fatalf("format %s err %v", p.Format(), p.Err())
	}
	if e := p.Entry(); e.PCR != 10 || string(e.Path()) != "/be" || e.CheckTemplateHash() != nil {
		t.Fatalf("entry %+v: %v", e, e.CheckTemplateHash())
	}
	if !bytes.Equal(AppendBinary(nil, p.Entry(), binary.BigEndian), data) {
		t.Fatal("big-endian re-encoding differs")
	}
}

// Newer kernels export per-bank lists whose template digest is the bank's;
// the parser finds the digest size from the first entry.
func TestPerBankBinaryList(t *testing.T) {
	var data []byte
	for _, name := range []string{"/a", "/b"} {
		td := specTemplateData(specDigestNG("sha256", sha256Of([]byte(name))), specName(name))
		data = append(data, specBinaryEntry(10, sha256Of(td), "ima-ng", td)...)
	}
	es, err := ParseAll(data, ParseOptions{})
	if err != nil || len(es) != 2 {
		t.Fatalf("%d entries: %v", len(es), err)
	}
	for _, e := range es {
		if e.TemplateHashAlg != SHA256 || e.CheckTemplateHash() != nil {
			t.Fatalf("entry %d: %s %v", e.Index, e.TemplateHashAlg, e.CheckTemplateHash())
		}
	}
}

// An unknown template parses from binary (its hash still checks) and is
// refused from ASCII, where its fields cannot be rebuilt; both name it.
func TestUnknownTemplate(t *testing.T) {
	td := specTemplateData([]byte("abc"), []byte("de"))
	bin := specBinaryEntry(10, sha1Of(td), "my-template", td)
	es, err := ParseAll(bin, ParseOptions{})
	if err != nil || es[0].Template != nil || es[0].TemplateName != "my-template" || es[0].CheckTemplateHash() != nil {
		t.Fatalf("binary: %v %+v", err, es)
	}
	_, err = ParseAll([]byte(asciiLine(10, sha1Of(td), "my-template", "616263", "6465")), ParseOptions{})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 1 || !strings.Contains(err.Error(), `"my-template"`) {
		t.Fatalf("ascii: %v", err)
	}
}

// TestBadInput: every kind of damage is an error naming the place.
func TestBadInput(t *testing.T) {
	td := specTemplateData(specDigestNG("sha256", sha256Of(nil)), specName("/x"))
	good := specBinaryEntry(10, sha1Of(td), "ima-ng", td)
	goodLine := asciiLine(10, sha1Of(td), "ima-ng", "sha256:"+hex.EncodeToString(sha256Of(nil)), "/x")
	huge := append([]byte{}, good[:28]...) // pcr, digest, name length
	huge = append(huge, "ima-ng"...)
	huge = append(huge, 0xff, 0xff, 0xff, 0x7f) // template data length 2 GiB
	badName := append(append([]byte{}, good[:24]...), 0xff, 0xff, 0xff, 0xff)
	shortDigest := specTemplateData(specDigestNG("sha256", []byte{1, 2, 3}), specName("/x"))
	tests := []struct {
		name   string
		data   []byte
		line   int
		offset int64
		want   string
	}{
		{"truncated binary entry", append(append([]byte{}, good...), good[:30]...), 0, int64(len(good)) + 28, "truncated"},
		{"absurd template data length", huge, 0, 38, "need 2147483647 bytes"},
		{"absurd name length", badName, 0, 24, "template name length 4294967295"},
		{"wrong digest length binary", specBinaryEntry(10, sha1Of(shortDigest), "ima-ng", shortDigest), 0, 42, "sha256 digest is 3 bytes, want 32"},
		{"wrong digest length ascii", []byte(goodLine + "10 " + strings.Repeat("1", 40) + " ima-ng sha256:0102 /y\n"), 2, 0, "sha256 digest is 2 bytes, want 32"},
		{"non-hex template hash", []byte(goodLine + "10 " + strings.Repeat("g", 40) + " ima-ng sha1:00 /y\n"), 2, 0, "not hex"},
		{"non-hex digest", []byte("10 " + strings.Repeat("1", 40) + " ima-ng sha1:" + strings.Repeat("z", 40) + " /y\n"), 1, 0, "not hex"},
		{"short template hash", []byte("10 abcd ima-ng sha1:00 /y\n"), 1, 0, "template hash is 4 hex digits"},
		{"missing fields", []byte("10 " + strings.Repeat("1", 40) + " ima-ng\n"), 1, 0, "has 2 fields"},
		{"bad pcr", []byte(" x " + strings.Repeat("1", 40) + " ima-ng sha1:00 /y\n"), 0, 0, "neither an ASCII nor a binary"},
		{"pcr not a number", []byte("10 " + strings.Repeat("1", 40) + " ima-ng sha1:00 /y\n1x " + strings.Repeat("1", 40) + " ima-ng sha1:00 /y\n"), 2, 0, "not a decimal"},
		{"ima name too long", []byte("10 " + strings.Repeat("1", 40) + " ima " + strings.Repeat("1", 40) + " /" + strings.Repeat("a", 300) + "\n"), 1, 0, "allows 255"},
		{"digest without algo", []byte("10 " + strings.Repeat("1", 40) + " ima-ng " + strings.Repeat("1", 40) + " /y\n"), 1, 0, "want \"<algo>:<hex>\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAll(tc.data, ParseOptions{})
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err %v, want a *ParseError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %q does not say %q", err, tc.want)
			}
			if tc.line > 0 && (pe.Line != tc.line || !strings.Contains(err.Error(), "line ")) {
				t.Fatalf("err %q: line %d, want %d", err, pe.Line, tc.line)
			}
			if tc.offset > 0 && (pe.Offset != tc.offset || !strings.Contains(err.Error(), "byte offset")) {
				t.Fatalf("err %q: offset %d, want %d", err, pe.Offset, tc.offset)
			}
		})
	}
}

// Input holding entries N.. parses with their list indexes.
func TestParseFromIndex(t *testing.T) {
	data := readData(t, "ima", "rust-keylime-ascii_runtime_measurements")
	all, err := ParseAll(data, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cut := bytes.Index(data, []byte(" /etc/ld.so.cache\n")) // entry 4 ends here
	rest := data[bytes.IndexByte(data[cut:], '\n')+cut+1:]
	tail, err := ParseAll(rest, ParseOptions{FirstIndex: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != len(all)-5 || tail[0].Index != 5 || !bytes.Equal(tail[0].TemplateHash, all[5].TemplateHash) {
		t.Fatalf("tail: %d entries from index %d", len(tail), tail[0].Index)
	}
}

func TestDetectFormat(t *testing.T) {
	tests := []struct {
		in   string
		want Format
	}{
		{"10 abc", FormatASCII},
		{" 9 abc", FormatASCII},
		{"\x0a\x00\x00\x00", FormatBinary},
		{"\x00\x00\x00\x0a", FormatBinaryBigEndian},
		{"", FormatASCII},
	}
	for _, tc := range tests {
		if got, err := DetectFormat([]byte(tc.in)); got != tc.want || err != nil {
			t.Errorf("DetectFormat(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := DetectFormat([]byte("{\"json\": 1}")); err == nil {
		t.Error("JSON detected as a measurement list")
	}
}

func fuzzSeeds(f *testing.F, files ...string) {
	for _, name := range files {
		if data, err := readFuzzSeed(name); err == nil {
			f.Add(data)
		}
	}
}

func FuzzParseASCII(f *testing.F) {
	fuzzSeeds(f, "rust-keylime-ima_log.txt", "keylime-ima-log-sha256", "keylime-ima-log-sm3_256")
	d := sha256Of(nil)
	td := specTemplateData(specDigestNG("sha256", d), specName("/a b"), []byte{})
	f.Add([]byte(asciiLine(10, sha1Of(td), "ima-sig", "sha256:"+hex.EncodeToString(d), "/a b", "")))
	f.Add([]byte(asciiLine(10, sha1Of(td), "evm-sig", "sha256:00", "/x", "", "a|b", "", "", "1", "2", "3")))
	f.Add([]byte(asciiLine(10, sha1Of(td), "ima", hex.EncodeToString(sha1Of(nil)), "/x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := NewParser(data, ParseOptions{Format: FormatASCII})
		for p.Next() {
			e := p.Entry()
			_ = e.CheckTemplateHash()
			_, _ = e.Digest()
			_ = AppendASCII(nil, e)
		}
	})
}

func FuzzParseBinary(f *testing.F) {
	fuzzSeeds(f, "tpm2-tss-sml-ima-sha1.bin", "tpm2-tss-sml-ima-ng-sha1.bin", "tpm2-tss-sml-ima-sig-sha256-invalidated.bin")
	td := specTemplateData(specDigestNG("sha256", sha256Of(nil)), specName("/x"))
	f.Add(specBinaryEntry(10, sha1Of(td), "ima-ng", td))
	f.Add(specBinaryEntry(10, sha1Of(td), "d-ng|n-ng", td))
	f.Add(specBinaryEntry(10, sha1Of(td), "unknown", td))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatBinary, FormatBinaryBigEndian} {
			p := NewParser(data, ParseOptions{Format: format})
			for p.Next() {
				e := p.Entry()
				_ = e.CheckTemplateHash()
				_, _ = e.Digest()
				_ = AppendBinary(nil, e, binary.LittleEndian)
			}
		}
	})
}
