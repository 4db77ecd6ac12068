package revocation

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// SecretPrefix starts every Standard Webhooks secret.
const SecretPrefix = "whsec_"

// ParseSecret decodes a "whsec_<base64>" secret to its key bytes.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, SecretPrefix) {
		return nil, fmt.Errorf("webhook secret must start with %q", SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %q is not base64: %w", SecretPrefix+"…", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("webhook secret: %d bytes of key, want at least 16", len(key))
	}
	return key, nil
}

// Sign computes the Standard Webhooks signature header value for a message.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, timestamp)
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a received message's signature header, which may hold
// several space-separated signatures (during secret rotation), and that its
// timestamp is within tolerance of now. It is what a receiver runs.
func Verify(key []byte, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not a Unix time")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now", d.Round(time.Second))
	}
	want := Sign(key, id, ts, body)
	for _, s := range strings.Fields(signatures) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return errors.New("no webhook-signature matches")
}

// Sink receives events.
type Sink interface {
	// Name identifies the sink in delivery records (its URL).
	Name() string
	Deliver(ctx context.Context, e Event) error
}

// Webhook posts signed CloudEvents to a URL.
type Webhook struct {
	URL string
	// Key signs the deliveries until SetKey replaces it.
	Key    []byte
	Source string
	// Client must verify the receiver's certificate (the default pool, or
	// the --webhook-ca pool).
	Client *http.Client
	// Now defaults to time.Now.
	Now func() time.Time

	// key, once SetKey has been called, is the key in force.
	key atomic.Pointer[[]byte]
}

// SetKey replaces the signing key while deliveries go on (a SIGHUP reload
// of --webhook-secret-file): each delivery signs with the key in force
// when it starts. The sink keeps its Name, so the outbox's delivery
// records are unaffected and undelivered events go out signed with the
// new key.
func (w *Webhook) SetKey(key []byte) {
	k := append([]byte(nil), key...)
	w.key.Store(&k)
}

// CurrentKey is the key in force: the last SetKey, or Key.
func (w *Webhook) CurrentKey() []byte {
	if k := w.key.Load(); k != nil {
		return *k
	}
	return w.Key
}

// Name implements Sink.
func (w *Webhook) Name() string { return w.URL }

// Deliver implements Sink: any 2xx is success; anything else, a timeout or
// a refused connection is an error to retry.
func (w *Webhook) Deliver(ctx context.Context, e Event) error {
	body, err := json.Marshal(e.Cloud(w.Source))
	if err != nil {
		return err
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("webhook-id", e.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(w.CurrentKey(), e.ID, ts, body))
	rsp, err := w.Client.Do(req)
	if err != nil {
		return err
	}
	defer rsp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
	if rsp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered %s", rsp.Status)
	}
	return nil
}
