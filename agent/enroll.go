package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
)

// Opener opens a connection to the host's TPM. The agent opens one per
// operation and closes it when done.
type Opener func(ctx context.Context) (TPM, error)

// akFile is where the agent keeps its AK between runs, in --data.
const akFile = "ak.cbor"

// akState is the agent's persistent identity: the AK as TPM2_Create returned
// it (its private part is wrapped by the TPM and loads only under this TPM's
// EK, so the file is useless elsewhere) and what the registrar called it.
type akState struct {
	AgentID  string        `cbor:"agent_id"`
	EKAlg    tpm2.TPMAlgID `cbor:"ek_alg"`
	AKAlg    tpm2.TPMAlgID `cbor:"ak_alg"`
	EKPublic []byte        `cbor:"ek_pub"`
	Public   []byte        `cbor:"ak_pub"`  // TPM2B_PUBLIC as marshalled
	Private  []byte        `cbor:"ak_priv"` // TPM2B_PRIVATE as marshalled
	Active   bool          `cbor:"active"`
}

func (s akState) blob() (AKBlob, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](s.Public)
	if err != nil {
		return AKBlob{}, fmt.Errorf("AK public: %w", err)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](s.Private)
	if err != nil {
		return AKBlob{}, fmt.Errorf("AK private: %w", err)
	}
	return AKBlob{EKAlg: s.EKAlg, Public: *pub, Private: *priv}, nil
}

// Enroller registers the host's AK with the registrar and activates it.
type Enroller struct {
	Open         Opener
	DataDir      string
	RegistrarURL string
	// HTTP must trust the deployment CA (tlsutil.ClientConfig).
	HTTP *http.Client
	// AgentID overrides the default, the SHA-256 of the EK public key.
	AgentID string
	EKAlg   tpm2.TPMAlgID
	AKAlg   tpm2.TPMAlgID
	Log     *slog.Logger
}

// EnrollResult is what `vigil agent enroll` prints.
type EnrollResult struct {
	AgentID  string `json:"agent_id"`
	Active   bool   `json:"active"`
	AKAlg    string `json:"ak_alg"`
	EKAlg    string `json:"ek_alg"`
	AKReused bool   `json:"ak_reused"`
	HasEKCrt bool   `json:"ek_cert_present"`
}

func (e *Enroller) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.Default()
}

// Enroll makes sure the host has an AK (reusing the one in DataDir when it
// belongs to this TPM and matches the requested algorithm), registers it
// and answers the activation challenge.
func (e *Enroller) Enroll(ctx context.Context) (EnrollResult, error) {
	if e.EKAlg == 0 {
		e.EKAlg = tpm2.TPMAlgRSA
	}
	if e.AKAlg == 0 {
		e.AKAlg = tpm2.TPMAlgRSA
	}
	st, ekCert, reused, err := e.prepareAK(ctx)
	if err != nil {
		return EnrollResult{}, err
	}
	akPub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](st.Public)
	if err != nil {
		return EnrollResult{}, fmt.Errorf("AK public: %w", err)
	}
	akContents, err := akPub.Contents()
	if err != nil {
		return EnrollResult{}, fmt.Errorf("AK public: %w", err)
	}
	var reg wire.RegisterResponse
	err = e.post(ctx, wire.PathRegister, wire.RegisterRequest{
		AgentID:  e.AgentID,
		EKPublic: st.EKPublic,
		EKCert:   ekCert,
		AKPublic: tpm2.Marshal(akContents),
	}, &reg)
	if err != nil {
		return EnrollResult{}, fmt.Errorf("register: %w", err)
	}
	akName, err := tpm2.ObjectName(akContents)
	if err != nil {
		return EnrollResult{}, err
	}
	blob, err := st.blob()
	if err != nil {
		return EnrollResult{}, err
	}
	secret, err := e.activate(ctx, blob, reg)
	if err != nil {
		return EnrollResult{}, err
	}
	var act wire.ActivateResponse
	err = e.post(ctx, wire.PathActivate, wire.ActivateRequest{
		AgentID: reg.AgentID,
		Proof:   wire.ActivationProof(secret, reg.AgentID, akName.Buffer),
	}, &act)
	if err != nil {
		return EnrollResult{}, fmt.Errorf("activate: %w", err)
	}
	st.AgentID, st.Active = reg.AgentID, act.Active
	if err := saveAK(e.DataDir, st); err != nil {
		return EnrollResult{}, err
	}
	e.log().Info("enrolled", "agent_id", reg.AgentID, "ak_alg", tpmfacts.AlgName(e.AKAlg), "ak_reused", reused)
	return EnrollResult{
		AgentID:  reg.AgentID,
		Active:   act.Active,
		AKAlg:    tpmfacts.AlgName(e.AKAlg),
		EKAlg:    tpmfacts.AlgName(e.EKAlg),
		AKReused: reused,
		HasEKCrt: len(ekCert) > 0,
	}, nil
}

func (e *Enroller) prepareAK(ctx context.Context) (akState, []byte, bool, error) {
	tpm, err := e.Open(ctx)
	if err != nil {
		return akState{}, nil, false, fmt.Errorf("open TPM: %w", err)
	}
	defer tpm.Close()
	ek, err := tpm.EKPublic(ctx, e.EKAlg)
	if err != nil {
		return akState{}, nil, false, err
	}
	ekBytes := tpm2.Marshal(ek)
	cert, err := tpm.EKCertificate(ctx, e.EKAlg)
	if err != nil {
		return akState{}, nil, false, err
	}
	st, err := loadAK(e.DataDir)
	switch {
	case err == nil && st.EKAlg == e.EKAlg && st.AKAlg == e.AKAlg && bytes.Equal(st.EKPublic, ekBytes):
		return st, cert, true, nil
	case err == nil && !bytes.Equal(st.EKPublic, ekBytes) && st.EKAlg == e.EKAlg:
		e.log().Warn("the AK in the data directory belongs to another TPM; creating a new one", "file", filepath.Join(e.DataDir, akFile))
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return akState{}, nil, false, err
	}
	blob, err := tpm.CreateAK(ctx, e.EKAlg, e.AKAlg)
	if err != nil {
		return akState{}, nil, false, err
	}
	st = akState{
		EKAlg:    e.EKAlg,
		AKAlg:    e.AKAlg,
		EKPublic: ekBytes,
		Public:   tpm2.Marshal(blob.Public),
		Private:  tpm2.Marshal(blob.Private),
	}
	// Saved before registering, so a crash between the two cannot leave a
	// registered AK the agent no longer has.
	if err := saveAK(e.DataDir, st); err != nil {
		return akState{}, nil, false, err
	}
	return st, cert, false, nil
}

func (e *Enroller) activate(ctx context.Context, ak AKBlob, reg wire.RegisterResponse) ([]byte, error) {
	tpm, err := e.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open TPM: %w", err)
	}
	defer tpm.Close()
	secret, err := tpm.ActivateCredential(ctx, ak,
		tpm2.TPM2BIDObject{Buffer: reg.CredentialBlob},
		tpm2.TPM2BEncryptedSecret{Buffer: reg.Secret})
	if err != nil {
		return nil, err
	}
	return secret, nil
}

func (e *Enroller) post(ctx context.Context, path string, req, rsp any) error {
	return PostCBOR(ctx, e.HTTP, strings.TrimRight(e.RegistrarURL, "/")+path, req, rsp)
}

// RefusedError is a server's refusal (a 4xx or 5xx answer).
type RefusedError struct {
	Status int
	Msg    string
	// RetryAfter is the server's Retry-After, zero when it sent none.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Msg) }

func loadAK(dir string) (akState, error) {
	path := filepath.Join(dir, akFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return akState{}, err
	}
	var st akState
	if err := wire.Unmarshal(b, &st); err != nil {
		return akState{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// saveAK writes the AK state atomically (temp file, fsync, rename), so a
// crash never leaves a half-written identity.
func saveAK(dir string, st akState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := wire.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, akFile), b)
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o600); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
