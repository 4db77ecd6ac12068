package simhost_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
)

// memEntries are files measured by the simulated kernel.
func memEntries(n int) []simhost.IMAEntry {
	es := make([]simhost.IMAEntry, n)
	for i := range es {
		d := bytes.Repeat([]byte{byte(i + 1)}, 32)
		es[i] = simhost.IMAEntry{Path: fmt.Sprintf("/usr/bin/tool-%03d", i), FileDigest: d}
	}
	return es
}

// TestMemIMALogIsIMALog: the same boot, the same appends (by value and
// from a table) on two soft TPMs, one with the list in a file and one in
// memory, give the same list to the byte and the same PCR 10, in both
// formats.
func TestMemIMALogIsIMALog(t *testing.T) {
	ctx := context.Background()
	boot, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	pool := memEntries(7)
	for _, format := range []simhost.Format{simhost.FormatBinary, simhost.FormatASCII} {
		t.Run(format.String(), func(t *testing.T) {
			fileTPM, memTPM := openSoft(t), openSoft(t)
			for _, tpm := range []simhost.TPM{fileTPM, memTPM} {
				if _, err := boot.Boot(ctx, tpm); err != nil {
					t.Fatal(err)
				}
			}
			file := simhost.IMALog{Path: filepath.Join(t.TempDir(), "list"), Format: format}
			table, err := simhost.NewIMATable(format, pool)
			if err != nil {
				t.Fatal(err)
			}
			mem, err := simhost.NewMemIMALog(table, format)
			if err != nil {
				t.Fatal(err)
			}
			fe, err := file.Init(ctx, fileTPM)
			if err != nil {
				t.Fatal(err)
			}
			me, err := mem.Init(ctx, memTPM)
			if err != nil {
				t.Fatal(err)
			}
			if fe.Path != me.Path || !bytes.Equal(fe.FileDigest, me.FileDigest) {
				t.Fatalf("boot_aggregate: file %+v, memory %+v", fe, me)
			}
			// From the table, by value, and the table again: entry
			// numbers of both kinds interleave.
			ids := []int{0, 1, 2, 6, 0}
			var byTable []simhost.IMAEntry
			for _, id := range ids {
				byTable = append(byTable, pool[id])
			}
			extra := memEntries(10)[8:]
			steps := []struct {
				file  []simhost.IMAEntry
				table []int
			}{
				{file: byTable, table: ids},
				{file: extra},
				{file: byTable[:2], table: ids[:2]},
				{}, // nothing new
			}
			for i, st := range steps {
				if err := file.Append(ctx, fileTPM, st.file...); err != nil {
					t.Fatal(err)
				}
				if st.table != nil {
					err = mem.AppendTable(ctx, memTPM, st.table...)
				} else {
					err = mem.Append(ctx, memTPM, st.file...)
				}
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(file.Path)
				if err != nil {
					t.Fatal(err)
				}
				if got := mem.Bytes(); !bytes.Equal(got, want) {
					t.Fatalf("step %d: the list in memory\n%q\nthe file\n%q", i, got, want)
				}
				f10, err := simhost.ReadPCRs(ctx, fileTPM, simhost.IMAPCR)
				if err != nil {
					t.Fatal(err)
				}
				m10, err := simhost.ReadPCRs(ctx, memTPM, simhost.IMAPCR)
				if err != nil {
					t.Fatal(err)
				}
				for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256} {
					if !bytes.Equal(f10[alg][simhost.IMAPCR], m10[alg][simhost.IMAPCR]) {
						t.Fatalf("step %d: PCR 10 (%v) %x with the list in memory, %x with the file", i, alg, m10[alg][simhost.IMAPCR], f10[alg][simhost.IMAPCR])
					}
				}
			}
			if format == simhost.FormatBinary {
				// The list replays to PCR 10, as the verifier checks it.
				entries, err := ima.ParseAll(mem.Bytes(), ima.ParseOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != mem.Len() {
					t.Errorf("parsed %d entries, the list has %d", len(entries), mem.Len())
				}
				res, err := ima.Replay(mem.Bytes(), ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				m10, _ := simhost.ReadPCRs(ctx, memTPM, simhost.IMAPCR)
				if !bytes.Equal(res.PCR["sha256"], m10[tpm2.TPMAlgSHA256][simhost.IMAPCR]) {
					t.Errorf("the list replays to %x, PCR 10 is %x", res.PCR["sha256"], m10[tpm2.TPMAlgSHA256][simhost.IMAPCR])
				}
			}
		})
	}
}

// plainTPM hides the soft TPM's PCRExtendEvents: the list extends PCR 10
// entry by entry.
type plainTPM struct{ simhost.TPM }

// TestMemIMALogWithoutEventsExtender: a TPM without PCRExtendEvents (a
// real TPM through the agent) gets the same PCR 10, one extend per entry.
func TestMemIMALogWithoutEventsExtender(t *testing.T) {
	ctx := context.Background()
	table, err := simhost.NewIMATable(simhost.FormatBinary, memEntries(4))
	if err != nil {
		t.Fatal(err)
	}
	var pcr10 [][]byte
	for _, wrap := range []func(simhost.TPM) simhost.TPM{
		func(t simhost.TPM) simhost.TPM { return t },
		func(t simhost.TPM) simhost.TPM { return plainTPM{t} },
	} {
		tpm := wrap(openSoft(t))
		if _, ok := tpm.(simhost.PCREventsExtender); ok != (len(pcr10) == 0) {
			t.Fatalf("wrapper %d: events extender %v", len(pcr10), ok)
		}
		mem, err := simhost.NewMemIMALog(table, simhost.FormatBinary)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.Init(ctx, tpm); err != nil {
			t.Fatal(err)
		}
		if err := mem.AppendTable(ctx, tpm, 3, 1, 2, 0, 3); err != nil {
			t.Fatal(err)
		}
		if err := mem.Append(ctx, tpm, memEntries(6)[5]); err != nil {
			t.Fatal(err)
		}
		got, err := simhost.ReadPCRs(ctx, tpm, simhost.IMAPCR)
		if err != nil {
			t.Fatal(err)
		}
		pcr10 = append(pcr10, append(got[tpm2.TPMAlgSHA1][simhost.IMAPCR], got[tpm2.TPMAlgSHA256][simhost.IMAPCR]...))
	}
	if !bytes.Equal(pcr10[0], pcr10[1]) {
		t.Errorf("PCR 10 %x in one call, %x entry by entry", pcr10[0], pcr10[1])
	}
}

// TestMemIMALogFrom: AppendFrom and SizeFrom give the bytes from an entry
// on, bounded at an entry's end past the limit, as the agent reads them.
func TestMemIMALogFrom(t *testing.T) {
	ctx := context.Background()
	tpm := openSoft(t)
	pool := memEntries(5)
	table, err := simhost.NewIMATable(simhost.FormatBinary, pool)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := simhost.NewMemIMALog(table, simhost.FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.AppendTable(ctx, tpm, 0); err == nil {
		t.Error("appended to a list never started")
	}
	if _, err := mem.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	if err := mem.AppendTable(ctx, tpm, 0, 1, 2, 3, 4); err != nil {
		t.Fatal(err)
	}
	if err := mem.AppendTable(ctx, tpm, 5); err == nil {
		t.Error("appended record 5 of a table of 5")
	}
	if err := mem.AppendTable(ctx, tpm, -1); err == nil {
		t.Error("appended record -1")
	}
	if mem.Len() != 6 {
		t.Fatalf("%d entries, want 6", mem.Len())
	}
	whole := mem.Bytes()
	// Entry boundaries, from the records.
	var starts []int
	off := 0
	for i := range 6 {
		starts = append(starts, off)
		if i == 0 {
			off = len(whole) - 5*len(table.Record(0).Bytes)
		} else {
			off += len(table.Record(i - 1).Bytes)
		}
	}
	for first := range 7 {
		want := whole[min(len(whole), startOr(starts, first, len(whole))):]
		got, n, err := mem.AppendFrom([]byte("x"), uint64(first), 0)
		if err != nil || n != 6-first || !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Errorf("from %d: %d entries, %v, match %v", first, n, err, bytes.Equal(got[1:], want))
		}
		size, err := mem.SizeFrom(uint64(first), 0)
		if err != nil || size != len(want) {
			t.Errorf("SizeFrom(%d) = %d, %v; want %d", first, size, err, len(want))
		}
	}
	// A limit stops after the entry that reaches it.
	rec := len(table.Record(0).Bytes)
	got, n, err := mem.AppendFrom(nil, 1, rec+1)
	if err != nil || n != 2 || len(got) != 2*rec {
		t.Errorf("limit %d from 1: %d entries, %d bytes, %v; want 2, %d", rec+1, n, len(got), err, 2*rec)
	}
	if size, _ := mem.SizeFrom(1, rec+1); size != 2*rec {
		t.Errorf("SizeFrom with a limit: %d, want %d", size, 2*rec)
	}
	if _, _, err := mem.AppendFrom(nil, 7, 0); err == nil {
		t.Error("read from entry 7 of 6")
	}
	if _, err := mem.SizeFrom(7, 0); err == nil {
		t.Error("sized from entry 7 of 6")
	}
}

func startOr(starts []int, i, end int) int {
	if i < len(starts) {
		return starts[i]
	}
	return end
}

func TestMemIMALogRefuses(t *testing.T) {
	ctx := context.Background()
	table, err := simhost.NewIMATable(simhost.FormatBinary, memEntries(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := simhost.NewMemIMALog(table, simhost.FormatASCII); err == nil {
		t.Error("an ASCII list of a binary table")
	}
	if _, err := simhost.NewIMATable(simhost.FormatASCII, []simhost.IMAEntry{{Path: "/a\nb", FileDigest: make([]byte, 32)}}); err == nil {
		t.Error("a line break in an ASCII table")
	}
	mem, err := simhost.NewMemIMALog(nil, simhost.FormatASCII)
	if err != nil {
		t.Fatal(err)
	}
	tpm := openSoft(t)
	if _, err := mem.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	var in *simhost.InputError
	if err := mem.Append(ctx, tpm, simhost.IMAEntry{Path: "/a\nb", FileDigest: make([]byte, 32)}); !errors.As(err, &in) {
		t.Errorf("a line break in an ASCII list: %v", err)
	}
	if err := mem.AppendTable(ctx, tpm, 0); err == nil {
		t.Error("a table record appended to a list without a table")
	}
	// Init again is a boot: PCR 10 must be at reset.
	if _, err := mem.Init(ctx, tpm); !errors.Is(err, simhost.ErrPCRsExtended) {
		t.Errorf("Init after Init: %v", err)
	}
}

// TestMemIMALogConcurrent: readers see whole entries while appenders run,
// and PCR 10 ends where the list replays to (run with -race).
func TestMemIMALogConcurrent(t *testing.T) {
	ctx := context.Background()
	tpm := openSoft(t)
	pool := memEntries(16)
	table, err := simhost.NewIMATable(simhost.FormatBinary, pool)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := simhost.NewMemIMALog(table, simhost.FormatBinary)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := mem.AppendTable(ctx, tpm, (w+i)%len(pool), (w+2*i)%len(pool)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, n, err := mem.AppendFrom(nil, 1, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if es, err := ima.ParseAll(b, ima.ParseOptions{FirstIndex: 1}); err != nil || len(es) != n {
				t.Errorf("%d entries read, %d parsed: %v", n, len(es), err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	if mem.Len() != 1+4*50*2 {
		t.Fatalf("%d entries", mem.Len())
	}
	// PCR 10 is the replay of the list, in list order.
	got, err := simhost.ReadPCRs(ctx, tpm, simhost.IMAPCR)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ima.Replay(mem.Bytes(), ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1, ima.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.PCR["sha1"], got[tpm2.TPMAlgSHA1][simhost.IMAPCR]) || !bytes.Equal(res.PCR["sha256"], got[tpm2.TPMAlgSHA256][simhost.IMAPCR]) {
		t.Errorf("PCR 10 %x / %x, the list replays to %x / %x", got[tpm2.TPMAlgSHA1][simhost.IMAPCR], got[tpm2.TPMAlgSHA256][simhost.IMAPCR], res.PCR["sha1"], res.PCR["sha256"])
	}
}
