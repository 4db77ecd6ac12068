package ima

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/testenv"
)

// These helpers encode the kernel's formats straight from
// Documentation/security/IMA-templates.rst and ima_fs.c, independently of
// the parser, so that tests compare two readings of the spec.

func le32(n int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(n)) }

// specTemplateData is the hashed form of a non-'ima' template: every field
// preceded by its little-endian 32-bit length.
func specTemplateData(fields ...[]byte) []byte {
	var out []byte
	for _, f := range fields {
		out = append(out, le32(len(f))...)
		out = append(out, f...)
	}
	return out
}

// specDigestNG is a d-ng field: "<algo>:" NUL digest.
func specDigestNG(prefix string, digest []byte) []byte {
	return append([]byte(prefix+":\x00"), digest...)
}

// specName is an n-ng field: the name and a NUL.
func specName(name string) []byte { return append([]byte(name), 0) }

// specBinaryEntry is one binary_runtime_measurements entry (little-endian).
func specBinaryEntry(pcr int, th []byte, template string, td []byte) []byte {
	out := le32(pcr)
	out = append(out, th...)
	out = append(out, le32(len(template))...)
	out = append(out, template...)
	out = append(out, le32(len(td))...)
	return append(out, td...)
}

func sha1Of(b []byte) []byte   { s := sha1.Sum(b); return s[:] }
func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// extend is a PCR extend: H(old || digest).
func extend(h func([]byte) []byte, pcr, d []byte) []byte {
	return h(append(append([]byte{}, pcr...), d...))
}

func ff(n int) []byte { return []byte(strings.Repeat("\xff", n)) }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readData(t testing.TB, rel ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Data(t, rel...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// asciiLine renders an ASCII entry as ima_fs.c does.
func asciiLine(pcr int, th []byte, template string, fields ...string) string {
	s := fmt.Sprintf("%2d %x %s", pcr, th, template)
	for _, f := range fields {
		s += " " + f
	}
	return s + "\n"
}

// readFuzzSeed reads a shared test file for a fuzz seed, without skipping
// when the data is absent (the hand-built seeds still run).
func readFuzzSeed(name string) ([]byte, error) {
	dir := testenv.DataDir()
	if dir == "" {
		return nil, os.ErrNotExist
	}
	return os.ReadFile(filepath.Join(dir, "ima", name))
}

func readPolicySeed(name string) ([]byte, error) {
	dir := testenv.DataDir()
	if dir == "" {
		return nil, os.ErrNotExist
	}
	return os.ReadFile(filepath.Join(dir, "policy", name))
}
