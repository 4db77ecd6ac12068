package verifier

import (
	"fmt"
	"testing"
)

// Rendezvous hashing spreads agents evenly, and a replica leaving moves
// only its own agents, each to one of the others.
func TestOwnerBalancesAndMovesOnlyWhatItMust(t *testing.T) {
	three := []string{"r1", "r2", "r3"}
	counts := map[string]int{}
	owner := map[string]string{}
	for i := range 3000 {
		id := fmt.Sprintf("host-%d", i)
		owner[id] = Owner(id, three)
		counts[owner[id]]++
	}
	for _, r := range three {
		if counts[r] < 800 || counts[r] > 1200 {
			t.Errorf("replica %s owns %d of 3,000 agents", r, counts[r])
		}
	}
	two := []string{"r3", "r1"} // r2 left; the order of the list does not matter
	for id, was := range owner {
		now := Owner(id, two)
		if was != "r2" && now != was {
			t.Fatalf("%s moved from %s to %s though %s stayed", id, was, now, was)
		}
		if was == "r2" && now == "r2" {
			t.Fatalf("%s still owned by the replica that left", id)
		}
	}
	if Owner("x", nil) != "" {
		t.Error("an owner among no replicas")
	}
}
