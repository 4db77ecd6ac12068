package soft

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// KeyCache is a directory of pre-generated RSA-2048 keys for simulated
// fleets. RSA key generation costs tens of milliseconds, which dominates
// starting thousands of soft TPMs; with a cache, the key for (host, purpose)
// is generated once, stored, and read back on every later run, so host 17's
// EK is the same key run after run and never another host's.
//
// The keys are ordinary, fresh-at-first-use RSA keys; what the cache saves
// is generation time, not any check: EK certificates and AK blobs are still
// made per TPM. Keys are stored as PKCS#8 DER files readable by the owner
// only. Several processes may share a directory.
type KeyCache struct {
	dir string
}

// maxKeyFile bounds what RSAKey reads: a PKCS#8 RSA-2048 key is ~1.2 KB.
const maxKeyFile = 8 << 10

// NewKeyCache uses dir (created if needed) as a key cache.
func NewKeyCache(dir string) (*KeyCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	return &KeyCache{dir: dir}, nil
}

// Dir is the cache directory.
func (c *KeyCache) Dir() string { return c.dir }

func (c *KeyCache) path(host int, purpose string) (string, error) {
	if host < 0 {
		return "", fmt.Errorf("host index %d is negative", host)
	}
	if purpose == "" {
		return "", errors.New("empty key purpose")
	}
	for _, r := range purpose {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return "", fmt.Errorf("key purpose %q: want lower-case letters and digits", purpose)
		}
	}
	return filepath.Join(c.dir, fmt.Sprintf("rsa2048-%d-%s.der", host, purpose)), nil
}

// RSAKey returns the RSA-2048 key for purpose ("ek", "ak0", "ak1", …) of
// host, generating and storing it on first use.
func (c *KeyCache) RSAKey(host int, purpose string) (*rsa.PrivateKey, error) {
	path, err := c.path(host, purpose)
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	key, err := readKeyFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	f, err := os.CreateTemp(c.dir, ".new-*")
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, werr := f.Write(der)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", werr)
	}
	// A hard link publishes the key only if no other goroutine or process
	// published one first; the loser uses the winner's key, so every caller
	// asking for (host, purpose) gets the same key.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path)
		}
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	return key, nil
}

func readKeyFile(path string) (*rsa.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	der, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %w", err)
	}
	if len(der) > maxKeyFile {
		return nil, fmt.Errorf("soft TPM key cache: %s: larger than %d bytes", path, maxKeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("soft TPM key cache: %s: %w", path, err)
	}
	key, ok := k.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() != 2048 || key.E != 65537 {
		return nil, fmt.Errorf("soft TPM key cache: %s: not an RSA-2048 key with exponent 65537", path)
	}
	return key, nil
}

// Prefill makes sure the keys for hosts 0..hosts-1 and each purpose exist,
// generating missing ones on all CPUs. A fleet using RSA EKs and one RSA AK
// per host wants Prefill(ctx, n, "ek", "ak0").
func (c *KeyCache) Prefill(ctx context.Context, hosts int, purposes ...string) error {
	type job struct {
		host    int
		purpose string
	}
	jobs := make(chan job)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				if _, err := c.RSAKey(j.host, j.purpose); err != nil {
					select {
					case errs <- err:
					default:
					}
					cancel()
				}
			}
		})
	}
feed:
	for h := range hosts {
		for _, p := range purposes {
			select {
			case jobs <- job{h, p}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return ctx.Err()
}
