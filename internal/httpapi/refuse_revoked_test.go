package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRefuseRevoked(t *testing.T) {
	alice := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "alice"}}
	bob := &x509.Certificate{SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: "bob"}}
	served := 0
	h := RefuseRevoked(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }),
		func(c *x509.Certificate) bool { return c == alice })
	for _, tc := range []struct {
		name  string
		peers []*x509.Certificate
		tls   bool
		code  int
	}{
		{"revoked", []*x509.Certificate{alice}, true, http.StatusUnauthorized},
		{"not revoked", []*x509.Certificate{bob}, true, http.StatusOK},
		{"no certificate", nil, true, http.StatusOK},
		{"plain", nil, false, http.StatusOK},
	} {
		served = 0
		req := httptest.NewRequest(http.MethodGet, "/v1/agents", nil)
		if tc.tls {
			req.TLS = &tls.ConnectionState{PeerCertificates: tc.peers}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, w.Code, tc.code)
		}
		if wantServed := tc.code == http.StatusOK; (served == 1) != wantServed {
			t.Errorf("%s: handler ran %d times", tc.name, served)
		}
		if tc.code == http.StatusUnauthorized && w.Header().Get("Connection") != "close" {
			t.Errorf("%s: the connection is not closed after the refusal", tc.name)
		}
	}
}
