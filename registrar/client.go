package registrar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/vigil-attest/vigil/internal/adminapi"
)

// AdminClient calls the registrar's admin API. Its HTTP client must present
// an admin client certificate (tlsutil.AdminClientConfig).
type AdminClient struct {
	BaseURL string
	HTTP    *http.Client
}

// List returns every registered agent.
func (c *AdminClient) List(ctx context.Context) ([]AgentView, error) {
	var out []AgentView
	err := c.do(ctx, http.MethodGet, PathAgents, &out)
	return out, err
}

// Get returns one agent; the error wraps ErrNotFound for an unknown ID.
func (c *AdminClient) Get(ctx context.Context, id string) (AgentView, error) {
	var out AgentView
	err := c.do(ctx, http.MethodGet, PathAgents+"/"+url.PathEscape(id), &out)
	return out, err
}

// Delete removes an agent's registration.
func (c *AdminClient) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, PathAgents+"/"+url.PathEscape(id), nil)
}

func (c *AdminClient) do(ctx context.Context, method, path string, out any) error {
	api := adminapi.Client{BaseURL: c.BaseURL, HTTP: c.HTTP}
	err := api.Do(ctx, method, path, "", nil, out)
	var e *adminapi.Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		return fmt.Errorf("registrar: %s %s: %w", method, path, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	return nil
}
