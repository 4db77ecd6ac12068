package simhost_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
)

// writeFiles creates files with distinct contents and returns their paths
// and contents.
func writeFiles(t *testing.T, n int) ([]string, [][]byte) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	var contents [][]byte
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("bin%d", i))
		c := []byte(fmt.Sprintf("#!/bin/sh\necho program %d\n", i))
		if err := os.WriteFile(p, c, 0o755); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		contents = append(contents, c)
	}
	return paths, contents
}

// TestIMAReplaysOnTPM boots a simulated host, starts its measurement list
// and measures files, then checks the list with Vigil's IMA parser and an
// independent computation: every template hash, the boot_aggregate over
// the TPM's PCRs 0-9, and the replay of both banks against the TPM's
// PCR 10.
func TestIMAReplaysOnTPM(t *testing.T) {
	for _, be := range backends() {
		for _, format := range []simhost.Format{simhost.FormatBinary, simhost.FormatASCII} {
			t.Run(be.name+"/"+format.String(), func(t *testing.T) {
				ctx := context.Background()
				tpm := be.open(t)
				l, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := l.Boot(ctx, tpm); err != nil {
					t.Fatal(err)
				}
				list := simhost.IMALog{Path: filepath.Join(t.TempDir(), "measurements"), Format: format}
				agg, err := list.Init(ctx, tpm)
				if err != nil {
					t.Fatal(err)
				}
				paths, contents := writeFiles(t, 3)
				var entries []simhost.IMAEntry
				for _, p := range paths {
					e, err := simhost.MeasureFile(p)
					if err != nil {
						t.Fatal(err)
					}
					entries = append(entries, e)
				}
				// Two appends: the second goes to a list that exists.
				if err := list.Append(ctx, tpm, entries[:1]...); err != nil {
					t.Fatal(err)
				}
				// Auto format: the list's own.
				if err := (simhost.IMALog{Path: list.Path}).Append(ctx, tpm, entries[1:]...); err != nil {
					t.Fatal(err)
				}

				data, err := os.ReadFile(list.Path)
				if err != nil {
					t.Fatal(err)
				}
				pcrs, err := simhost.ReadPCRs(ctx, tpm, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
				if err != nil {
					t.Fatal(err)
				}

				// Vigil's IMA parser: format, entries, template hashes.
				p := ima.NewParser(data, ima.ParseOptions{})
				var parsed []ima.Entry
				for p.Next() {
					e := p.Entry()
					if err := e.CheckTemplateHash(); err != nil {
						t.Errorf("entry %d: %v", e.Index, err)
					}
					parsed = append(parsed, e.Clone())
				}
				if err := p.Err(); err != nil {
					t.Fatal(err)
				}
				wantFormat := map[simhost.Format]ima.Format{simhost.FormatBinary: ima.FormatBinary, simhost.FormatASCII: ima.FormatASCII}[format]
				if p.Format() != wantFormat {
					t.Errorf("parser detected %v, want %v", p.Format(), wantFormat)
				}
				if len(parsed) != 4 {
					t.Fatalf("%d entries, want 4", len(parsed))
				}

				// boot_aggregate, computed here as the kernel does.
				h := sha256.New()
				for i := range 10 {
					h.Write(pcrs[tpm2.TPMAlgSHA256][i])
				}
				wantAgg := h.Sum(nil)
				ref, err := ima.BootAggregate(ima.SHA256, pcrs[tpm2.TPMAlgSHA256])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(wantAgg, ref) || !bytes.Equal(agg.FileDigest, wantAgg) {
					t.Errorf("boot_aggregate: Init %x, ima.BootAggregate %x, here %x", agg.FileDigest, ref, wantAgg)
				}
				for i, e := range parsed {
					d, ok := e.Digest()
					want, path := wantAgg, "boot_aggregate"
					if i > 0 {
						sum := sha256.Sum256(contents[i-1])
						want, path = sum[:], paths[i-1]
					}
					if !ok || d.Alg != ima.SHA256 || !bytes.Equal(d.Digest, want) || string(e.Path()) != path || e.TemplateName != "ima-ng" || e.PCR != 10 {
						t.Errorf("entry %d: %s %s %s, want ima-ng sha256:%x %s", i, e.TemplateName, d, e.Path(), want, path)
					}
					// The template digest, computed from the fields here.
					var td []byte
					for _, f := range [][]byte{append([]byte("sha256:\x00"), want...), append([]byte(path), 0)} {
						td = binary.LittleEndian.AppendUint32(td, uint32(len(f)))
						td = append(td, f...)
					}
					if sum := sha1.Sum(td); !bytes.Equal(e.TemplateHash, sum[:]) {
						t.Errorf("entry %d: logged template hash %x, want sha1 %x", i, e.TemplateHash, sum)
					}
				}
				// Re-encoding with the ima package gives the same bytes.
				var again []byte
				for i := range parsed {
					if format == simhost.FormatASCII {
						again = ima.AppendASCII(again, &parsed[i])
					} else {
						again = ima.AppendBinary(again, &parsed[i], binary.LittleEndian)
					}
				}
				if !bytes.Equal(again, data) {
					t.Error("the ima package re-encodes the list differently")
				}

				// Both banks replay to the TPM's PCR 10.
				res, err := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA1, ima.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA256][10]) || !bytes.Equal(res.PCR["sha1"], pcrs[tpm2.TPMAlgSHA1][10]) {
					t.Errorf("replay: sha1 %x sha256 %x; TPM PCR 10: sha1 %x sha256 %x", res.PCR["sha1"], res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA1][10], pcrs[tpm2.TPMAlgSHA256][10])
				}
				// And so does a replay computed here.
				for alg, hf := range bankHashes {
					pcr := make([]byte, hf.Size())
					for _, e := range parsed {
						d := hf.New()
						d.Write(e.TemplateData)
						x := hf.New()
						x.Write(pcr)
						x.Write(d.Sum(nil))
						pcr = x.Sum(nil)
					}
					if !bytes.Equal(pcr, pcrs[alg][10]) {
						t.Errorf("%v: replay here %x, TPM %x", alg, pcr, pcrs[alg][10])
					}
				}
			})
		}
	}
}

// TestIMAEntryMatchesKernel rebuilds every ima-ng sha256 entry of a real
// kernel's ASCII list from its path and file digest alone; the template
// hash in each line was computed by that kernel, so a match proves the
// template data byte for byte.
func TestIMAEntryMatchesKernel(t *testing.T) {
	f, err := os.Open(testenv.Data(t, "ima", "keylime-ima-log-sha256"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		fields := strings.SplitN(line, " ", 5)
		if len(fields) != 5 || fields[2] != "ima-ng" || !strings.HasPrefix(fields[3], "sha256:") {
			continue
		}
		d, err := hex.DecodeString(strings.TrimPrefix(fields[3], "sha256:"))
		if err != nil {
			t.Fatal(err)
		}
		e := simhost.IMAEntry{Path: fields[4], FileDigest: d}
		if got := string(e.AppendASCII(nil)); got != line+"\n" {
			t.Errorf("entry %d:\n got %q\nwant %q", n, got, line+"\n")
		}
		// The binary form carries the same template hash.
		bin := e.AppendBinary(nil)
		if hex.EncodeToString(bin[4:24]) != fields[1] {
			t.Errorf("entry %d: binary template hash %x, kernel's %s", n, bin[4:24], fields[1])
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no ima-ng sha256 entries in the real list")
	}
}

func TestIMAInputErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	binaryList := filepath.Join(dir, "binary")
	if err := os.WriteFile(binaryList, simhost.IMAEntry{Path: "boot_aggregate", FileDigest: make([]byte, 32)}.AppendBinary(nil), 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("\xff\xfe not a list"), 0o644)
	entry := simhost.IMAEntry{Path: "/x", FileDigest: make([]byte, 32)}
	for _, tc := range []struct {
		name string
		log  simhost.IMALog
		e    simhost.IMAEntry
	}{
		{"missing list", simhost.IMALog{Path: filepath.Join(dir, "none")}, entry},
		{"format mismatch", simhost.IMALog{Path: binaryList, Format: simhost.FormatASCII}, entry},
		{"not a list", simhost.IMALog{Path: garbage}, entry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(tc.log.Path)
			// The extender is never reached: input is checked first.
			err := tc.log.Append(ctx, nil, tc.e)
			var ie *simhost.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("Append: %v, want an *InputError", err)
			}
			after, _ := os.ReadFile(tc.log.Path)
			if !bytes.Equal(before, after) {
				t.Error("a refused append changed the list")
			}
		})
	}
	for _, name := range []string{filepath.Join(dir, "absent"), dir} {
		_, err := simhost.MeasureFile(name)
		var ie *simhost.InputError
		if !errors.As(err, &ie) {
			t.Errorf("MeasureFile(%s): %v, want an *InputError", name, err)
		}
	}
}

func TestIMAInitRefusesExtendedPCR10(t *testing.T) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			tpm := be.open(t)
			list := simhost.IMALog{Path: filepath.Join(t.TempDir(), "m")}
			if _, err := list.Init(ctx, tpm); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(list.Path)
			if _, err := list.Init(ctx, tpm); !errors.Is(err, simhost.ErrPCRsExtended) {
				t.Fatalf("second Init: %v, want ErrPCRsExtended", err)
			}
			if after, _ := os.ReadFile(list.Path); !bytes.Equal(before, after) {
				t.Error("a refused Init replaced the list")
			}
		})
	}
}

// TestIMAConcurrentReaderAndAppenders appends from several goroutines, each
// with its own connection to the simulator, while a reader rereads the
// list: the reader only ever sees whole entries, and at the end the list
// replays to PCR 10 although appenders interleaved.
func TestIMAConcurrentReaderAndAppenders(t *testing.T) {
	ctx := context.Background()
	tpm := openSimulator(t)
	list := simhost.IMALog{Path: filepath.Join(t.TempDir(), "m")}
	if _, err := list.Init(ctx, tpm); err != nil {
		t.Fatal(err)
	}
	const appenders, each = 4, 25
	stop := make(chan struct{})
	// A reader may catch an entry half written (a write that crosses a
	// page boundary is not atomic for a concurrent read()), as the agent
	// may: what it sees must be a prefix of the final list, and every whole
	// entry in it must parse.
	readerDone := make(chan error, 1)
	var snapshots [][]byte
	go func() {
		for {
			data, err := os.ReadFile(list.Path)
			if err != nil {
				readerDone <- err
				return
			}
			p := ima.NewParser(data, ima.ParseOptions{})
			for p.Next() {
			}
			if p.Err() != nil && p.Offset() == 0 {
				readerDone <- fmt.Errorf("a reader could not parse the list's first entry (%d bytes): %w", len(data), p.Err())
				return
			}
			if len(snapshots) < 500 {
				snapshots = append(snapshots, data)
			}
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sum := sha256.Sum256([]byte(fmt.Sprint(a, i)))
				e := simhost.IMAEntry{Path: fmt.Sprintf("/appender%d/file%d", a, i), FileDigest: sum[:]}
				if err := list.Append(ctx, tpm, e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(list.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range snapshots {
		if !bytes.HasPrefix(data, snap) {
			t.Fatalf("a reader saw %d bytes that are not a prefix of the final list", len(snap))
		}
	}
	res, err := ima.Replay(data, ima.ParseOptions{}, ima.ReplayOptions{}, ima.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := simhost.ReadPCRs(ctx, tpm, 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 1+appenders*each || !bytes.Equal(res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA256][10]) {
		t.Errorf("%d entries replay to %x; TPM PCR 10 is %x", res.Entries, res.PCR["sha256"], pcrs[tpm2.TPMAlgSHA256][10])
	}
}

func TestDetectFormat(t *testing.T) {
	bin := simhost.IMAEntry{Path: "boot_aggregate", FileDigest: make([]byte, 32)}.AppendBinary(nil)
	for _, tc := range []struct {
		head []byte
		want simhost.Format
		ok   bool
	}{
		{bin, simhost.FormatBinary, true},
		{[]byte("10 abc"), simhost.FormatASCII, true},
		{[]byte(" 9 abc"), simhost.FormatASCII, true},
		{[]byte{0, 0, 0, 10}, simhost.FormatAuto, false},
		{[]byte{0xff, 0, 0, 0}, simhost.FormatAuto, false},
		{[]byte{10, 0}, simhost.FormatAuto, false},
		{nil, simhost.FormatAuto, false},
	} {
		got, err := simhost.DetectFormat(tc.head)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("DetectFormat(% x) = %v, %v; want %v, ok=%v", tc.head, got, err, tc.want, tc.ok)
		}
	}
}
