package evidence_test

import (
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/evidence/evidencetest"
)

func TestCheckClock(t *testing.T) {
	base := evidence.ClockInfo{Clock: 5000, ResetCount: 3, RestartCount: 1, Safe: true}
	with := func(f func(*evidence.ClockInfo)) evidence.ClockInfo {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name   string
		cur    evidence.ClockInfo
		want   evidence.Reason
		reboot bool
	}{
		{"clock moved on", with(func(c *evidence.ClockInfo) { c.Clock += 1000 }), "", false},
		{"same tick", base, "", false},
		{"clock back", with(func(c *evidence.ClockInfo) { c.Clock-- }), evidence.ReasonClockRollback, false},
		{"reset, clock back", with(func(c *evidence.ClockInfo) { c.ResetCount++; c.RestartCount = 0; c.Clock = 10 }), "", true},
		{"restart, clock back", with(func(c *evidence.ClockInfo) { c.RestartCount++; c.Clock = 10 }), "", true},
		{"reset count back", with(func(c *evidence.ClockInfo) { c.ResetCount--; c.Clock += 1000 }), evidence.ReasonResetCountRollback, false},
		{"restart count back", with(func(c *evidence.ClockInfo) { c.RestartCount--; c.Clock += 1000 }), evidence.ReasonRestartCountRollback, false},
		{"reset count back, restart up", with(func(c *evidence.ClockInfo) { c.ResetCount--; c.RestartCount += 5 }), evidence.ReasonResetCountRollback, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := evidence.CheckClock(base, tc.cur)
			if got := evidence.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if ch.Reboot() != tc.reboot {
				t.Errorf("reboot = %v, want %v", ch.Reboot(), tc.reboot)
			}
		})
	}
}

// TestClockAcrossSimulatorReboot checks the counters a real TPM reports: two
// quotes in one boot are monotonic, a TPM reset is a reboot, and replaying
// the earlier quote after it is a reset-count rollback.
func TestClockAcrossSimulatorReboot(t *testing.T) {
	sim := evidencetest.Simulator(t)
	tpm := sim.Conn()
	spec := evidencetest.RSAKey(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256)
	sel := evidence.Selection([]int{0}, tpm2.TPMAlgSHA256)
	clockOf := func(h *evidencetest.Host) evidence.ClockInfo {
		n := nonce(t)
		attest, sig := h.Quote(t, n, sel)
		ak, err := evidence.NewAK(h.AKPublic)
		if err != nil {
			t.Fatal(err)
		}
		q, err := evidence.ParseQuote(attest, sig)
		if err != nil {
			t.Fatal(err)
		}
		res, err := ak.VerifyQuote(q, evidence.Expect{Nonce: n, PCRs: h.ReadPCRs(t, sel)})
		if err != nil {
			t.Fatal(err)
		}
		return res.Clock
	}
	h := evidencetest.NewHost(t, tpm, spec)
	first := clockOf(h)
	second := clockOf(h)
	if ch, err := evidence.CheckClock(first, second); err != nil || ch.Reboot() {
		t.Fatalf("two quotes in one boot: change %+v, err %v", ch, err)
	}
	if err := sim.Reset(); err != nil {
		t.Fatal(err)
	}
	third := clockOf(evidencetest.NewHost(t, tpm, spec))
	ch, err := evidence.CheckClock(second, third)
	if err != nil || !ch.Reset {
		t.Fatalf("after TPM reset: change %+v, err %v (clocks %+v -> %+v)", ch, err, second, third)
	}
	if _, err := evidence.CheckClock(third, second); evidence.ReasonOf(err) != evidence.ReasonResetCountRollback {
		t.Fatalf("old quote after reboot: %v, want reset_count_rollback", err)
	}
}
