package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vigil-attest/vigil/internal/adminapi"
)

// AdminClient calls the verifier's admin API with an admin client
// certificate (tlsutil.AdminClientConfig).
type AdminClient struct {
	BaseURL string
	HTTP    *http.Client
}

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

// GetPolicyVersion returns one version of a policy, with its body.
func (c *AdminClient) GetPolicyVersion(ctx context.Context, name string, version int) (Policy, error) {
	var p Policy
	err := c.do(ctx, http.MethodGet, PathPolicies+"/"+url.PathEscape(name)+"?version="+strconv.Itoa(version), "", nil, &p)
	return p, err
}

// PolicyVersions lists every version of a policy, oldest first, without
// bodies.
func (c *AdminClient) PolicyVersions(ctx context.Context, name string) ([]Policy, error) {
	var ps []Policy
	err := c.do(ctx, http.MethodGet, PathPolicies+"/"+url.PathEscape(name)+"/versions", "", nil, &ps)
	return ps, err
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

// Update changes an admitted agent's policies, identities or interval;
// fields left nil keep the agent's setting.
func (c *AdminClient) Update(ctx context.Context, id string, req UpdateRequest) (AgentView, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return AgentView{}, err
	}
	var a AgentView
	err = c.do(ctx, http.MethodPatch, PathAgents+"/"+url.PathEscape(id), "application/json", body, &a)
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
	api := adminapi.Client{BaseURL: c.BaseURL, HTTP: c.HTTP}
	err := api.Do(ctx, method, path, ctype, body, out)
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	return nil
}

// History returns an agent's history since since (zero: all kept), the
// newest limit entries when limit > 0.
func (c *AdminClient) History(ctx context.Context, id string, since time.Time, limit int) (HistoryView, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := PathAgents + "/" + url.PathEscape(id) + "/history"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var h HistoryView
	err := c.do(ctx, http.MethodGet, path, "", nil, &h)
	return h, err
}
