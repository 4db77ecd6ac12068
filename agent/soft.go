package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/tpmsim/soft"
)

// softTPM puts a soft TPM (tpmsim/soft, a simulation for tests, the demo
// and the bench) behind the TPM interface. The soft TPM mirrors AKBlob field
// for field, so the adapter only converts.
type softTPM struct {
	c *soft.Conn
}

// NewSoftTPM returns a connection to a soft TPM as the agent's TPM.
func NewSoftTPM(t *soft.TPM) TPM { return softTPM{c: t.Conn()} }

func (s softTPM) EKPublic(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	return s.c.EKPublic(ctx, ekAlg)
}

func (s softTPM) EKCertificate(ctx context.Context, ekAlg tpm2.TPMAlgID) ([]byte, error) {
	return s.c.EKCertificate(ctx, ekAlg)
}

func (s softTPM) CreateAK(ctx context.Context, ekAlg, akAlg tpm2.TPMAlgID) (AKBlob, error) {
	b, err := s.c.CreateAK(ctx, ekAlg, akAlg)
	return AKBlob(b), err
}

func (s softTPM) ActivateCredential(ctx context.Context, ak AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error) {
	return s.c.ActivateCredential(ctx, soft.AKBlob(ak), credentialBlob, secret)
}

func (s softTPM) Quote(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, error) {
	return s.c.Quote(ctx, soft.AKBlob(ak), nonce, sel)
}

func (s softTPM) PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	pcrs, err := s.c.PCRRead(ctx, sel)
	if errors.Is(err, tpm2.TPMRCPCR) {
		// The soft TPM's one TPM_RC_PCR for a read: a bank it has not.
		return nil, fmt.Errorf("%w: %w", ErrBankNotAllocated, err)
	}
	return pcrs, err
}

func (s softTPM) PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error {
	return s.c.PCRExtend(ctx, pcr, digests)
}

func (s softTPM) Close() error { return s.c.Close() }
