package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigil-attest/vigil/verifier"
)

// With no verifier answering, each page says so (502) rather than showing
// an empty fleet; the headers keep the page from being framed or loading
// scripts from elsewhere.
func TestPagesWhenNoVerifierAnswers(t *testing.T) {
	down := &verifier.AdminClient{BaseURL: "https://127.0.0.1:1", HTTP: &http.Client{Timeout: time.Second}}
	d, err := New(Options{Verifiers: []Verifier{down, down}})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/agents/host-1", "/policies", "/?partial=1"} {
		w := httptest.NewRecorder()
		d.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		body := w.Body.String()
		if w.Code != http.StatusBadGateway || !strings.Contains(body, "no verifier answered") {
			t.Errorf("%s: %d\n%s", path, w.Code, body)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if strings.HasSuffix(path, "partial=1") == strings.Contains(body, "<html") {
			t.Errorf("%s: a partial page is the content alone, a full page the whole document", path)
		}
	}
	w := httptest.NewRecorder()
	d.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405: the dashboard is read-only", w.Code)
	}
	w = httptest.NewRecorder()
	d.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/static/live.js", nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "partial=1") {
		t.Errorf("live.js: %d", w.Code)
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(-30 * time.Second), "30s ago"},
		{now.Add(-5 * time.Minute), "5m ago"},
		{now.Add(-3 * time.Hour), "3h ago"},
		{now.Add(-72 * time.Hour), "3d ago"},
		{now.Add(time.Second), "just now"},
	} {
		if got := ago(now, tc.t); got != tc.want {
			t.Errorf("ago(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}
