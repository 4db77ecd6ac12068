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
	"strings"
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
	rp, _, err := PolicyFromLogWith(data, LogPolicyOptions{Parse: opts})
	return rp, err
}

// LogPolicyOptions tunes PolicyFromLogWith.
type LogPolicyOptions struct {
	Parse ParseOptions
	// Keyrings names the keyrings whose measured keys go into "keyrings";
	// nil takes the keys of every keyring the list measured into (a
	// policy that accepts the list it was made from).
	Keyrings []string
	// IgnoredKeyrings are keyrings whose keys are left out, as Keylime's
	// --ignored-keyrings does (the caller lists them under
	// ima.ignored_keyrings, where "*" ignores all).
	IgnoredKeyrings []string
}

// LogPolicyInfo describes the list a policy was made from, for the
// choices a caller makes around it (the digest algorithm of a root
// filesystem merged with it, keyrings named but never measured into).
type LogPolicyInfo struct {
	// Entries counts the entries, Violations those skipped as violations.
	Entries    uint64
	Violations uint64
	// FileDigestAlgs counts the file digests of each algorithm, leaving out
	// boot_aggregate (whose algorithm follows the TPM's banks, not
	// ima_hash) and ima-buf entries.
	FileDigestAlgs map[Algorithm]int
	// BootAggregate is entry 0's digest as "algo:hex" when it is a
	// boot_aggregate that is not a violation, else empty.
	BootAggregate string
	// KeyringKeys counts the keys measured into each keyring, taken or not;
	// SkippedKeyrings names, sorted, the keyrings whose keys were left out
	// because Keyrings does not name them (ignored keyrings are not listed).
	KeyringKeys     map[string]int
	SkippedKeyrings []string
	// TemplateHashAlg is the algorithm of the logged template digests.
	TemplateHashAlg Algorithm
}

// MainFileDigestAlg is the algorithm most of the list's file digests use
// (the kernel's ima_hash), AlgUnknown when the list holds none.
func (li LogPolicyInfo) MainFileDigestAlg() Algorithm {
	best, n := AlgUnknown, 0
	for a, c := range li.FileDigestAlgs {
		if c > n || (c == n && a < best) {
			best, n = a, c
		}
	}
	return best
}

// PolicyFromLogWith is PolicyFromLog with a choice of keyrings, and a
// description of the list.
func PolicyFromLogWith(data []byte, opts LogPolicyOptions) (RuntimePolicy, LogPolicyInfo, error) {
	rp := NewRuntimePolicy()
	info := LogPolicyInfo{FileDigestAlgs: map[Algorithm]int{}, KeyringKeys: map[string]int{}}
	ignored := map[string]bool{}
	for _, k := range opts.IgnoredKeyrings {
		ignored[k] = true
	}
	var wanted map[string]bool
	if opts.Keyrings != nil {
		wanted = map[string]bool{}
		for _, k := range opts.Keyrings {
			wanted[k] = true
		}
	}
	skipped := map[string]bool{}
	p := NewParser(data, opts.Parse)
	for p.Next() {
		e := p.Entry()
		info.Entries++
		if info.TemplateHashAlg == AlgUnknown {
			info.TemplateHashAlg = e.TemplateHashAlg
		}
		if e.IsViolation() {
			info.Violations++
			continue
		}
		d, ok := e.Digest()
		path := e.Path()
		if e.Template == nil || !ok || path == nil {
			return RuntimePolicy{}, info, fmt.Errorf("ima: entry %d: template %q has no digest and name to put in a policy", e.Index, e.TemplateName)
		}
		if d.Alg == AlgUnknown || d.Alg == MD5 {
			return RuntimePolicy{}, info, fmt.Errorf("ima: entry %d (%s): digest algorithm %q is not one a policy can hold", e.Index, path, d.AlgName)
		}
		hx := hex.EncodeToString(d.Digest)
		if buf, _, isBuf := e.field(FieldBuf); isBuf {
			name := string(path)
			if _, isKey, _ := KeyFromBytes(buf, name); isKey {
				info.KeyringKeys[name]++
				switch {
				case ignored[name] || ignored["*"]:
				case wanted != nil && !wanted[name]:
					skipped[name] = true
				default:
					addDigest(rp.Keyrings, name, hx)
				}
			} else {
				addDigest(rp.IMABuf, name, hx)
			}
			continue
		}
		if string(path) == "boot_aggregate" {
			if e.Index == 0 {
				info.BootAggregate = d.Alg.String() + ":" + hx
			}
		} else {
			info.FileDigestAlgs[d.Alg]++
		}
		addDigest(rp.Digests, string(path), hx)
	}
	if err := p.Err(); err != nil {
		return RuntimePolicy{}, info, err
	}
	switch info.TemplateHashAlg {
	case SHA256, SHA384, SHA512:
		rp.IMA.LogHashAlg = info.TemplateHashAlg.String()
	}
	for k := range skipped {
		info.SkippedKeyrings = append(info.SkippedKeyrings, k)
	}
	slices.Sort(info.SkippedKeyrings)
	sortLists(rp.Digests)
	sortLists(rp.Keyrings)
	sortLists(rp.IMABuf)
	return rp, info, nil
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

// DefaultRootfsSkip are the directories a root filesystem walk leaves out
// unless told otherwise: pseudo and volatile file systems, and the places
// nothing is installed to (Keylime's create runtime skips the same list).
// Executables there are not known-good by being on the image.
var DefaultRootfsSkip = []string{"/dev", "/lost+found", "/media", "/mnt", "/proc", "/run", "/snap", "/sys", "/tmp", "/var"}

// RootfsOptions tunes PolicyFromRootfsWith.
type RootfsOptions struct {
	// Alg is the file digest algorithm: the kernel's ima_hash on the hosts
	// the policy is for.
	Alg Algorithm
	// Skip lists paths as the booted system sees them ("/var", "/opt/scratch")
	// that are not walked: a directory with everything under it, or a
	// file.
	Skip []string
	// Excludes are the policy's exclude patterns: files they match are not
	// hashed, since the policy passes them whatever their contents.
	Excludes []string
}

// PolicyFromRootfs hashes the executables and ELF objects under dir (see
// PolicyFromRootfsWith), skipping DefaultRootfsSkip.
func PolicyFromRootfs(ctx context.Context, dir string, alg Algorithm) (RuntimePolicy, error) {
	return PolicyFromRootfsWith(ctx, dir, RootfsOptions{Alg: alg, Skip: DefaultRootfsSkip})
}

// PolicyFromRootfsWith hashes every regular file under dir that is
// executable (any x bit) or an ELF object (shared libraries are often not
// executable), and lists it under its path as the booted system will see
// it: "/" + the path relative to dir. Symbolic links are not followed; IMA
// measures the file they point to, which the walk reaches under its own
// name (dir itself may be a link). Other special files (devices, FIFOs,
// sockets) are never opened. A file that cannot be read is an error naming
// it: a policy silently missing a binary would fail the host later.
func PolicyFromRootfsWith(ctx context.Context, dir string, opts RootfsOptions) (RuntimePolicy, error) {
	rp := NewRuntimePolicy()
	h, err := newHash(opts.Alg)
	if err != nil {
		return RuntimePolicy{}, err
	}
	excl, err := compileExcludes(opts.Excludes)
	if err != nil {
		return RuntimePolicy{}, err
	}
	skip := map[string]bool{}
	for _, s := range opts.Skip {
		s = "/" + strings.Trim(filepath.ToSlash(filepath.Clean("/"+s)), "/")
		skip[s] = true
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return RuntimePolicy{}, err
	}
	buf := make([]byte, 256<<10)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		if rel == "." {
			name = "/"
		}
		if skip[name] && name != "/" {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if excl != nil && excl.MatchString(name) {
			return nil
		}
		sum, err := hashIfCode(path, d, h, buf)
		if err != nil || sum == nil {
			return err
		}
		addDigest(rp.Digests, name, hex.EncodeToString(sum))
		return nil
	})
	if err != nil {
		return RuntimePolicy{}, err
	}
	return rp, nil
}

// hashIfCode hashes the file when it is executable or an ELF object, and
// returns nil for any other file.
func hashIfCode(path string, d fs.DirEntry, h hash.Hash, buf []byte) ([]byte, error) {
	info, err := d.Info()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info.Mode().Perm()&0o111 == 0 {
		var magic [4]byte
		if n, _ := io.ReadFull(f, magic[:]); n < 4 || !bytes.Equal(magic[:], elfMagic) {
			return nil, nil
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
	}
	h.Reset()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return nil, fmt.Errorf("ima: hashing %s: %w", path, err)
	}
	return h.Sum(nil), nil
}
