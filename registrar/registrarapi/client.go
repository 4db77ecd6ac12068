package registrarapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/vigil-attest/vigil/internal/adminapi"
	"github.com/vigil-attest/vigil/internal/apierr"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// Client calls the registrar's admin API. Its HTTP client must present
// an admin client certificate (tlsutil.AdminClientConfig).
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// List returns every registered agent.
func (c *Client) List(ctx context.Context) ([]AgentView, error) {
	var out []AgentView
	err := c.do(ctx, http.MethodGet, PathAgents, &out)
	return out, err
}

// Get returns one agent; the error wraps ErrNotFound for an unknown ID.
func (c *Client) Get(ctx context.Context, id string) (AgentView, error) {
	var out AgentView
	err := c.do(ctx, http.MethodGet, PathAgents+"/"+url.PathEscape(id), &out)
	return out, err
}

// Delete removes an agent's registration.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, PathAgents+"/"+url.PathEscape(id), nil)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	api := adminapi.Client{BaseURL: c.BaseURL, HTTP: c.HTTP}
	err := api.Do(ctx, method, path, "", nil, out)
	var e *apierr.Error
	if errors.As(err, &e) && e.Kind == apierr.NotFound {
		return fmt.Errorf("registrar: %w (%w)", ErrNotFound, e)
	}
	if err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	return nil
}

// ErrNotModified is ActiveAKs' answer when the set of active AKs is still
// the one the etag names.
var ErrNotModified = errors.New("registrar: active AKs not modified")

// ActiveAKs returns every agent with an active AK (agent ID → AK name) and
// the etag of that set. Given the etag of a previous answer, it returns
// ErrNotModified if the set has not changed since, which costs the registrar
// next to nothing: poll with it.
func (c *Client) ActiveAKs(ctx context.Context, etag string) (map[string][]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+PathAKs, nil)
	if err != nil {
		return nil, "", err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", QuoteETag(etag))
	}
	rsp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("registrar: %w", err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(rsp.Body, adminapi.MaxAnswer))
	if err != nil {
		return nil, "", fmt.Errorf("registrar: GET %s: %w", PathAKs, err)
	}
	switch rsp.StatusCode {
	case http.StatusNotModified:
		return nil, etag, ErrNotModified
	case http.StatusOK:
	default:
		return nil, "", fmt.Errorf("registrar: %w", adminapi.Refusal(http.MethodGet, PathAKs, rsp.StatusCode, body))
	}
	aks, newETag, err := DecodeAKList(body)
	if err != nil {
		return nil, "", fmt.Errorf("registrar: GET %s: %w", PathAKs, err)
	}
	return aks, newETag, nil
}

// DecodeAKList reads a GET /v1/aks answer, refusing one of another version
// or with an entry that is not an agent ID and a hex AK name.
func DecodeAKList(b []byte) (map[string][]byte, string, error) {
	var list AKList
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil {
		return nil, "", fmt.Errorf("bad AK list: %w", err)
	}
	if dec.More() {
		return nil, "", errors.New("bad AK list: data after the object")
	}
	if list.Version != AKListVersion {
		return nil, "", fmt.Errorf("AK list version %d, this build reads %d", list.Version, AKListVersion)
	}
	if list.ETag == "" || strings.ContainsAny(list.ETag, "\",\x00\r\n") {
		return nil, "", fmt.Errorf("AK list etag %q is not usable", list.ETag)
	}
	aks := make(map[string][]byte, len(list.Agents))
	for i, a := range list.Agents {
		if !tpmfacts.ValidAgentID(a.AgentID) {
			return nil, "", fmt.Errorf("AK list entry %d: %q is not an agent ID", i, a.AgentID)
		}
		name, err := hex.DecodeString(a.AKName)
		if err != nil || len(name) == 0 {
			return nil, "", fmt.Errorf("AK list entry %d (%s): ak_name is not a hex TPM name", i, a.AgentID)
		}
		if _, dup := aks[a.AgentID]; dup {
			return nil, "", fmt.Errorf("AK list entry %d: agent %s listed twice", i, a.AgentID)
		}
		aks[a.AgentID] = name
	}
	return aks, list.ETag, nil
}
