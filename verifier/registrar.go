package verifier

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/registrar/registrarapi"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// RegistrarAKs fetches AKs from the registrar's admin API. Only an
// activated AK is returned: an AK the registrar has not seen proven by
// credential activation is no AK at all.
type RegistrarAKs struct {
	Client *registrarapi.Client
}

// NewRegistrarAKs fetches AKs from the registrar at baseURL with the
// deployment's admin client certificate. Its connections stay open for
// reuse: a verifier starting with a fleet fetches thousands of AKs at once,
// and a TLS handshake per fetch would cost more than the fetch.
func NewRegistrarAKs(baseURL string, admin *tls.Config) RegistrarAKs {
	return RegistrarAKs{Client: &registrarapi.Client{
		BaseURL: baseURL,
		HTTP: &http.Client{
			Transport: &http.Transport{TLSClientConfig: admin, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
			Timeout:   10 * time.Second,
		},
	}}
}

// AK implements AKSource.
func (r RegistrarAKs) AK(ctx context.Context, id string) (*evidence.AK, error) {
	v, err := r.Client.Get(ctx, id)
	if errors.Is(err, registrarapi.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q is not registered", ErrNotEnrolled, id)
	}
	if err != nil {
		return nil, err
	}
	if !v.Active {
		return nil, fmt.Errorf("%w: %q has not completed credential activation", ErrNotEnrolled, id)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](v.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("registrar's AK for %q: %w", id, err)
	}
	return evidence.NewAK(*pub)
}

// ActiveAKs implements AKFeed over the registrar's feed of active AKs.
func (r RegistrarAKs) ActiveAKs(ctx context.Context, version string) (map[string][]byte, string, error) {
	aks, next, err := r.Client.ActiveAKs(ctx, version)
	if errors.Is(err, registrarapi.ErrNotModified) {
		return nil, version, ErrFeedNotModified
	}
	return aks, next, err
}
