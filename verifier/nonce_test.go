package verifier

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"
)

func nonceService(t testing.TB) (*Service, Agent) {
	t.Helper()
	svc, _ := newTestService(t)
	now := time.Unix(1_800_000_000, 0)
	svc.Now = func() time.Time { return now }
	return svc, Agent{ID: "a", AdmittedAt: now.Add(-time.Hour), Interval: time.Second}
}

// testSel is the marshalled PCR selection the test nonces are minted for.
var testSel = marshalSelection(Selection(Agent{RuntimePolicy: "r"}, nil))

func TestNonceBindsAgentAdmissionTimeAndOrder(t *testing.T) {
	ctx := context.Background()
	svc, a := nonceService(t)
	n1, err := svc.mintNonce(ctx, a, testSel, nonceBootLog)
	if err != nil {
		t.Fatal(err)
	}
	n2, _ := svc.mintNonce(ctx, a, testSel, 0)
	now := svc.now()
	info, err := svc.checkNonce(ctx, a, testSel, n1, now)
	if err != nil || !info.bootLog() || info.fullIMA() {
		t.Fatalf("a nonce as issued: %+v, %v", info, err)
	}
	other := a
	other.ID = "b"
	readmitted := a
	readmitted.AdmittedAt = now
	answered := a
	answered.LastNonce = info.issueNS
	flipped := append([]byte(nil), n1...)
	flipped[1] ^= nonceFullIMA // what was asked is under the MAC too
	otherSel := marshalSelection(Selection(Agent{BootPolicy: "b", RuntimePolicy: "r"}, nil))
	for _, tc := range []struct {
		name   string
		a      Agent
		sel    []byte
		nonce  []byte
		at     time.Time
		reason string
	}{
		{"another agent's", other, testSel, n1, now, refusedBadNonce},
		{"from before a readmission", readmitted, testSel, n1, now, refusedBadNonce},
		{"with other flags", a, testSel, flipped, now, refusedBadNonce},
		// A new version of a PCR policy naming other PCRs: the challenge
		// asked for what the agent's policies no longer need.
		{"for other PCRs", a, otherSel, n1, now, refusedBadNonce},
		{"expired", a, testSel, n1, now.Add(time.Minute), refusedNonceExpired},
		{"already answered", answered, testSel, n1, now, refusedNonceUsed},
		{"too short", a, testSel, n1[:31], now, refusedBadNonce},
		{"another version", a, testSel, append([]byte{2}, n1[1:]...), now, refusedBadNonce},
	} {
		_, err := svc.checkNonce(ctx, tc.a, tc.sel, tc.nonce, tc.at)
		var r *Refusal
		if !asRefusal(err, &r) || r.Reason != tc.reason {
			t.Errorf("%s: %v, want refused %s", tc.name, err, tc.reason)
		}
	}
	// Issued later, so still good after n1 was answered.
	if _, err := svc.checkNonce(ctx, answered, testSel, n2, now); err != nil {
		t.Errorf("a newer nonce after the older was answered: %v", err)
	}
	// A nonce survives a restart: the key is in the store.
	restarted := newTestVerifier(t, svc.Store, noAKs{}, 0, func(c *Config) { c.Now = svc.Now }).Service()
	if _, err := restarted.checkNonce(ctx, a, testSel, n2, now); err != nil {
		t.Errorf("a nonce after a restart: %v", err)
	}
}

// FuzzNonce: no input panics the nonce check, and the only input it
// accepts is a nonce the verifier minted.
func FuzzNonce(f *testing.F) {
	svc, a := nonceService(f)
	ctx := context.Background()
	minted, err := svc.mintNonce(ctx, a, testSel, nonceFullIMA)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(minted)
	f.Add(minted[:16])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := svc.checkNonce(ctx, a, testSel, b, svc.now())
		if err == nil && !bytes.Equal(b, minted) {
			t.Fatalf("accepted a nonce it never issued: %x", b)
		}
	})
}

// TestNonceMACIsTheLayouts holds the reused HMAC states to the MAC the
// layout in nonce.go defines, computed from scratch, for nonces of several
// agents made concurrently.
func TestNonceMACIsTheLayouts(t *testing.T) {
	ctx := context.Background()
	svc, a := nonceService(t)
	key, err := svc.Store.Secret(ctx, nonceKeyName, 32)
	if err != nil {
		t.Fatal(err)
	}
	want := func(a Agent, n []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(nonceLabel + a.ID + "\x00"))
		m.Write(binary.BigEndian.AppendUint64(nil, uint64(a.AdmittedAt.UnixNano())))
		m.Write(n[:16])
		m.Write(testSel)
		return m.Sum(nil)[:16]
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				a := a
				a.ID = strings.Repeat("h", 1+(g*200+i)%300)
				n, err := svc.mintNonce(ctx, a, testSel, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(n[16:], want(a, n)) {
					t.Errorf("agent %q: nonce MAC %x, the layout's %x", a.ID, n[16:], want(a, n))
					return
				}
				if _, err := svc.checkNonce(ctx, a, testSel, n, svc.now()); err != nil {
					t.Errorf("agent %q: %v", a.ID, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkNonceMAC compares a nonce's MAC on reused HMAC states with one
// keyed from scratch, as every nonce was before.
//
//	go test ./verifier -run '^$' -bench NonceMAC -benchmem
func BenchmarkNonceMAC(b *testing.B) {
	ctx := context.Background()
	svc, a := nonceService(b)
	key, err := svc.nonceKey(ctx)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := svc.Store.Secret(ctx, nonceKeyName, 32)
	head := make([]byte, 16)
	var out [16]byte
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			key.sum(out[:], a, head, testSel)
		}
	})
	b.Run("from-scratch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := hmac.New(sha256.New, raw)
			m.Write([]byte(nonceLabel))
			m.Write([]byte(a.ID))
			m.Write([]byte{0})
			m.Write(binary.BigEndian.AppendUint64(nil, uint64(a.AdmittedAt.UnixNano())))
			m.Write(head)
			m.Write(testSel)
			copy(out[:], m.Sum(nil))
		}
	})
}
