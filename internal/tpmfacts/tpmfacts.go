package tpmfacts

import (
	"crypto"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// AKTemplate is the public area of an attestation key of type akAlg: a
// restricted signing key that never leaves the TPM (fixedTPM, fixedParent),
// whose private part the TPM generated (sensitiveDataOrigin), usable with
// its (empty) password (userWithAuth). The registrar refuses keys without
// these attributes.
func AKTemplate(akAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	switch akAlg {
	case tpm2.TPMAlgRSA:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	case tpm2.TPMAlgECC:
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("unsupported AK algorithm %v", akAlg)
}

// AlgName is the short name of a key algorithm ("rsa", "ecc").
func AlgName(alg tpm2.TPMAlgID) string {
	switch alg {
	case tpm2.TPMAlgRSA:
		return "rsa"
	case tpm2.TPMAlgECC:
		return "ecc"
	}
	return fmt.Sprintf("alg-%#x", uint16(alg))
}

// ParseAlg parses "rsa" or "ecc".
func ParseAlg(s string) (tpm2.TPMAlgID, error) {
	switch strings.ToLower(s) {
	case "rsa":
		return tpm2.TPMAlgRSA, nil
	case "ecc", "ecdsa":
		return tpm2.TPMAlgECC, nil
	}
	return 0, fmt.Errorf("unknown key algorithm %q (want rsa or ecc)", s)
}

// AgentIDRule says in words which agent IDs ValidAgentID accepts.
const AgentIDRule = "1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit"

var agentIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// ValidAgentID reports whether id can name an agent: short, and safe in
// URLs, file names, metric labels and log lines.
func ValidAgentID(id string) bool { return agentIDPattern.MatchString(id) }

// banks are the PCR banks Vigil knows, in the order it prints them.
var banks = []struct {
	alg  tpm2.TPMAlgID
	name string
	hash crypto.Hash
}{
	{tpm2.TPMAlgSHA1, "sha1", crypto.SHA1},
	{tpm2.TPMAlgSHA256, "sha256", crypto.SHA256},
	{tpm2.TPMAlgSHA384, "sha384", crypto.SHA384},
	{tpm2.TPMAlgSHA512, "sha512", crypto.SHA512},
}

// BankName is the name of a PCR bank in Vigil's files and flags ("sha256").
func BankName(alg tpm2.TPMAlgID) string {
	for _, b := range banks {
		if b.alg == alg {
			return b.name
		}
	}
	return fmt.Sprintf("alg_%#04x", uint16(alg))
}

// ParseBank maps a bank name ("sha1", "sha256", "sha384", "sha512";
// case-insensitive, dashes ignored) to its algorithm.
func ParseBank(name string) (tpm2.TPMAlgID, error) {
	n := strings.ReplaceAll(strings.ToLower(name), "-", "")
	for _, b := range banks {
		if b.name == n {
			return b.alg, nil
		}
	}
	return 0, fmt.Errorf("unknown PCR bank %q (want sha1, sha256, sha384 or sha512)", name)
}

// HashOf maps a TPM hash algorithm to Go's crypto.Hash.
func HashOf(alg tpm2.TPMAlgID) (crypto.Hash, bool) {
	for _, b := range banks {
		if b.alg == alg {
			return b.hash, true
		}
	}
	return 0, false
}
