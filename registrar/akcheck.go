package registrar

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// CheckAK verifies that pub describes an attestation key the registrar will
// vouch for and returns its algorithm name ("rsa" or "ecc"). The attributes
// matter: restricted+sign means the TPM signs only digests it computed
// itself (so a quote cannot be forged by signing a look-alike structure);
// fixedTPM+fixedParent+sensitiveDataOrigin mean the key was generated in,
// and can never leave, this TPM.
func CheckAK(pub *tpm2.TPMTPublic) (string, error) {
	a := pub.ObjectAttributes
	var missing []string
	for _, req := range []struct {
		ok   bool
		name string
	}{
		{a.Restricted, "restricted"},
		{a.SignEncrypt, "sign"},
		{a.FixedTPM, "fixedTPM"},
		{a.FixedParent, "fixedParent"},
		{a.SensitiveDataOrigin, "sensitiveDataOrigin"},
		{a.UserWithAuth, "userWithAuth"},
	} {
		if !req.ok {
			missing = append(missing, req.name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("AK lacks attributes %s", strings.Join(missing, ", "))
	}
	if a.Decrypt {
		return "", errors.New("AK has the decrypt attribute: an attestation key must be a signing-only key")
	}
	switch pub.NameAlg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
	default:
		return "", fmt.Errorf("AK nameAlg %v is not SHA-256 or stronger", pub.NameAlg)
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return "", fmt.Errorf("AK RSA parameters: %w", err)
		}
		if parms.KeyBits < 2048 {
			return "", fmt.Errorf("AK RSA key of %d bits, want at least 2048", parms.KeyBits)
		}
		if s := parms.Scheme.Scheme; s != tpm2.TPMAlgRSASSA && s != tpm2.TPMAlgRSAPSS {
			return "", fmt.Errorf("AK RSA scheme %v, want RSASSA or RSAPSS", s)
		}
		if err := checkSchemeHash(parms.Scheme.Details, parms.Scheme.Scheme); err != nil {
			return "", err
		}
		return "rsa", nil
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return "", fmt.Errorf("AK ECC parameters: %w", err)
		}
		if c := parms.CurveID; c != tpm2.TPMECCNistP256 && c != tpm2.TPMECCNistP384 {
			return "", fmt.Errorf("AK ECC curve %v, want NIST P-256 or P-384", c)
		}
		if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return "", fmt.Errorf("AK ECC scheme %v, want ECDSA", parms.Scheme.Scheme)
		}
		if err := checkSchemeHash(parms.Scheme.Details, parms.Scheme.Scheme); err != nil {
			return "", err
		}
		return "ecc", nil
	}
	return "", fmt.Errorf("AK type %v, want RSA or ECC", pub.Type)
}

func checkSchemeHash(details tpm2.TPMUAsymScheme, scheme tpm2.TPMAlgID) error {
	var hash tpm2.TPMIAlgHash
	switch scheme {
	case tpm2.TPMAlgRSASSA:
		d, err := details.RSASSA()
		if err != nil {
			return fmt.Errorf("AK scheme: %w", err)
		}
		hash = d.HashAlg
	case tpm2.TPMAlgRSAPSS:
		d, err := details.RSAPSS()
		if err != nil {
			return fmt.Errorf("AK scheme: %w", err)
		}
		hash = d.HashAlg
	case tpm2.TPMAlgECDSA:
		d, err := details.ECDSA()
		if err != nil {
			return fmt.Errorf("AK scheme: %w", err)
		}
		hash = d.HashAlg
	}
	switch hash {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
		return nil
	}
	return fmt.Errorf("AK signature hash %v is not SHA-256 or stronger", hash)
}
