// Package adminapi is the client side of Vigil's JSON admin APIs: one
// request, one JSON answer or one *apierr.Error carrying the kind of the
// answer's status and the server's message. The registrar's and the verifier's admin clients are thin typed
// layers over it.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vigil-attest/vigil/internal/apierr"
)

// MaxAnswer bounds an answer body (a policy with its body can be large).
const MaxAnswer = 512 << 20

// Client calls one server's admin API. HTTP must present an admin client
// certificate (tlsutil.AdminClientConfig).
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// Refusal is the error a non-2xx answer stands for: the kind its status
// maps to, and the server's {"error": …} message (or the body), named by
// the request.
func Refusal(method, path string, status int, body []byte) *apierr.Error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return &apierr.Error{Kind: apierr.KindOf(status), Msg: fmt.Sprintf("%s %s: %d: %s", method, path, status, msg)}
}

// Do sends a request with an optional body of content type ctype and
// decodes a JSON answer into out (which may be nil).
func (c *Client) Do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
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
		return err
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, MaxAnswer))
	if err != nil {
		return err
	}
	if rsp.StatusCode/100 != 2 {
		return Refusal(method, path, rsp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: bad JSON answer: %w", method, path, err)
	}
	return nil
}
