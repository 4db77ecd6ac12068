package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDemoEnrollsEveryHost(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{Hosts: 3, Dir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if sum.Hosts != 3 || sum.Enrolled != 3 || len(sum.AgentIDs) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	if !strings.Contains(out.String(), "3 of 3 hosts enrolled") {
		t.Errorf("narrative lacks the result:\n%s", out.String())
	}
}
