package bootlog

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// BootState is what a verified log says about the boot, in one bank. Digests
// are lowercase hex in that bank's algorithm; certificates are named by the
// SHA-256 of their DER encoding, whatever the bank.
type BootState struct {
	Bank string `json:"bank"`
	// SecureBoot is the SecureBoot variable's value as measured into PCR 7.
	SecureBoot bool `json:"secure_boot"`
	// SCRTM is the digest of the EV_S_CRTM_VERSION event: the firmware's
	// core root of trust and its version.
	SCRTM string `json:"scrtm,omitempty"`
	// SCRTMVersion is that event's data, hex (often a UCS-2 string).
	SCRTMVersion string `json:"scrtm_version,omitempty"`
	// FirmwareBlobs are the PCR 0 digests of platform firmware volumes
	// (EV_EFI_PLATFORM_FIRMWARE_BLOB/BLOB2, EV_POST_CODE).
	FirmwareBlobs []string `json:"firmware_blobs,omitempty"`
	PK            *SigDB   `json:"pk,omitempty"`
	KEK           *SigDB   `json:"kek,omitempty"`
	DB            *SigDB   `json:"db,omitempty"`
	DBX           *SigDB   `json:"dbx,omitempty"`
	// Authorities are the db entries firmware used to verify what it loaded.
	Authorities []Cert `json:"authorities,omitempty"`
	// BootDigests are the digests extended into PCR 4 other than data-checked
	// separators and EFI actions: the Authenticode digests of every EFI
	// application loaded (shim, GRUB, the kernel), in order. Because the
	// event type is not measured, any other PCR 4 event counts as code.
	BootDigests []string `json:"boot_digests"`
	// GrubCommands are the command lines GRUB measured into PCR 8.
	GrubCommands []string `json:"grub_commands,omitempty"`
	// GrubFiles are the files GRUB measured into PCR 9 (kernel, initrd,
	// grub.cfg): digest and the unmeasured file name.
	GrubFiles []GrubFile `json:"grub_files,omitempty"`
	// KernelCmdline is the kernel command line GRUB measured.
	KernelCmdline string `json:"kernel_cmdline,omitempty"`
	// Incomplete lists parts that could not be extracted, and why. A policy
	// that needs a missing part fails.
	Incomplete []string `json:"incomplete,omitempty"`
}

// SigDB is a UEFI signature database (PK, KEK, db, dbx).
type SigDB struct {
	Certs  []Cert   `json:"certs"`
	Hashes []string `json:"hashes"`
}

// Cert names an X.509 certificate.
type Cert struct {
	SHA256  string `json:"sha256"`
	Subject string `json:"subject,omitempty"`
}

// GrubFile is a file GRUB measured.
type GrubFile struct {
	Digest string `json:"digest"`
	Name   string `json:"name,omitempty"`
}

// State extracts the boot state from the events verified in one bank (the
// strongest when bank is 0).
func (v *Verified) State(bank tpm2.TPMAlgID) (st *BootState, err error) {
	if bank == 0 {
		bank = v.Banks[0]
	}
	events, ok := v.events[bank]
	if !ok {
		return nil, fmt.Errorf("bank %s was not verified", evidence.BankName(bank))
	}
	// go-eventlog panics on event types it does not know; such events only
	// count in the replay, so they are left out of extraction, and any other
	// panic becomes an error rather than taking the verifier down.
	known := make([]tcg.Event, 0, len(events))
	for _, e := range events {
		if _, ok := e.Type.KnownName(); ok {
			known = append(known, e)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			st, err = nil, evidence.Fail(ReasonUnusable, "boot state extraction failed: %v", r)
		}
	}()
	_, h, _ := registerHash(bank)
	st = &BootState{Bank: evidence.BankName(bank), BootDigests: []string{}}
	incomplete := func(part string, err error) {
		st.Incomplete = append(st.Incomplete, part+": "+err.Error())
	}
	if p, err := extract.PlatformState(h, known); err != nil {
		incomplete("scrtm", err)
	} else if id := p.GetScrtmVersionId(); len(id) > 0 {
		st.SCRTMVersion = hex.EncodeToString(id)
	}
	sb, err := extract.ParseSecurebootState(known, extract.TPMRegisterConfig, extract.Opts{Loader: extract.GRUB, AllowEFIAppBeforeCallingEvent: true})
	if err != nil {
		incomplete("secure_boot", err)
	} else {
		st.SecureBoot = sb.Enabled
		st.PK = sigDB(sb.PlatformKeys, sb.PlatformKeyHashes)
		st.KEK = sigDB(sb.ExchangeKeys, sb.ExchangeKeyHashes)
		st.DB = sigDB(sb.PermittedKeys, sb.PermittedHashes)
		st.DBX = sigDB(sb.ForbiddenKeys, sb.ForbiddenHashes)
		for _, c := range sb.PostSeparatorAuthority {
			st.Authorities = append(st.Authorities, certOf(c))
		}
	}
	for _, e := range events {
		switch {
		case e.Index == 0 && e.Type == tcg.SCRTMVersion && st.SCRTM == "":
			st.SCRTM = hex.EncodeToString(e.Digest)
		case e.Index == 0 && (e.Type == tcg.EFIPlatformFirmwareBlob || e.Type == tcg.EFIPlatformFirmwareBlob2 || e.Type == tcg.PostCode):
			st.FirmwareBlobs = append(st.FirmwareBlobs, hex.EncodeToString(e.Digest))
		case e.Index == 4:
			if (e.Type == tcg.Separator || e.Type == tcg.EFIAction) && e.DigestVerified() {
				continue
			}
			st.BootDigests = append(st.BootDigests, hex.EncodeToString(e.Digest))
		}
	}
	if g, err := extract.GrubStateFromTPMLog(h, known); err != nil {
		incomplete("grub", err)
	} else {
		st.GrubCommands = g.GetCommands()
		for _, f := range g.GetFiles() {
			st.GrubFiles = append(st.GrubFiles, GrubFile{Digest: hex.EncodeToString(f.GetDigest()), Name: strings.TrimRight(string(f.GetUntrustedFilename()), "\x00")})
		}
		if k, err := extract.LinuxKernelStateFromGRUB(g); err != nil {
			incomplete("kernel_cmdline", err)
		} else {
			st.KernelCmdline = strings.TrimRight(k.GetCommandLine(), "\x00")
		}
	}
	return st, nil
}

func sigDB(certs []x509.Certificate, hashes [][]byte) *SigDB {
	db := &SigDB{Certs: []Cert{}, Hashes: []string{}}
	for _, c := range certs {
		db.Certs = append(db.Certs, certOf(c))
	}
	for _, h := range hashes {
		db.Hashes = append(db.Hashes, hex.EncodeToString(h))
	}
	return db
}

func certOf(c x509.Certificate) Cert {
	sum := sha256.Sum256(c.Raw)
	return Cert{SHA256: hex.EncodeToString(sum[:]), Subject: c.Subject.String()}
}
