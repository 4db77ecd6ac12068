package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigil-attest/vigil/internal/wire"
)

var errRefused = errors.New("agent \"a\" is not admitted")

func TestAnswersHideInternalErrors(t *testing.T) {
	var logged bytes.Buffer
	a := Answers{
		Status: func(err error) int {
			if errors.Is(err, errRefused) {
				return http.StatusForbidden
			}
			return http.StatusInternalServerError
		},
		Log: slog.New(slog.NewTextHandler(&logged, nil)),
	}
	for _, tc := range []struct {
		name     string
		err      error
		wantCode int
		wantBody string
		logged   bool
	}{
		{"refusal is told", errRefused, http.StatusForbidden, errRefused.Error(), false},
		{"internal error is logged, not told", errors.New("bolt: page 7 corrupt"), http.StatusInternalServerError, "internal error", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged.Reset()
			rec := httptest.NewRecorder()
			a.JSON(rec, http.StatusOK, map[string]string{"ok": "yes"}, tc.err)
			var body wire.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.wantCode || body.Error != tc.wantBody {
				t.Errorf("JSON: %d %q, want %d %q", rec.Code, body.Error, tc.wantCode, tc.wantBody)
			}
			if got := strings.Contains(logged.String(), tc.err.Error()); got != tc.logged {
				t.Errorf("logged %v, want %v: %q", got, tc.logged, logged.String())
			}
			rec = httptest.NewRecorder()
			a.CBOR(rec, nil, tc.err)
			var cb wire.Error
			if err := wire.Unmarshal(rec.Body.Bytes(), &cb); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.wantCode || cb.Error != tc.wantBody {
				t.Errorf("CBOR: %d %q, want %d %q", rec.Code, cb.Error, tc.wantCode, tc.wantBody)
			}
		})
	}
	rec := httptest.NewRecorder()
	a.JSON(rec, http.StatusCreated, map[string]string{"ok": "yes"}, nil)
	if rec.Code != http.StatusCreated || !strings.Contains(rec.Body.String(), `"ok": "yes"`) {
		t.Errorf("success: %d %q", rec.Code, rec.Body.String())
	}
}
