package registrar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigil-attest/vigil/internal/wire"
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
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, nil)
	if err != nil {
		return err
	}
	rsp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(rsp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	if rsp.StatusCode/100 != 2 {
		var e wire.Error
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if rsp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("registrar: %s %s: %w", method, path, ErrNotFound)
		}
		return fmt.Errorf("registrar: %s %s: %d %s", method, path, rsp.StatusCode, msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("registrar: %s %s: bad JSON answer: %w", method, path, err)
	}
	return nil
}
