package evidence

// ClockChange is what two successive quotes of one TPM say happened in
// between.
type ClockChange struct {
	// Reset is true when resetCount went up: the host rebooted (TPM Reset).
	Reset bool `json:"reset"`
	// Restart is true when restartCount went up within one resetCount: a
	// TPM Restart or resume, after which PCRs may also have been reset.
	Restart bool `json:"restart"`
}

// Reboot is true after a reset or a restart. Either makes the previous PCR
// state meaningless: the verifier must ask for a fresh boot log and the IMA
// list from its first entry.
func (c ClockChange) Reboot() bool { return c.Reset || c.Restart }

// CheckClock compares a quote's clock with the previous accepted one from
// the same TPM. The counters never go back; within one boot (same counters)
// the clock never goes back either. Equal clocks are allowed: the clock
// ticks in milliseconds and two quotes can fall in one tick, while freshness
// is the nonce's job.
func CheckClock(prev, cur ClockInfo) (ClockChange, error) {
	switch {
	case cur.ResetCount < prev.ResetCount:
		return ClockChange{}, Fail(ReasonResetCountRollback, "resetCount went from %d back to %d", prev.ResetCount, cur.ResetCount)
	case cur.ResetCount > prev.ResetCount:
		return ClockChange{Reset: true}, nil
	case cur.RestartCount < prev.RestartCount:
		return ClockChange{}, Fail(ReasonRestartCountRollback, "restartCount went from %d back to %d within resetCount %d", prev.RestartCount, cur.RestartCount, cur.ResetCount)
	case cur.RestartCount > prev.RestartCount:
		return ClockChange{Restart: true}, nil
	case cur.Clock < prev.Clock:
		return ClockChange{}, Fail(ReasonClockRollback, "clock went from %d ms back to %d ms within one boot (resetCount %d, restartCount %d)", prev.Clock, cur.Clock, cur.ResetCount, cur.RestartCount)
	}
	return ClockChange{}, nil
}
