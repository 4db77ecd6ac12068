package agent

import (
	"context"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// TCG EK Credential Profile NV indices of the EK certificates.
const (
	nvRSAEKCert      tpm2.TPMHandle = 0x01c00002 // RSA-2048, low range
	nvECCEKCert      tpm2.TPMHandle = 0x01c0000a // ECC NIST P-256, low range
	nvECCP384EKCert  tpm2.TPMHandle = 0x01c00016 // ECC NIST P-384, high range
	maxNVChunk                      = 512        // below every TPM's MAX_NV_BUFFER_SIZE
	maxEKCertificate                = 16 << 10
)

// goTPM is the TPM interface over a go-tpm transport: a real TPM
// (/dev/tpmrm0), swtpm over TCP, or the in-process simulator.
type goTPM struct {
	t transport.TPMCloser
}

// NewGoTPM wraps a go-tpm transport as the agent's TPM. Closing the result
// closes the transport.
func NewGoTPM(t transport.TPMCloser) TPM { return &goTPM{t: t} }

func (g *goTPM) Close() error { return g.t.Close() }

// TCG EK Credential Profile persistent handles where provisioning tools
// (and swtpm_setup) leave the EK.
const (
	persistentRSAEK     tpm2.TPMHandle = 0x81010001
	persistentECCEK     tpm2.TPMHandle = 0x81010002
	persistentECCP384EK tpm2.TPMHandle = 0x81010016
)

// eccP384EKTemplate is the TCG EK Credential Profile's high-range template
// H-3 (ECC NIST P-384, SHA-384 name, policy B, userWithAuth set), which
// swtpm and several TPMs use for their ECC EK.
var eccP384EKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA384,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		AdminWithPolicy:     true,
		Restricted:          true,
		Decrypt:             true,
	},
	AuthPolicy: tpm2.TPM2BDigest{Buffer: []byte{
		0xb2, 0x6e, 0x7d, 0x28, 0xd1, 0x1a, 0x50, 0xbc, 0x53, 0xd8, 0x82, 0xbc,
		0xf5, 0xfd, 0x3a, 0x1a, 0x07, 0x41, 0x48, 0xbb, 0x35, 0xd3, 0xb4, 0xe4,
		0xcb, 0x1c, 0x0a, 0xd9, 0xbd, 0xe4, 0x19, 0xca, 0xcb, 0x47, 0xba, 0x09,
		0x69, 0x96, 0x46, 0x15, 0x0f, 0x9f, 0xc0, 0x00, 0xf3, 0xf8, 0x0e, 0x12,
	}},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
		CurveID: tpm2.TPMECCNistP384,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// ekSource says where to find the EK of one kind: its certificate's NV
// index, the persistent handle it is usually kept at, and the template that
// recreates it.
type ekSource struct {
	certIndex  tpm2.TPMHandle
	persistent tpm2.TPMHandle
	template   tpm2.TPMTPublic
}

func ekSources(alg tpm2.TPMAlgID) ([]ekSource, error) {
	switch alg {
	case tpm2.TPMAlgRSA:
		return []ekSource{{nvRSAEKCert, persistentRSAEK, tpm2.RSAEKTemplate}}, nil
	case tpm2.TPMAlgECC:
		return []ekSource{
			{nvECCEKCert, persistentECCEK, tpm2.ECCEKTemplate},
			{nvECCP384EKCert, persistentECCP384EK, eccP384EKTemplate},
		}, nil
	}
	return nil, fmt.Errorf("unsupported EK algorithm %v", alg)
}

// pickEKSource chooses, among the EK kinds of alg, the one the manufacturer
// certified (the first with a certificate in NV), or the first kind when
// there is no certificate.
func (g *goTPM) pickEKSource(alg tpm2.TPMAlgID) (ekSource, error) {
	sources, err := ekSources(alg)
	if err != nil {
		return ekSource{}, err
	}
	for _, src := range sources {
		if _, err := (tpm2.NVReadPublic{NVIndex: src.certIndex}).Execute(g.t); err == nil {
			return src, nil
		}
	}
	return sources[0], nil
}

type loadedKey struct {
	handle     tpm2.TPMHandle
	name       tpm2.TPM2BName
	public     tpm2.TPMTPublic
	persistent bool
}

// createEK finds the EK: at its persistent handle when it is kept there
// with the expected type, else recreated from its template (the endorsement
// seed makes this deterministic, so the key matches its certificate).
func (g *goTPM) createEK(alg tpm2.TPMAlgID) (loadedKey, error) {
	src, err := g.pickEKSource(alg)
	if err != nil {
		return loadedKey{}, err
	}
	if rsp, err := (tpm2.ReadPublic{ObjectHandle: src.persistent}).Execute(g.t); err == nil {
		if pub, err := rsp.OutPublic.Contents(); err == nil && pub.Type == src.template.Type && pub.NameAlg == src.template.NameAlg &&
			pub.ObjectAttributes.Restricted && pub.ObjectAttributes.Decrypt {
			return loadedKey{handle: src.persistent, name: rsp.Name, public: *pub, persistent: true}, nil
		}
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(src.template),
	}.Execute(g.t)
	if err != nil {
		return loadedKey{}, fmt.Errorf("create EK: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		g.flush(rsp.ObjectHandle)
		return loadedKey{}, fmt.Errorf("create EK: %w", err)
	}
	return loadedKey{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub}, nil
}

func (g *goTPM) flush(h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(g.t)
}

// release flushes a key unless it is persistent.
func (g *goTPM) release(k loadedKey) {
	if !k.persistent {
		g.flush(k.handle)
	}
}

// ekAuth authorizes use of the EK. Templates with userWithAuth (the high
// range ones) take the empty password; the others need their authPolicy,
// PolicySecret(TPM_RH_ENDORSEMENT), in a policy session of the EK's name
// algorithm that go-tpm opens and flushes around each command.
func ekAuth(ek loadedKey) tpm2.AuthHandle {
	if ek.public.ObjectAttributes.UserWithAuth {
		return tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: tpm2.PasswordAuth(nil)}
	}
	return tpm2.AuthHandle{
		Handle: ek.handle,
		Name:   ek.name,
		Auth: tpm2.Policy(ek.public.NameAlg, 16, func(t transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicySecret{
				AuthHandle:    tpm2.TPMRHEndorsement,
				PolicySession: handle,
				NonceTPM:      nonceTPM,
			}.Execute(t)
			return err
		}),
	}
}

func (g *goTPM) EKPublic(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	if err := ctx.Err(); err != nil {
		return tpm2.TPMTPublic{}, err
	}
	ek, err := g.createEK(ekAlg)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	g.release(ek)
	return ek.public, nil
}

func (g *goTPM) EKCertificate(ctx context.Context, ekAlg tpm2.TPMAlgID) ([]byte, error) {
	var indices []tpm2.TPMHandle
	switch ekAlg {
	case tpm2.TPMAlgRSA:
		indices = []tpm2.TPMHandle{nvRSAEKCert}
	case tpm2.TPMAlgECC:
		indices = []tpm2.TPMHandle{nvECCEKCert, nvECCP384EKCert}
	default:
		return nil, fmt.Errorf("unsupported EK algorithm %v", ekAlg)
	}
	for _, index := range indices {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		der, err := g.readNV(index)
		if errors.Is(err, errNoNVIndex) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("EK certificate at NV %#x: %w", uint32(index), err)
		}
		return trimDER(der), nil
	}
	return nil, nil
}

var errNoNVIndex = errors.New("NV index not defined")

func (g *goTPM) readNV(index tpm2.TPMHandle) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: index}.Execute(g.t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, errNoNVIndex
		}
		return nil, err
	}
	contents, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	if contents.DataSize > maxEKCertificate {
		return nil, fmt.Errorf("NV index holds %d bytes, more than an EK certificate's %d", contents.DataSize, maxEKCertificate)
	}
	out := make([]byte, 0, contents.DataSize)
	for off := uint16(0); off < contents.DataSize; {
		n := min(contents.DataSize-off, maxNVChunk)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: index, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: pub.NVName},
			Size:       n,
			Offset:     off,
		}.Execute(g.t)
		if err != nil {
			return nil, fmt.Errorf("read at offset %d: %w", off, err)
		}
		out = append(out, rsp.Data.Buffer...)
		off += n
	}
	return out, nil
}

// trimDER drops the padding some manufacturers leave after the certificate
// in its NV index.
func trimDER(b []byte) []byte {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(b, &raw)
	if err != nil {
		return b
	}
	return b[:len(b)-len(rest)]
}

func (g *goTPM) CreateAK(ctx context.Context, ekAlg, akAlg tpm2.TPMAlgID) (AKBlob, error) {
	tmpl, err := tpmfacts.AKTemplate(akAlg)
	if err != nil {
		return AKBlob{}, err
	}
	if err := ctx.Err(); err != nil {
		return AKBlob{}, err
	}
	ek, err := g.createEK(ekAlg)
	if err != nil {
		return AKBlob{}, err
	}
	defer g.release(ek)
	rsp, err := tpm2.Create{
		ParentHandle: ekAuth(ek),
		InPublic:     tpm2.New2B(tmpl),
	}.Execute(g.t)
	if err != nil {
		return AKBlob{}, fmt.Errorf("create AK: %w", err)
	}
	return AKBlob{EKAlg: ekAlg, Public: rsp.OutPublic, Private: rsp.OutPrivate}, nil
}

// loadAK loads the AK under a freshly created EK. The caller flushes both.
func (g *goTPM) loadAK(ak AKBlob) (ek, key loadedKey, err error) {
	ek, err = g.createEK(ak.EKAlg)
	if err != nil {
		return ek, key, err
	}
	rsp, err := tpm2.Load{
		ParentHandle: ekAuth(ek),
		InPrivate:    ak.Private,
		InPublic:     ak.Public,
	}.Execute(g.t)
	if err != nil {
		g.release(ek)
		return ek, key, fmt.Errorf("load AK: %w", err)
	}
	return ek, loadedKey{handle: rsp.ObjectHandle, name: rsp.Name}, nil
}

func (g *goTPM) ActivateCredential(ctx context.Context, ak AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ek, key, err := g.loadAK(ak)
	if err != nil {
		return nil, err
	}
	defer g.release(ek)
	defer g.flush(key.handle)
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      ekAuth(ek),
		CredentialBlob: credentialBlob,
		Secret:         secret,
	}.Execute(g.t)
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

func (g *goTPM) Quote(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, error) {
	if err := ctx.Err(); err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, err
	}
	ek, key, err := g.loadAK(ak)
	if err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, err
	}
	// The EK is only the AK's parent: it can go before the quote.
	g.release(ek)
	defer g.flush(key.handle)
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: key.handle, Name: key.name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      sel,
	}.Execute(g.t)
	if err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, fmt.Errorf("quote: %w", err)
	}
	return rsp.Quoted, rsp.Signature, nil
}

func (g *goTPM) PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	out := make(map[tpm2.TPMAlgID]map[int][]byte)
	// TPM2_PCR_Read answers at most eight digests per call, so ask for one
	// PCR at a time per bank; it is not a hot path.
	for _, s := range sel.PCRSelections {
		bank := make(map[int][]byte)
		out[s.Hash] = bank
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) == 0 {
					continue
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				pcr := i*8 + bit
				one := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
					Hash: s.Hash, PCRSelect: pcrSelectBitmap(pcr),
				}}}
				rsp, err := tpm2.PCRRead{PCRSelectionIn: one}.Execute(g.t)
				if err != nil {
					return nil, fmt.Errorf("read PCR %d (%v): %w", pcr, s.Hash, err)
				}
				if len(rsp.PCRValues.Digests) != 1 {
					return nil, fmt.Errorf("read PCR %d (%s): %w", pcr, tpmfacts.BankName(s.Hash), ErrBankNotAllocated)
				}
				bank[pcr] = rsp.PCRValues.Digests[0].Buffer
			}
		}
	}
	return out, nil
}

// pcrSelectBitmap is the 3-byte sizeofSelect bitmap with one PCR set.
func pcrSelectBitmap(pcr int) []byte {
	b := make([]byte, 3)
	b[pcr/8] |= 1 << (pcr % 8)
	return b
}

func (g *goTPM) PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var values tpm2.TPMLDigestValues
	for alg, d := range digests {
		values.Digests = append(values.Digests, tpm2.TPMTHA{HashAlg: alg, Digest: d})
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   values,
	}.Execute(g.t)
	if err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	return nil
}
