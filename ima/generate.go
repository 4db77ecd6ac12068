package ima

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// NewRuntimePolicy is an empty policy in Keylime's current format.
func NewRuntimePolicy() RuntimePolicy {
	return RuntimePolicy{
		Meta:     PolicyMeta{Version: 1, Generator: GeneratorLegacyAllowList, Timestamp: time.Now().UTC().Format("2006-01-02 15:04:05.000000")},
		Digests:  map[string][]string{},
		Excludes: []string{},
		Keyrings: map[string][]string{},
		IMA:      PolicyIMA{IgnoredKeyrings: []string{}, LogHashAlg: "sha1"},
		IMABuf:   map[string][]string{},
	}
}

func addDigest(m map[string][]string, key, hx string) {
	list := m[key]
	if !slices.Contains(list, hx) {
		m[key] = append(list, hx)
	}
}

func sortLists(m map[string][]string) {
	for _, v := range m {
		slices.Sort(v)
	}
}

// PolicyFromLog builds a policy that accepts exactly what a known-good
// host's measurement list shows: every measured path with its digests
// (including boot_aggregate, as Keylime does), every key measured into a
// keyring under "keyrings", other ima-buf buffers under "ima-buf".
// Violations are skipped: their digest is not a file's.
func PolicyFromLog(data []byte, opts ParseOptions) (RuntimePolicy, error) {
	rp := NewRuntimePolicy()
	p := NewParser(data, opts)
	var hashAlg Algorithm
	for p.Next() {
		e := p.Entry()
		if hashAlg == AlgUnknown {
			hashAlg = e.TemplateHashAlg
		}
		if e.IsViolation() {
			continue
		}
		d, ok := e.Digest()
		path := e.Path()
		if e.Template == nil || !ok || path == nil {
			return RuntimePolicy{}, fmt.Errorf("ima: entry %d: template %q has no digest and name to put in a policy", e.Index, e.TemplateName)
		}
		if d.Alg == AlgUnknown || d.Alg == MD5 {
			return RuntimePolicy{}, fmt.Errorf("ima: entry %d (%s): digest algorithm %q is not one a policy can hold", e.Index, path, d.AlgName)
		}
		hx := hex.EncodeToString(d.Digest)
		if buf, _, isBuf := e.field(FieldBuf); isBuf {
			if _, isKey, _ := KeyFromBytes(buf, string(path)); isKey {
				addDigest(rp.Keyrings, string(path), hx)
			} else {
				addDigest(rp.IMABuf, string(path), hx)
			}
			continue
		}
		addDigest(rp.Digests, string(path), hx)
	}
	if err := p.Err(); err != nil {
		return RuntimePolicy{}, err
	}
	switch hashAlg {
	case SHA256, SHA384, SHA512:
		rp.IMA.LogHashAlg = hashAlg.String()
	}
	sortLists(rp.Digests)
	sortLists(rp.Keyrings)
	sortLists(rp.IMABuf)
	return rp, nil
}

func newHash(a Algorithm) (hash.Hash, error) {
	switch a {
	case SHA1:
		return sha1.New(), nil
	case SHA256:
		return sha256.New(), nil
	case SHA384:
		return sha512.New384(), nil
	case SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("ima: %s: %w", a, ErrUnsupportedHash)
}

// elfMagic opens every ELF file: executables, shared libraries, modules.
var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// PolicyFromRootfs hashes every regular file under dir that is executable
// (any x bit) or an ELF object (shared libraries are often not
// executable), and lists it under its path as the booted system will see it:
// "/" + the path relative to dir. Symbolic links are not followed; IMA
// measures the file they point to, which the walk reaches under its own
// name.
func PolicyFromRootfs(ctx context.Context, dir string, alg Algorithm) (RuntimePolicy, error) {
	rp := NewRuntimePolicy()
	h, err := newHash(alg)
	if err != nil {
		return RuntimePolicy{}, err
	}
	buf := make([]byte, 256<<10)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if info.Mode().Perm()&0o111 == 0 {
			var magic [4]byte
			if n, _ := io.ReadFull(f, magic[:]); n < 4 || !bytes.Equal(magic[:], elfMagic) {
				return nil
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
		h.Reset()
		if _, err := io.CopyBuffer(h, f, buf); err != nil {
			return fmt.Errorf("ima: hashing %s: %w", path, err)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		addDigest(rp.Digests, "/"+filepath.ToSlash(rel), hex.EncodeToString(h.Sum(nil)))
		return nil
	})
	if err != nil {
		return RuntimePolicy{}, err
	}
	return rp, nil
}
