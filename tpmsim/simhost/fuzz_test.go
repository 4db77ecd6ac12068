package simhost_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
)

// FuzzDetectFormat feeds arbitrary list heads to the only parser of
// outside input in the package.
func FuzzDetectFormat(f *testing.F) {
	f.Add(simhost.IMAEntry{Path: "boot_aggregate", FileDigest: make([]byte, 32)}.AppendBinary(nil))
	f.Add([]byte("10 1d8d532d463c9f8c205d0df7787669a85f93e260 ima-ng sha1:00 boot_aggregate\n"))
	f.Add([]byte{0, 0, 0, 10})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, head []byte) {
		got, err := simhost.DetectFormat(head)
		switch {
		case err != nil:
			if got != simhost.FormatAuto {
				t.Fatalf("error %v with format %v", err, got)
			}
		case got == simhost.FormatBinary:
			if len(head) < 4 || head[0] >= 24 {
				t.Fatalf("% x called binary", head)
			}
		case got == simhost.FormatASCII:
			if head[0] != ' ' && (head[0] < '0' || head[0] > '9') {
				t.Fatalf("% x called ASCII", head)
			}
		default:
			t.Fatalf("format %v without an error", got)
		}
	})
}

// FuzzIMAEntry checks that any entry the simulated kernel writes, in either
// form, reads back through Vigil's IMA parser with its path, digest and
// template hash intact.
func FuzzIMAEntry(f *testing.F) {
	f.Add("/usr/bin/bash", []byte("content"))
	f.Add("boot_aggregate", []byte{})
	f.Add("/path with spaces/x", []byte{0})
	f.Fuzz(func(t *testing.T, path string, content []byte) {
		if path == "" || strings.ContainsRune(path, 0) {
			return // the kernel's names are non-empty C strings
		}
		sum := sha256.Sum256(content)
		e := simhost.IMAEntry{Path: path, FileDigest: sum[:]}
		forms := map[string][]byte{"binary": e.AppendBinary(nil)}
		if !strings.ContainsAny(path, "\n\r") && strings.TrimSpace(path) == path {
			forms["ascii"] = e.AppendASCII(nil)
		}
		for name, data := range forms {
			entries, err := ima.ParseAll(data, ima.ParseOptions{})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(entries) != 1 {
				t.Fatalf("%s: %d entries", name, len(entries))
			}
			got := entries[0]
			d, ok := got.Digest()
			if !ok || !bytes.Equal(d.Digest, sum[:]) || string(got.Path()) != path {
				t.Fatalf("%s: read back %s %q, wrote sha256:%x %q", name, d, got.Path(), sum, path)
			}
			if err := got.CheckTemplateHash(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	})
}

// FuzzBootLog checks that every valid configuration gives a log that
// go-eventlog parses, replays to the PCRs the builder predicts, and reads
// the kernel command line from.
func FuzzBootLog(f *testing.F) {
	f.Add("vigil-sim", "", true)
	f.Add("", "root=/dev/sda1 ro", false)
	f.Add("x", "/vmlinuz", true)
	f.Fuzz(func(t *testing.T, seed, cmdline string, sb bool) {
		cfg := simhost.BootConfig{Seed: seed, KernelCmdline: cmdline, SecureBoot: sb}
		l, err := simhost.NewBootLog(cfg)
		if err != nil {
			if cfg.Validate() == nil {
				t.Fatalf("valid config refused: %v", err)
			}
			return
		}
		if cmdline == "" {
			cmdline = simhost.DefaultKernelCmdline
		}
		pcrs := l.PCRs()
		events, err := tcg.ParseAndReplay(l.Bytes(), eventlogBank(tpm2.TPMAlgSHA256, pcrs[tpm2.TPMAlgSHA256]).MRs(), tcg.ParseOpts{})
		if err != nil {
			t.Fatal(err)
		}
		grub, err := extract.GrubStateFromTPMLog(bankHashes[tpm2.TPMAlgSHA256], events)
		if err != nil {
			t.Fatal(err)
		}
		k, err := extract.LinuxKernelStateFromGRUB(grub)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSuffix(k.GetCommandLine(), "\x00"); got != cmdline {
			t.Fatalf("kernel command line %q, want %q", got, cmdline)
		}
	})
}

func BenchmarkNewBootLog(b *testing.B) {
	for b.Loop() {
		if _, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIMAEntryAppendBinary(b *testing.B) {
	sum := sha256.Sum256([]byte("x"))
	e := simhost.IMAEntry{Path: "/usr/lib/x86_64-linux-gnu/libc.so.6", FileDigest: sum[:]}
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = e.AppendBinary(buf[:0])
	}
}

// BenchmarkIMAAppendSimulator is one measured file end to end: the list
// append (open, lock, write) and the PCR 10 extend on the simulator.
func BenchmarkIMAAppendSimulator(b *testing.B) {
	ctx := context.Background()
	tpm := openSimulator(b)
	list := simhost.IMALog{Path: filepath.Join(b.TempDir(), "m")}
	if _, err := list.Init(ctx, tpm); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256([]byte("x"))
	e := simhost.IMAEntry{Path: "/usr/bin/true", FileDigest: sum[:]}
	for b.Loop() {
		if err := list.Append(ctx, tpm, e); err != nil {
			b.Fatal(err)
		}
	}
}
