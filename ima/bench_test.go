package ima

import (
	"encoding/hex"
	"fmt"
	"testing"
)

// synthLog builds an n-entry ima-ng list with sha256 file digests and
// realistic path lengths; paths repeat every `paths` entries.
func synthLog(n, paths int, ascii bool) ([]byte, RuntimePolicy) {
	rp := NewRuntimePolicy()
	var out []byte
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/package-%06d/lib%06d.so.1", i%paths, i%paths)
		d := sha256Of([]byte(path))
		td := specTemplateData(specDigestNG("sha256", d), specName(path))
		if ascii {
			out = append(out, asciiLine(10, sha1Of(td), "ima-ng", "sha256:"+hex.EncodeToString(d), path)...)
		} else {
			out = append(out, specBinaryEntry(10, sha1Of(td), "ima-ng", td)...)
		}
		if i < paths {
			rp.Digests[path] = []string{hex.EncodeToString(d)}
		}
	}
	return out, rp
}

// BenchmarkParseHashReplay is the per-entry cost of parsing, checking the
// logged template hash and extending PCR 10 (SHA-1 bank: the template hash
// is reused for the extend, as the kernel's is).
func BenchmarkParseHashReplay(b *testing.B) {
	for _, tc := range []struct {
		name  string
		ascii bool
		banks []Algorithm
	}{
		{"ascii/sha1", true, []Algorithm{SHA1}},
		{"binary/sha1", false, []Algorithm{SHA1}},
		{"ascii/sha1+sha256", true, []Algorithm{SHA1, SHA256}},
		{"binary/sha1+sha256", false, []Algorithm{SHA1, SHA256}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 10000
			data, _ := synthLog(n, n, tc.ascii)
			b.SetBytes(int64(len(data) / n))
			b.ReportAllocs()
			b.ResetTimer()
			done := 0
			for done < b.N {
				r, _ := NewReplayer(ReplayOptions{}, tc.banks...)
				p := NewParser(data, ParseOptions{})
				for p.Next() && done < b.N {
					e := p.Entry()
					if _, err := r.Extend(e); err != nil {
						b.Fatal(err)
					}
					if _, err := checkAgainstBanks(r, e); err != nil {
						b.Fatal(err)
					}
					done++
				}
				if p.Err() != nil {
					b.Fatal(p.Err())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkPolicyLookup is one allowlist lookup in a 100,000-path policy.
func BenchmarkPolicyLookup(b *testing.B) {
	const paths = 100000
	_, rp := synthLog(paths, paths, true)
	pol := mustPolicy(b, rp)
	keys := make([][]byte, 0, 1024)
	digests := make([][]byte, 0, 1024)
	for p, ds := range rp.Digests {
		keys = append(keys, []byte(p))
		d, _ := hex.DecodeString(ds[0])
		digests = append(digests, d)
		if len(keys) == cap(keys) {
			break
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(keys)
		if _, ok := match(pol.digests, keys[j], SHA256, digests[j]); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkVerify100k verifies a 100,000-entry list against a 50,000-path
// policy from the zero state, quote at the end, two banks: the worst case a
// verifier meets (a host's first attestation).
func BenchmarkVerify100k(b *testing.B) {
	for _, ascii := range []bool{true, false} {
		name := "binary"
		if ascii {
			name = "ascii"
		}
		b.Run(name, func(b *testing.B) {
			data, rp := synthLog(100000, 50000, ascii)
			res, err := Replay(data, ParseOptions{}, ReplayOptions{}, SHA1, SHA256)
			if err != nil {
				b.Fatal(err)
			}
			quoted := map[Algorithm][]byte{SHA1: res.PCR["sha1"], SHA256: res.PCR["sha256"]}
			pol := mustPolicy(b, rp)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := Verify(NewState(SHA1, SHA256), data, quoted, pol, VerifyOptions{})
				if err != nil || !r.OK() || r.State.Entries != 100000 {
					b.Fatalf("%v %+v", err, r.Failures)
				}
			}
		})
	}
}

// BenchmarkPolicyCompile is reading a 50,000-path policy (JSON to lookups).
func BenchmarkPolicyCompile(b *testing.B) {
	_, rp := synthLog(50000, 50000, true)
	js, err := rp.JSON()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(js)))
	for i := 0; i < b.N; i++ {
		if _, err := ParsePolicy(js); err != nil {
			b.Fatal(err)
		}
	}
}
