// Package loopback stands up the trusted half of a Vigil deployment inside
// one process, on 127.0.0.1, for the demo and the bench: a private CA, a
// simulated TPM manufacturer, and a registrar that trusts only EKs that
// manufacturer certified (EK policy "chain", as in production).
package loopback

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/vigil-attest/vigil/internal/httpapi"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/registrar"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// Deployment is a CA and a registrar, with the manufacturer whose EK
// certificates the registrar accepts.
type Deployment struct {
	TLSDir       string
	Manufacturer *soft.Manufacturer
	RegistrarURL string

	stopRegistrar func()
	reg           *registrar.Registrar
	cancel        context.CancelFunc
}

// Start creates the CA in dir/tls, a manufacturer named mfrName (its
// certificate in dir/ek-roots) and a registrar with its store in
// dir/registrar.
func Start(dir, mfrName string, log *slog.Logger) (*Deployment, error) {
	d := &Deployment{TLSDir: filepath.Join(dir, "tls")}
	if err := tlsutil.InitDir(d.TLSDir, tlsutil.InitOptions{}); err != nil {
		return nil, err
	}
	mfr, err := soft.NewManufacturer(mfrName)
	if err != nil {
		return nil, err
	}
	d.Manufacturer = mfr
	rootsDir := filepath.Join(dir, "ek-roots")
	if err := os.MkdirAll(rootsDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rootsDir, "manufacturer.pem"), mfr.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	roots, inter, err := registrar.LoadEKRoots(rootsDir)
	if err != nil {
		return nil, err
	}
	cfg := registrar.DefaultConfig()
	cfg.DataDir, cfg.Log = filepath.Join(dir, "registrar"), log
	cfg.EKPolicy = registrar.EKPolicy{Mode: registrar.EKPolicyChain, Roots: roots, Intermediates: inter}
	if d.reg, err = registrar.New(cfg); err != nil {
		return nil, err
	}
	if d.RegistrarURL, d.stopRegistrar, err = Serve(d.TLSDir, d.reg.Handler(), log); err != nil {
		d.reg.Close()
		return nil, err
	}
	var ctx context.Context
	ctx, d.cancel = context.WithCancel(context.Background())
	go d.reg.Run(ctx)
	return d, nil
}

// Close stops the registrar and closes its store.
func (d *Deployment) Close() {
	d.cancel()
	d.stopRegistrar()
	d.reg.Close()
}

// Serve serves h over TLS with the server certificate in tlsDir on a free
// loopback port, returning its URL and a function that shuts it down.
func Serve(tlsDir string, h http.Handler, log *slog.Logger) (string, func(), error) {
	cfg, err := tlsutil.ServerConfig(tlsDir)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := httpapi.NewServer(h, cfg, log)
	go srv.ServeTLS(ln, "", "")
	return "https://" + ln.Addr().String(), func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(c)
	}, nil
}
