package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigil-attest/vigil/internal/wire"
)

// AdminClient calls the verifier's admin API with an admin client
// certificate (tlsutil.AdminClientConfig).
type AdminClient struct {
	BaseURL string
	HTTP    *http.Client
}

// APIError is a refusal from the admin API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("verifier: %d: %s", e.Status, e.Msg) }

// AddPolicy uploads a new version of a policy.
func (c *AdminClient) AddPolicy(ctx context.Context, name string, kind PolicyKind, body []byte) (Policy, error) {
	var p Policy
	err := c.do(ctx, http.MethodPut, PathPolicies+"/"+url.PathEscape(name)+"?kind="+url.QueryEscape(string(kind)), "application/json", body, &p)
	return p, err
}

// ListPolicies lists policies (without bodies).
func (c *AdminClient) ListPolicies(ctx context.Context) ([]Policy, error) {
	var ps []Policy
	err := c.do(ctx, http.MethodGet, PathPolicies, "", nil, &ps)
	return ps, err
}

// GetPolicy returns the latest version of a policy, with its body.
func (c *AdminClient) GetPolicy(ctx context.Context, name string) (Policy, error) {
	var p Policy
	err := c.do(ctx, http.MethodGet, PathPolicies+"/"+url.PathEscape(name), "", nil, &p)
	return p, err
}

// DeletePolicy deletes a policy no agent uses.
func (c *AdminClient) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, PathPolicies+"/"+url.PathEscape(name), "", nil, nil)
}

// Admit adds an agent.
func (c *AdminClient) Admit(ctx context.Context, req AdmitRequest) (AgentView, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return AgentView{}, err
	}
	var a AgentView
	err = c.do(ctx, http.MethodPost, PathAgents, "application/json", body, &a)
	return a, err
}

// Status returns one agent.
func (c *AdminClient) Status(ctx context.Context, id string) (AgentView, error) {
	var a AgentView
	err := c.do(ctx, http.MethodGet, PathAgents+"/"+url.PathEscape(id), "", nil, &a)
	return a, err
}

// List returns every agent.
func (c *AdminClient) List(ctx context.Context) ([]AgentView, error) {
	var as []AgentView
	err := c.do(ctx, http.MethodGet, PathAgents, "", nil, &as)
	return as, err
}

// Delete removes an agent.
func (c *AdminClient) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, PathAgents+"/"+url.PathEscape(id), "", nil, nil)
}

// Readmit puts a failed agent back to pending.
func (c *AdminClient) Readmit(ctx context.Context, id string) (AgentView, error) {
	var a AgentView
	err := c.do(ctx, http.MethodPost, PathAgents+"/"+url.PathEscape(id)+"/readmit", "", nil, &a)
	return a, err
}

func (c *AdminClient) do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rsp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, 512<<20))
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if rsp.StatusCode/100 != 2 {
		var e wire.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &APIError{Status: rsp.StatusCode, Msg: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("verifier: %s %s: bad JSON answer: %w", method, path, err)
	}
	return nil
}
