package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// The simulated manufacturer of an external bench lives in a directory that
// a registrar can be given as --ek-roots: the certificate at the top, where
// registrar.LoadEKRoots reads it, and the key in a subdirectory, which
// LoadEKRoots skips, so the registrar never even reads a private key.
const (
	EKCACert = "manufacturer.crt"
	EKCAKey  = "private/manufacturer.key"
)

// ekCAName is the simulated manufacturer's common name; it says what it is
// to whoever finds it in a registrar's roots.
const ekCAName = "Vigil Bench TPM Manufacturer (simulation)"

// InitEKCA creates a simulated TPM manufacturer CA in dir for benchmarking
// an external deployment: the soft TPMs' EK certificates are issued by it,
// and the registrar under test is started with `--ek-roots dir`, so it
// checks every EK certificate as in production (EK policy chain). It
// refuses to overwrite an existing manufacturer, which a running registrar
// may trust.
func InitEKCA(dir string) error {
	for _, name := range []string{EKCACert, EKCAKey} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite", filepath.Join(dir, name))
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(EKCAKey)), 0o700); err != nil {
		return err
	}
	m, err := soft.NewManufacturer(ekCAName)
	if err != nil {
		return err
	}
	key, err := m.KeyPEM()
	if err != nil {
		return err
	}
	// The key first: a certificate without its key would be a root nobody
	// can issue from.
	if err := tlsutil.WriteExclusive(filepath.Join(dir, EKCAKey), key, 0o600); err != nil {
		return err
	}
	return tlsutil.WriteExclusive(filepath.Join(dir, EKCACert), m.CertPEM(), 0o644)
}

// LoadEKCA reads the manufacturer InitEKCA wrote into dir.
func LoadEKCA(dir string) (*soft.Manufacturer, error) {
	cert, err := os.ReadFile(filepath.Join(dir, EKCACert))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no simulated manufacturer here (create one with `vigil bench ek-ca %s`)", dir, dir)
		}
		return nil, err
	}
	key, err := os.ReadFile(filepath.Join(dir, EKCAKey))
	if err != nil {
		return nil, err
	}
	m, err := soft.ParseManufacturer(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}
