package evidence_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func pemOf(t testing.TB, pub tpm2.TPMTPublic) []byte {
	t.Helper()
	key, err := tpm2.Pub(pub)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
