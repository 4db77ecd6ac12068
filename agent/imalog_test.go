package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// TestIMALogReadsIncrementally checks the agent's reading of the
// measurement list: the entries asked for and no others, continuing from
// the remembered offset, going back when the verifier asks again for
// entries it did not commit, and leaving a half-written entry for later.
func TestIMALogReadsIncrementally(t *testing.T) {
	ctx := context.Background()
	st, err := soft.New(soft.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tpm := NewSoftTPM(st)
	list := simhost.IMALog{Path: filepath.Join(t.TempDir(), "binary_runtime_measurements")}
	if _, err := list.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	add := func(n int, tag string) {
		for i := range n {
			sum := sha256.Sum256([]byte(fmt.Sprint(tag, i)))
			if err := list.Append(ctx, tpm, simhost.IMAEntry{Path: fmt.Sprintf("/%s/%d", tag, i), FileDigest: sum[:]}); err != nil {
				t.Fatal(err)
			}
		}
	}
	paths := func(b []byte, first uint64) []string {
		t.Helper()
		es, err := ima.ParseAll(b, ima.ParseOptions{FirstIndex: first})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, string(e.Path()))
		}
		return out
	}
	add(3, "a")
	l, err := newIMALog(list.Path)
	if err != nil {
		t.Fatal(err)
	}
	b, n, err := l.from(0)
	if err != nil || n != 4 {
		t.Fatalf("from(0): %d entries, %v; want 4", n, err)
	}
	if got := paths(b, 0); got[0] != "boot_aggregate" || got[3] != "/a/2" {
		t.Fatalf("from(0) entries %v", got)
	}

	add(2, "b")
	b, n, err = l.from(4)
	if err != nil || n != 2 {
		t.Fatalf("from(4): %d entries, %v; want 2", n, err)
	}
	if got := paths(b, 4); got[0] != "/b/0" || got[1] != "/b/1" {
		t.Fatalf("from(4) entries %v", got)
	}

	// The verifier committed only entry 4: it asks from 5 again.
	b, n, err = l.from(5)
	if err != nil || n != 1 || paths(b, 5)[0] != "/b/1" {
		t.Fatalf("from(5) again: %d entries, %v", n, err)
	}

	// Nothing new: an empty slice, not an error.
	if b, n, err = l.from(6); err != nil || n != 0 || len(b) != 0 {
		t.Fatalf("from(6) with nothing new: %d entries, %d bytes, %v", n, len(b), err)
	}

	// A half-written entry at the end is left for next time.
	whole, err := os.ReadFile(list.Path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("c"))
	entry := simhost.IMAEntry{Path: "/c", FileDigest: sum[:]}.AppendBinary(nil)
	if err := os.WriteFile(list.Path, append(bytes.Clone(whole), entry[:len(entry)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, n, err = l.from(6); err != nil || n != 0 || len(b) != 0 {
		t.Fatalf("from(6) with a half-written entry: %d entries, %v", n, err)
	}
	if err := os.WriteFile(list.Path, append(bytes.Clone(whole), entry...), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, n, err = l.from(6); err != nil || n != 1 || paths(b, 6)[0] != "/c" {
		t.Fatalf("from(6) once complete: %d entries, %v", n, err)
	}

	// Asking beyond the list is an error.
	if _, _, err = l.from(100); err == nil {
		t.Fatal("from(100) on a 7-entry list succeeded")
	}
}
