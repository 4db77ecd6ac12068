package soft

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// DefaultFirmwareVersion is the firmware version a soft TPM reports unless
// told otherwise: TPM_PT_FIRMWARE_VERSION_1 = 1.0 in the high 32 bits.
const DefaultFirmwareVersion uint64 = 0x0001_0000_0000_0000

// Options configure a new soft TPM.
type Options struct {
	// EKAlgs are the EKs manufactured with the TPM (tpm2.TPMAlgRSA,
	// tpm2.TPMAlgECC), each with a certificate when Manufacturer is set.
	// Empty means both. An EK of another type asked for later is created
	// then, without a certificate, as a real TPM would do from its template.
	EKAlgs []tpm2.TPMAlgID
	// Manufacturer issues the EK certificates. Nil means none.
	Manufacturer *Manufacturer
	// FirmwareVersion is reported in quotes; 0 means DefaultFirmwareVersion.
	FirmwareVersion uint64
	// Keys, when set, supplies RSA keys (EKs and AKs) for host Host instead
	// of generating them. Give every TPM of a fleet its own Host.
	Keys *KeyCache
	Host int
}

// TPM is one simulated TPM. It is safe for concurrent use.
type TPM struct {
	mu sync.Mutex
	st *state
	// powerOn is when the clock was last anchored: the TPM clock reads
	// st.clock plus the monotonic time elapsed since then.
	powerOn time.Time
	keys    *KeyCache
	host    int
	aks     akCache
	file    *stateFile // nil for a TPM that lives only in memory
}

// New manufactures a TPM in memory.
func New(opts Options) (*TPM, error) {
	st, err := manufacture(opts)
	if err != nil {
		return nil, err
	}
	return &TPM{st: st, powerOn: time.Now(), keys: opts.Keys, host: opts.Host}, nil
}

func manufacture(opts Options) (*state, error) {
	algs := opts.EKAlgs
	if len(algs) == 0 {
		algs = []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC}
	}
	st := newState()
	if _, err := rand.Read(st.secret[:]); err != nil {
		return nil, fmt.Errorf("soft TPM: manufacture: %w", err)
	}
	st.firmware = opts.FirmwareVersion
	if st.firmware == 0 {
		st.firmware = DefaultFirmwareVersion
	}
	for _, alg := range algs {
		if st.eks[alg] != nil {
			continue
		}
		ek, err := generateEK(alg, opts.Keys, opts.Host)
		if err != nil {
			return nil, fmt.Errorf("soft TPM: manufacture: %w", err)
		}
		if opts.Manufacturer != nil {
			ek.cert, err = opts.Manufacturer.IssueEKCertificate(ek.key.Public(), st.firmware)
			if err != nil {
				return nil, fmt.Errorf("soft TPM: manufacture: %v EK certificate: %w", alg, err)
			}
		}
		st.eks[alg] = ek
	}
	if opts.Manufacturer != nil {
		st.issuer = opts.Manufacturer.Cert.Raw
	}
	return st, nil
}

// AKBlob is an attestation key as TPM2_Create returns it, with the EK it was
// created under. It mirrors agent.AKBlob field for field so that the two
// convert into each other.
type AKBlob struct {
	EKAlg   tpm2.TPMAlgID
	Public  tpm2.TPM2BPublic
	Private tpm2.TPM2BPrivate
}

// do runs op with the TPM locked and its state current. For a file-backed
// TPM the file is locked and reloaded first and, when op reports a change,
// saved afterwards.
func (t *TPM) do(ctx context.Context, op func(st *state) (changed bool, err error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.file == nil {
		_, err := op(t.st)
		return err
	}
	unlock, err := t.file.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := t.reloadLocked(); err != nil {
		return err
	}
	changed, err := op(t.st)
	if err != nil || !changed {
		return err
	}
	return t.saveLocked()
}

// clock is the TPM's Clock in milliseconds: it runs while the TPM is
// powered and, unlike Time, survives a TPM Reset.
func (t *TPM) clock() uint64 {
	return t.st.clock + uint64(time.Since(t.powerOn).Milliseconds())
}

// EKPublic returns the EK's public area: the TCG default template with the
// key in its unique field.
func (t *TPM) EKPublic(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	var pub tpm2.TPMTPublic
	err := t.do(ctx, func(st *state) (bool, error) {
		ek, created, err := t.ekLocked(st, ekAlg)
		if err != nil {
			return false, err
		}
		pub, err = ek.publicArea()
		return created, err
	})
	return pub, err
}

// EKName returns the TPM name of the EK.
func (t *TPM) EKName(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPM2BName, error) {
	var name tpm2.TPM2BName
	err := t.do(ctx, func(st *state) (bool, error) {
		ek, created, err := t.ekLocked(st, ekAlg)
		if err != nil {
			return false, err
		}
		name = tpm2.TPM2BName{Buffer: slices.Clone(ek.name)}
		return created, nil
	})
	return name, err
}

// EKCertificate returns the DER EK certificate issued at manufacture, or
// (nil, nil) when that EK has none.
func (t *TPM) EKCertificate(ctx context.Context, ekAlg tpm2.TPMAlgID) ([]byte, error) {
	if _, err := ekTemplate(ekAlg); err != nil {
		return nil, err
	}
	var der []byte
	err := t.do(ctx, func(st *state) (bool, error) {
		if ek := st.eks[ekAlg]; ek != nil {
			der = slices.Clone(ek.cert)
		}
		return false, nil
	})
	return der, err
}

// EKIssuer returns the DER certificate of the manufacturer CA that issued
// the EK certificates, or nil.
func (t *TPM) EKIssuer() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.st.issuer)
}

// ekLocked returns the EK of type alg, creating it (without a certificate)
// the first time one is asked for that was not manufactured.
func (t *TPM) ekLocked(st *state, alg tpm2.TPMAlgID) (ek *ekKey, created bool, err error) {
	if ek := st.eks[alg]; ek != nil {
		return ek, false, nil
	}
	ek, err = generateEK(alg, t.keys, t.host)
	if err != nil {
		return nil, false, fmt.Errorf("soft TPM: %w", err)
	}
	st.eks[alg] = ek
	return ek, true, nil
}

// Reboot simulates a host reboot (a TPM Reset: power cycle, then
// TPM2_Startup(CLEAR)): PCRs return to their initial values, resetCount
// moves on and restartCount returns to zero. Clock keeps its value, as a
// TPM keeps it in NV across resets.
func (t *TPM) Reboot(ctx context.Context) error {
	return t.do(ctx, func(st *state) (bool, error) {
		st.resetCount++
		st.restartCount = 0
		st.resetPCRs()
		return true, nil
	})
}

// Resume simulates a resume from hibernation (TPM2_Shutdown(STATE), then
// TPM2_Startup(STATE)): PCRs keep their values and restartCount moves on.
func (t *TPM) Resume(ctx context.Context) error {
	return t.do(ctx, func(st *state) (bool, error) {
		st.restartCount++
		return true, nil
	})
}

// Counters returns the current clock info, as a quote would report it.
func (t *TPM) Counters(ctx context.Context) (tpm2.TPMSClockInfo, error) {
	var ci tpm2.TPMSClockInfo
	err := t.do(ctx, func(st *state) (bool, error) {
		ci = t.clockInfo()
		return false, nil
	})
	return ci, err
}

func (t *TPM) clockInfo() tpm2.TPMSClockInfo {
	return tpm2.TPMSClockInfo{
		Clock:        t.clock(),
		ResetCount:   t.st.resetCount,
		RestartCount: t.st.restartCount,
		Safe:         true,
	}
}

// Conn returns a connection to the TPM whose methods are those of the
// agent's TPM interface.
func (t *TPM) Conn() *Conn { return &Conn{t: t} }

// Conn is one connection to a soft TPM, the counterpart of an open
// /dev/tpmrm0. Closing it leaves the TPM as it is.
type Conn struct {
	t      *TPM
	mu     sync.Mutex
	closed bool
}

var errClosed = errors.New("soft TPM: connection closed")

func (c *Conn) open() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	return nil
}

// TPM returns the TPM this connection reaches.
func (c *Conn) TPM() *TPM { return c.t }

// EKPublic is TPM.EKPublic.
func (c *Conn) EKPublic(ctx context.Context, ekAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	if err := c.open(); err != nil {
		return tpm2.TPMTPublic{}, err
	}
	return c.t.EKPublic(ctx, ekAlg)
}

// EKCertificate is TPM.EKCertificate.
func (c *Conn) EKCertificate(ctx context.Context, ekAlg tpm2.TPMAlgID) ([]byte, error) {
	if err := c.open(); err != nil {
		return nil, err
	}
	return c.t.EKCertificate(ctx, ekAlg)
}

// CreateAK is TPM.CreateAK.
func (c *Conn) CreateAK(ctx context.Context, ekAlg, akAlg tpm2.TPMAlgID) (AKBlob, error) {
	if err := c.open(); err != nil {
		return AKBlob{}, err
	}
	return c.t.CreateAK(ctx, ekAlg, akAlg)
}

// ActivateCredential is TPM.ActivateCredential.
func (c *Conn) ActivateCredential(ctx context.Context, ak AKBlob, credentialBlob tpm2.TPM2BIDObject, secret tpm2.TPM2BEncryptedSecret) ([]byte, error) {
	if err := c.open(); err != nil {
		return nil, err
	}
	return c.t.ActivateCredential(ctx, ak, credentialBlob, secret)
}

// Quote is TPM.Quote.
func (c *Conn) Quote(ctx context.Context, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, error) {
	if err := c.open(); err != nil {
		return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, err
	}
	return c.t.Quote(ctx, ak, nonce, sel)
}

// PCRRead is TPM.PCRRead.
func (c *Conn) PCRRead(ctx context.Context, sel tpm2.TPMLPCRSelection) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	if err := c.open(); err != nil {
		return nil, err
	}
	return c.t.PCRRead(ctx, sel)
}

// PCRExtend is TPM.PCRExtend.
func (c *Conn) PCRExtend(ctx context.Context, pcr int, digests map[tpm2.TPMAlgID][]byte) error {
	if err := c.open(); err != nil {
		return err
	}
	return c.t.PCRExtend(ctx, pcr, digests)
}

// PCRExtendEvents is TPM.PCRExtendEvents.
func (c *Conn) PCRExtendEvents(ctx context.Context, pcr int, banks []tpm2.TPMAlgID, digests [][]byte) error {
	if err := c.open(); err != nil {
		return err
	}
	return c.t.PCRExtendEvents(ctx, pcr, banks, digests)
}

// Close ends the connection; the TPM stays as it is.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}
