package soft

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/flock"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// state is everything a TPM keeps in NV, and its PCRs.
type state struct {
	secret     [32]byte // never leaves the TPM: wraps AK private areas
	eks        map[tpm2.TPMAlgID]*ekKey
	issuer     []byte // DER certificate of the EK certificates' issuer
	pcrs       map[tpm2.TPMAlgID]*bank
	clock      uint64 // Clock in ms at the TPM's powerOn instant
	resetCount uint32
	// restartCount counts TPM Restarts and Resumes since the last Reset.
	restartCount uint32
	firmware     uint64
	akCount      int // RSA AKs taken from a KeyCache so far
}

func newState() *state {
	st := &state{eks: make(map[tpm2.TPMAlgID]*ekKey), pcrs: make(map[tpm2.TPMAlgID]*bank)}
	for _, alg := range banks {
		st.pcrs[alg] = newBank(alg)
	}
	return st
}

func (st *state) resetPCRs() {
	for _, b := range st.pcrs {
		b.reset()
	}
}

// The state file is JSON: readable when debugging a demo, and its parser is
// the standard library's, with the checks below on what it yields.
const (
	stateFormat     = "vigil-soft-tpm/1"
	maxStateFile    = 1 << 20
	maxStateCertLen = 16 << 10
)

type stateJSON struct {
	Format          string              `json:"format"`
	Secret          []byte              `json:"secret"`
	EKs             []ekJSON            `json:"eks"`
	EKIssuer        []byte              `json:"ek_issuer,omitempty"`
	PCRs            map[string][]string `json:"pcrs"`
	ClockMS         uint64              `json:"clock_ms"`
	SavedUnixMS     int64               `json:"saved_unix_ms"`
	ResetCount      uint32              `json:"reset_count"`
	RestartCount    uint32              `json:"restart_count"`
	FirmwareVersion uint64              `json:"firmware_version"`
	AKCount         int                 `json:"ak_count"`
}

type ekJSON struct {
	Alg  string `json:"alg"`  // "rsa" or "ecc"
	Key  []byte `json:"key"`  // PKCS#8 DER
	Cert []byte `json:"cert"` // DER, or absent
}

var ekAlgNames = map[tpm2.TPMAlgID]string{tpm2.TPMAlgRSA: "rsa", tpm2.TPMAlgECC: "ecc"}

// marshalState encodes the state with the clock reading clock at now.
func marshalState(st *state, clock uint64, now time.Time) ([]byte, error) {
	j := stateJSON{
		Format:          stateFormat,
		Secret:          st.secret[:],
		EKIssuer:        st.issuer,
		PCRs:            make(map[string][]string),
		ClockMS:         clock,
		SavedUnixMS:     now.UnixMilli(),
		ResetCount:      st.resetCount,
		RestartCount:    st.restartCount,
		FirmwareVersion: st.firmware,
		AKCount:         st.akCount,
	}
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		ek := st.eks[alg]
		if ek == nil {
			continue
		}
		der, err := x509.MarshalPKCS8PrivateKey(ek.key)
		if err != nil {
			return nil, fmt.Errorf("%v EK: %w", alg, err)
		}
		j.EKs = append(j.EKs, ekJSON{Alg: ekAlgNames[alg], Key: der, Cert: ek.cert})
	}
	for _, alg := range banks {
		var vals []string
		for _, v := range st.pcrs[alg].pcr {
			vals = append(vals, hex.EncodeToString(v))
		}
		j.PCRs[tpmfacts.BankName(alg)] = vals
	}
	return json.MarshalIndent(j, "", "  ")
}

// parseState decodes and checks a state file, returning the state with its
// clock carried forward to now: a simulated TPM whose file sat unused was
// still powered (only Reboot models a power cycle), and its clock never runs
// backwards even if the wall clock does.
func parseState(data []byte, now time.Time) (*state, error) {
	if len(data) > maxStateFile {
		return nil, fmt.Errorf("%d bytes, more than a state file's %d", len(data), maxStateFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var j stateJSON
	if err := dec.Decode(&j); err != nil {
		return nil, jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("byte %d: data after the state object", dec.InputOffset())
	}
	if j.Format != stateFormat {
		return nil, fmt.Errorf("field format: %q, want %q", j.Format, stateFormat)
	}
	st := newState()
	if len(j.Secret) != len(st.secret) {
		return nil, fmt.Errorf("field secret: %d bytes, want %d", len(j.Secret), len(st.secret))
	}
	copy(st.secret[:], j.Secret)
	for i, e := range j.EKs {
		ek, err := parseEK(e)
		if err != nil {
			return nil, fmt.Errorf("field eks[%d]: %w", i, err)
		}
		if st.eks[ek.alg] != nil {
			return nil, fmt.Errorf("field eks[%d]: a second %s EK", i, e.Alg)
		}
		st.eks[ek.alg] = ek
	}
	if len(j.EKIssuer) > 0 {
		if len(j.EKIssuer) > maxStateCertLen {
			return nil, fmt.Errorf("field ek_issuer: %d bytes", len(j.EKIssuer))
		}
		if _, err := x509.ParseCertificate(j.EKIssuer); err != nil {
			return nil, fmt.Errorf("field ek_issuer: %w", err)
		}
		st.issuer = j.EKIssuer
	}
	if len(j.PCRs) != len(banks) {
		return nil, fmt.Errorf("field pcrs: %d banks, want sha1 and sha256", len(j.PCRs))
	}
	for _, alg := range banks {
		name := tpmfacts.BankName(alg)
		vals, ok := j.PCRs[name]
		if !ok {
			return nil, fmt.Errorf("field pcrs: no %s bank", name)
		}
		if len(vals) != NumPCRs {
			return nil, fmt.Errorf("field pcrs.%s: %d PCRs, want %d", name, len(vals), NumPCRs)
		}
		b := st.pcrs[alg]
		for i, s := range vals {
			v, err := hex.DecodeString(s)
			if err != nil || len(v) != b.hash.Size() {
				return nil, fmt.Errorf("field pcrs.%s[%d]: want %d hex-encoded bytes", name, i, b.hash.Size())
			}
			b.pcr[i] = v
		}
	}
	if j.AKCount < 0 {
		return nil, fmt.Errorf("field ak_count: %d", j.AKCount)
	}
	st.clock = j.ClockMS
	if elapsed := now.UnixMilli() - j.SavedUnixMS; elapsed > 0 && j.SavedUnixMS > 0 {
		st.clock += uint64(elapsed)
	}
	st.resetCount, st.restartCount = j.ResetCount, j.RestartCount
	st.firmware, st.akCount = j.FirmwareVersion, j.AKCount
	return st, nil
}

func jsonError(data []byte, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("byte %d: %w", syn.Offset, err)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("byte %d: field %s: %w", typ.Offset, typ.Field, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("byte %d: truncated: %w", len(data), err)
	}
	return err
}

func parseEK(e ekJSON) (*ekKey, error) {
	var alg tpm2.TPMAlgID
	for a, n := range ekAlgNames {
		if n == e.Alg {
			alg = a
		}
	}
	if alg == 0 {
		return nil, fmt.Errorf("alg %q, want rsa or ecc", e.Alg)
	}
	k, err := x509.ParsePKCS8PrivateKey(e.Key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	var key crypto.Signer
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if alg == tpm2.TPMAlgRSA {
			key = k
		}
	case *ecdsa.PrivateKey:
		if alg == tpm2.TPMAlgECC && k.Curve == elliptic.P256() {
			key = k
		}
	}
	if key == nil {
		return nil, fmt.Errorf("key: %T is not a %s EK key", k, e.Alg)
	}
	ek, err := newEKKey(alg, key)
	if err != nil {
		return nil, err
	}
	if len(e.Cert) > 0 {
		if len(e.Cert) > maxStateCertLen {
			return nil, fmt.Errorf("cert: %d bytes", len(e.Cert))
		}
		cert, err := x509.ParseCertificate(e.Cert)
		if err != nil {
			return nil, fmt.Errorf("cert: %w", err)
		}
		if !publicKeysEqual(key.Public(), cert.PublicKey) {
			return nil, errors.New("cert: certifies another key than the EK's")
		}
		ek.cert = e.Cert
	}
	return ek, nil
}

// Save writes the TPM's state to path, atomically, readable only by its
// owner: it holds the TPM's secrets.
func (t *TPM) Save(path string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writeLocked(path)
}

func (t *TPM) writeLocked(path string) error {
	now := time.Now()
	data, err := marshalState(t.st, t.clock(), now)
	if err != nil {
		return fmt.Errorf("soft TPM: save %s: %w", path, err)
	}
	return writeFileAtomic(path, data)
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("soft TPM: save: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp, 0o600)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("soft TPM: save %s: %w", path, werr)
	}
	return nil
}

func readStateFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, nil, err
	}
	return data, fi, nil
}

// Load reads a TPM from a state file into memory. Changes to it stay in
// memory until Save.
func Load(path string) (*TPM, error) {
	data, _, err := readStateFile(path)
	if err != nil {
		return nil, fmt.Errorf("soft TPM: %w", err)
	}
	now := time.Now()
	st, err := parseState(data, now)
	if err != nil {
		return nil, fmt.Errorf("soft TPM state %s: %w", path, err)
	}
	return &TPM{st: st, powerOn: now}, nil
}

// stateFile is the file behind a file-backed TPM.
type stateFile struct {
	path   string
	loaded fs.FileInfo // the version t.st came from, or last wrote
}

// Open returns the TPM whose state is in path, which serves as its NV: every
// operation reloads the file if another process changed it and saves it
// after a change, under an exclusive lock on path+".lock". When path does
// not exist, a new TPM is manufactured there with an RSA and an ECC EK
// whose certificates come from a manufacturer CA of its own (EKIssuer
// returns that CA's certificate). This is what `--tpm soft:PATH` opens.
func Open(path string) (*TPM, error) {
	t, err := openExisting(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return t, err
	}
	m, err := NewManufacturer("Vigil soft TPM manufacturer")
	if err != nil {
		return nil, err
	}
	t, err = Create(path, Options{Manufacturer: m})
	if errors.Is(err, fs.ErrExist) {
		// Another process manufactured it first.
		return openExisting(path)
	}
	return t, err
}

// Create manufactures a TPM into a new state file at path and returns it
// file-backed, as Open does. It fails with fs.ErrExist if path exists.
func Create(path string, opts Options) (*TPM, error) {
	t := &TPM{keys: opts.Keys, host: opts.Host, file: &stateFile{path: path}}
	unlock, err := t.file.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("soft TPM: create %s: %w", path, fs.ErrExist)
	}
	st, err := manufacture(opts)
	if err != nil {
		return nil, err
	}
	t.st, t.powerOn = st, time.Now()
	if err := t.saveLocked(); err != nil {
		return nil, err
	}
	return t, nil
}

func openExisting(path string) (*TPM, error) {
	t := &TPM{file: &stateFile{path: path}}
	unlock, err := t.file.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := t.reloadLocked(); err != nil {
		return nil, err
	}
	return t, nil
}

// reloadLocked loads the state file unless it is the version already held.
// The caller holds t.mu and the file lock.
func (t *TPM) reloadLocked() error {
	data, fi, err := readStateFile(t.file.path)
	if err != nil {
		return fmt.Errorf("soft TPM: %w", err)
	}
	if old := t.file.loaded; old != nil && os.SameFile(old, fi) && old.ModTime().Equal(fi.ModTime()) && old.Size() == fi.Size() {
		return nil
	}
	now := time.Now()
	st, err := parseState(data, now)
	if err != nil {
		return fmt.Errorf("soft TPM state %s: %w", t.file.path, err)
	}
	if t.st != nil && t.st.secret == st.secret {
		st.clock = max(st.clock, t.clock())
	}
	t.st, t.powerOn, t.file.loaded = st, now, fi
	t.aks = akCache{}
	return nil
}

// saveLocked writes the state file and remembers the version written. The
// caller holds t.mu and the file lock.
func (t *TPM) saveLocked() error {
	if err := t.writeLocked(t.file.path); err != nil {
		return err
	}
	fi, err := os.Stat(t.file.path)
	if err != nil {
		return fmt.Errorf("soft TPM: %w", err)
	}
	t.file.loaded = fi
	return nil
}

// lock takes the exclusive lock that serialises operations on the state
// file across processes.
func (f *stateFile) lock() (unlock func(), err error) {
	lf, err := os.OpenFile(f.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("soft TPM: lock %s: %w", f.path, err)
	}
	if err := flock.Lock(lf); err != nil {
		lf.Close()
		return nil, fmt.Errorf("soft TPM: lock %s: %w", f.path, err)
	}
	return func() {
		_ = flock.Unlock(lf)
		lf.Close()
	}, nil
}
