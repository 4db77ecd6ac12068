package simhost

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/flock"
)

// IMAPCR is the PCR IMA extends.
const IMAPCR = 10

// bootAggregateName is the name of the list's first entry.
const bootAggregateName = "boot_aggregate"

// templateName is the template the simulated kernel logs with (the
// default since Linux 3.13 with ima_template=ima-ng).
const templateName = "ima-ng"

// Format is the form of a measurement list file.
type Format int

const (
	// FormatAuto takes the format of an existing, non-empty list, and
	// FormatBinary for a new one.
	FormatAuto Format = iota
	// FormatBinary is binary_runtime_measurements: little-endian, the SHA-1
	// template digest, length-prefixed template data.
	FormatBinary
	// FormatASCII is ascii_runtime_measurements: one line per entry.
	FormatASCII
)

func (f Format) String() string {
	switch f {
	case FormatBinary:
		return "binary"
	case FormatASCII:
		return "ascii"
	}
	return "auto"
}

// ParseFormat reads a --format value.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "auto":
		return FormatAuto, nil
	case "binary":
		return FormatBinary, nil
	case "ascii":
		return FormatASCII, nil
	}
	return FormatAuto, fmt.Errorf("unknown measurement list format %q (want binary or ascii)", s)
}

// InputError is a problem with what was asked for (a missing file, a list
// in another format), as opposed to a failing TPM or file system.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErrorf(format string, args ...any) error {
	return &InputError{Err: fmt.Errorf(format, args...)}
}

// IMAEntry is one ima-ng measurement: a SHA-256 file digest and a path.
type IMAEntry struct {
	// Path is the event name: the measured file's absolute path, or
	// "boot_aggregate".
	Path string
	// FileDigest is the SHA-256 of the file (or the boot aggregate).
	FileDigest []byte
}

// TemplateData is what the kernel hashes into the template digest: each
// ima-ng field preceded by its little-endian 32-bit length. d-ng is
// "sha256:\0" and the digest; n-ng is the name with its terminating NUL.
func (e IMAEntry) TemplateData() []byte {
	dng := append([]byte("sha256:\x00"), e.FileDigest...)
	nng := append([]byte(e.Path), 0)
	out := make([]byte, 0, 8+len(dng)+len(nng))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(dng)))
	out = append(out, dng...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(nng)))
	return append(out, nng...)
}

// Digests are the template digests the entry extends PCR 10 with: each
// bank's hash of the template data (Linux 5.8 and later).
func (e IMAEntry) Digests() Digests {
	return digestsOf(e.TemplateData())
}

// AppendBinary appends the entry as binary_runtime_measurements holds it:
// PCR, the SHA-1 template digest (the one the kernel logs whatever the
// banks), template name length and name, template data
// length and data, all little-endian.
func (e IMAEntry) AppendBinary(dst []byte) []byte {
	td := e.TemplateData()
	dst = binary.LittleEndian.AppendUint32(dst, IMAPCR)
	th := sha1.Sum(td)
	dst = append(dst, th[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(templateName)))
	dst = append(dst, templateName...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(td)))
	return append(dst, td...)
}

// AppendASCII appends the entry as ascii_runtime_measurements prints it:
// "10 <sha1 template digest> ima-ng sha256:<hex> <path>\n".
func (e IMAEntry) AppendASCII(dst []byte) []byte {
	dst = append(dst, strconv.Itoa(IMAPCR)...)
	dst = append(dst, ' ')
	th := sha1.Sum(e.TemplateData())
	dst = hex.AppendEncode(dst, th[:])
	dst = append(dst, " "+templateName+" sha256:"...)
	dst = hex.AppendEncode(dst, e.FileDigest)
	dst = append(dst, ' ')
	dst = append(dst, e.Path...)
	return append(dst, '\n')
}

func (e IMAEntry) append(dst []byte, f Format) []byte {
	if f == FormatASCII {
		return e.AppendASCII(dst)
	}
	return e.AppendBinary(dst)
}

// BootAggregate is the first entry of a measurement list: as
// ima_calc_boot_aggregate computes it for a SHA-256 bank, the SHA-256 of
// PCRs 0-9 read from that bank, concatenated. (For a SHA-1 bank the kernel
// hashes PCRs 0-7 only; the simulated kernel uses SHA-256, like every
// kernel since 5.8 on a TPM with that bank.)
func BootAggregate(sha256PCRs map[int][]byte) (IMAEntry, error) {
	h := sha256.New()
	for _, p := range bootPCRs {
		v := sha256PCRs[p]
		if len(v) != sha256.Size {
			return IMAEntry{}, fmt.Errorf("boot_aggregate: PCR %d is %d bytes, want %d", p, len(v), sha256.Size)
		}
		h.Write(v)
	}
	return IMAEntry{Path: bootAggregateName, FileDigest: h.Sum(nil)}, nil
}

// MeasureFile makes the entry for a file: its SHA-256 and absolute path.
func MeasureFile(name string) (IMAEntry, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return IMAEntry{}, err
	}
	f, err := os.Open(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return IMAEntry{}, &InputError{Err: err}
		}
		return IMAEntry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return IMAEntry{}, err
	}
	if !st.Mode().IsRegular() {
		return IMAEntry{}, inputErrorf("measure %s: not a regular file", abs)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return IMAEntry{}, fmt.Errorf("measure %s: %w", abs, err)
	}
	return IMAEntry{Path: abs, FileDigest: h.Sum(nil)}, nil
}

// IMALog is a simulated kernel's measurement list file, the stand-in for
// /sys/kernel/security/ima/binary_runtime_measurements.
type IMALog struct {
	Path   string
	Format Format
}

// Init starts a new list, as the kernel does at boot: it checks that PCR
// 10 is at its reset value (else ErrPCRsExtended), computes the
// boot_aggregate from PCRs 0-9, writes a list holding only that entry
// (replacing any file at Path atomically, so a reader sees the old list or
// the new one), and extends PCR 10 with it.
func (l IMALog) Init(ctx context.Context, t TPM) (IMAEntry, error) {
	if err := requireReset(ctx, t, IMAPCR); err != nil {
		return IMAEntry{}, err
	}
	pcrs, err := ReadPCRs(ctx, t, bootPCRs[:]...)
	if err != nil {
		return IMAEntry{}, err
	}
	e, err := BootAggregate(pcrs[tpm2.TPMAlgSHA256])
	if err != nil {
		return IMAEntry{}, err
	}
	format := l.Format
	if format == FormatAuto {
		format = FormatBinary
	}
	if err := WriteFileAtomic(l.Path, e.append(nil, format)); err != nil {
		return IMAEntry{}, err
	}
	if err := t.PCRExtend(ctx, IMAPCR, e.Digests()); err != nil {
		return IMAEntry{}, fmt.Errorf("extend PCR %d with boot_aggregate: %w", IMAPCR, err)
	}
	return e, nil
}

// Append adds entries to the list and extends PCR 10 with each, entry by
// entry, in the kernel's order: the entry is in the list before the PCR
// holds it, so a reader may see the list run ahead of a quote, never
// behind. The entries are one write to a file opened with O_APPEND, so
// concurrent appenders never interleave; a concurrent reader can still
// catch the tail of an entry being written (a write crossing a page is not
// atomic for read()), so readers keep whole entries only, as the agent
// does. An exclusive flock
// keeps concurrent appenders' list order and extend order the same. The
// list must exist (Init creates it).
func (l IMALog) Append(ctx context.Context, t PCRExtender, entries ...IMAEntry) error {
	f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return inputErrorf("measurement list %s does not exist (create it with --init)", l.Path)
		}
		return err
	}
	defer f.Close()
	if err := flock.Lock(f); err != nil {
		return fmt.Errorf("lock %s: %w", l.Path, err)
	}
	defer flock.Unlock(f)

	var head [4]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", l.Path, err)
	}
	format := l.Format
	if n > 0 {
		found, err := DetectFormat(head[:n])
		if err != nil {
			return &InputError{Err: fmt.Errorf("%s: %w", l.Path, err)}
		}
		if format != FormatAuto && format != found {
			return inputErrorf("%s is a %s list; cannot append %s entries", l.Path, found, format)
		}
		format = found
	} else if format == FormatAuto {
		format = FormatBinary
	}
	for _, e := range entries {
		if format == FormatASCII && strings.ContainsAny(e.Path, "\n") {
			return inputErrorf("%q: a line break in the path would break the ASCII list", e.Path)
		}
	}
	// One write for all the entries, then the extends: the list runs
	// ahead of PCR 10 until the last extend, as the kernel's does while it
	// measures, and a fleet of simulated hosts pays one system call per
	// append instead of one per entry.
	var buf []byte
	for _, e := range entries {
		buf = e.append(buf, format)
	}
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("append %d entries to %s: %w", len(entries), l.Path, err)
	}
	for i, e := range entries {
		if err := t.PCRExtend(ctx, IMAPCR, e.Digests()); err != nil {
			return fmt.Errorf("extend PCR %d for %s (all %d entries appended, %d extended): %w", IMAPCR, e.Path, len(entries), i, err)
		}
	}
	return nil
}

// DetectFormat tells the list formats apart by their first bytes: a binary
// list starts with a little-endian PCR index below 24 (bytes that are not
// printable), an ASCII list with a decimal PCR index padded to two
// columns. Big-endian binary lists are recognised and refused: the
// simulated kernel is little-endian.
func DetectFormat(head []byte) (Format, error) {
	if len(head) == 0 {
		return FormatAuto, errors.New("empty measurement list")
	}
	c := head[0]
	switch {
	case c == ' ' || c >= '0' && c <= '9':
		return FormatASCII, nil
	case len(head) >= 4 && c < 24 && head[1] == 0 && head[2] == 0 && head[3] == 0:
		return FormatBinary, nil
	case len(head) >= 4 && c == 0 && head[1] == 0 && head[2] == 0 && head[3] < 24:
		return FormatAuto, errors.New("a big-endian binary measurement list; the simulated kernel writes little-endian")
	}
	return FormatAuto, fmt.Errorf("not a measurement list: starts with % x", head[:min(len(head), 4)])
}

// WriteFileAtomic replaces path with data through a temporary file and a
// rename, so that a reader sees the old content or the new, never a part.
// A missing directory is an *InputError.
func WriteFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return inputErrorf("%s: directory %s does not exist", path, dir)
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
