package soft

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// BenchmarkNew measures manufacturing one soft TPM with one EK and its
// certificate: what starting a simulated host costs before its AK.
func BenchmarkNew(b *testing.B) {
	m := newTestManufacturer(b)
	cache, err := NewKeyCache(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const hosts = 64
	for _, bc := range []struct {
		name  string
		alg   tpm2.TPMAlgID
		cache *KeyCache
	}{
		{"ek=rsa", tpm2.TPMAlgRSA, nil},
		{"ek=rsa/keycache", tpm2.TPMAlgRSA, cache},
		{"ek=ecc", tpm2.TPMAlgECC, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.cache != nil {
				// Warm, as on every run after the first.
				if err := bc.cache.Prefill(bg, hosts, "ek"); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
			}
			i := 0
			for b.Loop() {
				if _, err := New(Options{EKAlgs: []tpm2.TPMAlgID{bc.alg}, Manufacturer: m, Keys: bc.cache, Host: i % hosts}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkCreateAK(b *testing.B) {
	cache, err := NewKeyCache(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		alg   tpm2.TPMAlgID
		cache *KeyCache
	}{
		{"ak=rsa", tpm2.TPMAlgRSA, nil},
		{"ak=rsa/keycache", tpm2.TPMAlgRSA, cache},
		{"ak=ecc", tpm2.TPMAlgECC, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}, Keys: bc.cache})
			if bc.cache != nil {
				if err := bc.cache.Prefill(bg, 1, "ak0"); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				// With the cache, every AK is host 0's warm "ak0" key:
				// what each host's first AK costs on a warm run.
				tpm.st.akCount = 0
				if _, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, bc.alg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuote is one steady-state attestation on the host side: a quote
// over PCRs 0-10 of the SHA-256 bank with a 32-byte nonce.
func BenchmarkQuote(b *testing.B) {
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		b.Run("ak="+algName(alg), func(b *testing.B) {
			tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
			ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, alg)
			if err != nil {
				b.Fatal(err)
			}
			sel := pcrSel(tpm2.TPMAlgSHA256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
			nonce := sha256.Sum256([]byte("nonce"))
			for b.Loop() {
				if _, _, err := tpm.Quote(bg, ak, nonce[:], sel); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQuoteTo is BenchmarkQuote the way the bench's fleet quotes:
// marshalled by hand into reused buffers, with the PCR values.
func BenchmarkQuoteTo(b *testing.B) {
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		b.Run("ak="+algName(alg), func(b *testing.B) {
			tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
			ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, alg)
			if err != nil {
				b.Fatal(err)
			}
			sel := pcrSel(tpm2.TPMAlgSHA256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
			nonce := sha256.Sum256([]byte("nonce"))
			var out QuoteOut
			for b.Loop() {
				if err := tpm.QuoteTo(bg, ak, nonce[:], sel, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// With ECDSA nonces made ahead (PrepareSignatures, not timed): what a
	// quote costs the bench's fleet inside its measurement window.
	b.Run("ak=ecc/presigned", func(b *testing.B) {
		tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
		ak, err := tpm.CreateAK(bg, tpm2.TPMAlgECC, tpm2.TPMAlgECC)
		if err != nil {
			b.Fatal(err)
		}
		sel := pcrSel(tpm2.TPMAlgSHA256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
		nonce := sha256.Sum256([]byte("nonce"))
		var out QuoteOut
		left := 0
		for b.Loop() {
			if left == 0 {
				b.StopTimer()
				if left, err = tpm.PrepareSignatures(bg, ak, 4096); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if err := tpm.QuoteTo(bg, ak, nonce[:], sel, &out); err != nil {
				b.Fatal(err)
			}
			left--
		}
	})
	// Making one nonce ahead.
	b.Run("prepare/ecc", func(b *testing.B) {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := presign(priv, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkExtend is one IMA measurement landing in PCR 10.
func BenchmarkExtend(b *testing.B) {
	tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	d1, d256 := make([]byte, 20), sha256.Sum256(nil)
	digests := map[tpm2.TPMAlgID][]byte{tpm2.TPMAlgSHA1: d1, tpm2.TPMAlgSHA256: d256[:]}
	for b.Loop() {
		if err := tpm.PCRExtend(bg, 10, digests); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExtendEvents is one attestation's 20 IMA measurements landing
// in PCR 10 in one call, as simhost.MemIMALog makes them.
func BenchmarkExtendEvents(b *testing.B) {
	tpm := newTestTPM(b, Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	d1, d256 := make([]byte, 20), sha256.Sum256(nil)
	var digests [][]byte
	for range 20 {
		digests = append(digests, d1, d256[:])
	}
	banks := []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256}
	for b.Loop() {
		if err := tpm.PCRExtendEvents(bg, 10, banks, digests); err != nil {
			b.Fatal(err)
		}
	}
}
