package agent

import (
	"context"
	"errors"

	"github.com/google/go-tpm/tpm2"
)

// TPM is everything the agent asks of a TPM. It is defined here, where it is
// consumed, so that a real TPM (through go-tpm, see OpenTPM) and the pure-Go
// soft TPM in tpmsim can both stand behind it without either importing the
// other. Its methods speak only go-tpm's structures, byte-exact with the TCG
// spec, so that whatever a TPM returns can be sent to the registrar and
// verifier unchanged.
//
// A TPM value is one open connection. The agent opens one per operation and
// closes it afterwards: /dev/tpmrm0 is shared with other processes and swtpm
// serves one client at a time. Implementations flush every transient object
// and session they create before a method returns.
type TPM interface {
	// EKPublic returns the public area of the endorsement key of the given
	// type (tpm2.TPMAlgRSA or tpm2.TPMAlgECC), created from the TCG default
	// template that matches the EK certificate in NV, if any.
	EKPublic(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error)

	// EKCertificate returns the DER EK certificate the manufacturer
	// provisioned in NV for that EK type, or (nil, nil) when there is none.
	EKCertificate(ctx context.Context, ekAlg tpm2.TPMAlgID) ([]byte, error)

	// CreateAK creates an attestation key (restricted, sign, fixedTPM,
	// fixedParent, sensitiveDataOrigin, userWithAuth) of type akAlg
	// (tpm2.TPMAlgRSA: RSA-2048 RSASSA-SHA256; tpm2.TPMAlgECC: P-256
	// ECDSA-SHA256) as a child of the EK of type ekAlg, and returns it in the
	// form TPM2_Create returns: the public area and the TPM-wrapped private
	// area, which only this TPM can load again.
	CreateAK(ctx context.Context, ekAlg, akAlg tpm2.TPMAlgID) (AKBlob, error)

	// ActivateCredential loads the AK under the EK and runs
	// TPM2_ActivateCredential, returning the secret the registrar sealed to
	// the EK and the AK's name with TPM2_MakeCredential.
	ActivateCredential(ctx context.Context, ak AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error)

	// Quote loads the AK and signs the selected PCRs with nonce as
	// qualifyingData, returning the TPMS_ATTEST as the TPM marshalled it and
	// its signature.
	Quote(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, error)

	// PCRRead returns the current value of every selected PCR, keyed by bank
	// and PCR index; an error wrapping ErrBankNotAllocated when a selected
	// bank is not allocated on the TPM.
	PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error)

	// PCRExtend extends one PCR in each bank given.
	PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error

	// Close releases the connection.
	Close() error
}

// AKBlob is an attestation key as TPM2_Create returned it. EKAlg names the
// EK it was created under, because loading it again needs that parent.
type AKBlob struct {
	EKAlg   tpm2.TPMAlgID
	Public  tpm2.TPM2BPublic
	Private tpm2.TPM2BPrivate
}

// ErrBankNotAllocated is a PCR read of a bank the TPM has not allocated
// (many have sha1 and sha256 only, some sha256 alone).
var ErrBankNotAllocated = errors.New("PCR bank not allocated on this TPM")
