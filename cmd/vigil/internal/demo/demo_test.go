package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoCatchesTheTamperedHost runs the whole demo briefly: every host
// enrolls and attests, the tampered one, and only it, fails with the path
// of the program it ran.
func TestDemoCatchesTheTamperedHost(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{
		Hosts:       3,
		Interval:    200 * time.Millisecond,
		TamperAfter: 1500 * time.Millisecond,
		Duration:    3 * time.Second,
		Dir:         t.TempDir(),
		Out:         &out,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if sum.Enrolled != 3 || sum.Failed != 1 || sum.FailedHosts[sum.TamperedHost] != "policy_violation" {
		t.Fatalf("summary %+v\n%s", sum, out.String())
	}
	if sum.Attestations < 6 || sum.DetectionLatencyMS < 0 || sum.RevocationsDelivered != 1 || sum.RevocationLatencyMS < sum.DetectionLatencyMS {
		t.Errorf("summary %+v", sum)
	}
	if !strings.Contains(out.String(), "tmp-cryptominer") {
		t.Errorf("the narrative does not name the program:\n%s", out.String())
	}
}
