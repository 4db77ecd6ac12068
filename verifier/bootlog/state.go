package bootlog

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
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
	// (EV_EFI_PLATFORM_FIRMWARE_BLOB/BLOB2).
	FirmwareBlobs []string `json:"firmware_blobs,omitempty"`
	// PostCodes are the PCR 0 EV_POST_CODE digests: more firmware code,
	// or on some firmware its ACPI tables.
	PostCodes []string `json:"post_codes,omitempty"`
	PK        *SigDB   `json:"pk,omitempty"`
	KEK       *SigDB   `json:"kek,omitempty"`
	DB        *SigDB   `json:"db,omitempty"`
	DBX       *SigDB   `json:"dbx,omitempty"`
	// Authorities are the db entries firmware used to verify what it loaded.
	Authorities []Cert `json:"authorities,omitempty"`
	// BootDigests are the digests extended into PCR 4 other than data-checked
	// separators and EFI actions: the Authenticode digests of every EFI
	// application loaded (shim, GRUB, the kernel), in order. Because the
	// event type is not measured, any other PCR 4 event counts as code.
	BootDigests []string `json:"boot_digests"`
	// BootChain are the BootDigests of what the boot manager started from
	// its boot option on (shim, GRUB, the kernel), in order: BootDigests
	// without FirmwareApps. Keylime's reference states describe this chain.
	BootChain []string `json:"boot_chain"`
	// FirmwareApps are the BootDigests of the firmware's own applications
	// (its setup or boot menu): images loaded from a firmware volume before
	// the boot manager called a boot option (the verified EV_EFI_ACTION
	// "Calling EFI Application from Boot Option"). Their code is part of
	// the firmware volumes measured into PCR 0.
	FirmwareApps []string `json:"firmware_apps,omitempty"`
	// MOK are shim's measurements of its Machine Owner Key state into PCR
	// 14 (MokList, MokListX, MokListTrusted, ...), in order: empty when
	// shim measured nothing, nil (null) when PCR 14 was not quoted, since
	// the events of a PCR the quote does not cover prove nothing.
	MOK []MOKEvent `json:"mok"`
	// VendorDB is shim's built-in vendor_db as the log shows it: the
	// entries shim logged under that name in PCR 7 (the authorities it
	// verified with, and the variable if measured). Nil when the Secure
	// Boot state could not be extracted.
	VendorDB *SigDB `json:"vendor_db,omitempty"`
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

// MOKEvent is one of shim's PCR 14 measurements. The digest is of the
// variable's content; the name is the event data, which is not measured.
type MOKEvent struct {
	// Num is the event's position in the log.
	Num int `json:"num"`
	// Name is the variable shim says it measured: MokList, MokListX,
	// MokListTrusted, MokSBState, MokPolicy.
	Name string `json:"name"`
	// Type is the event type when it is not EV_IPL, the type shim uses.
	Type   string `json:"type,omitempty"`
	Digest string `json:"digest"`
}

// Names shim gives its PCR 14 measurements.
const (
	MokList        = "MokList"
	MokListX       = "MokListX"
	MokListTrusted = "MokListTrusted"
	MokSBState     = "MokSBState"
	MokPolicy      = "MokPolicy"
)

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
	st = &BootState{Bank: evidence.BankName(bank), BootDigests: []string{}, BootChain: []string{}}
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
		// go-eventlog checked the digest of every PCR 7 variable and
		// authority event it parsed, so their data can be read.
		if st.VendorDB, err = vendorDB(known); err != nil {
			incomplete("vendor_db", err)
		}
	}
	bootOption := false
	for _, e := range events {
		switch {
		case e.Index == 0 && e.Type == tcg.SCRTMVersion && st.SCRTM == "":
			st.SCRTM = hex.EncodeToString(e.Digest)
		case e.Index == 0 && (e.Type == tcg.EFIPlatformFirmwareBlob || e.Type == tcg.EFIPlatformFirmwareBlob2):
			st.FirmwareBlobs = append(st.FirmwareBlobs, hex.EncodeToString(e.Digest))
		case e.Index == 0 && e.Type == tcg.PostCode:
			st.PostCodes = append(st.PostCodes, hex.EncodeToString(e.Digest))
		case e.Index == 4:
			if (e.Type == tcg.Separator || e.Type == tcg.EFIAction) && e.DigestVerified() {
				// The action's data hashes to its digest (checkEventData),
				// so its text is what was measured.
				if e.Type == tcg.EFIAction && string(e.Data) == callingBootOption {
					bootOption = true
				}
				continue
			}
			d := hex.EncodeToString(e.Digest)
			st.BootDigests = append(st.BootDigests, d)
			if !bootOption && firmwareVolumeImage(e) {
				st.FirmwareApps = append(st.FirmwareApps, d)
			} else {
				st.BootChain = append(st.BootChain, d)
			}
		}
	}
	if _, quoted := v.PCRs.Get(bank, mokPCR); quoted {
		st.MOK = []MOKEvent{}
		for _, e := range events {
			if e.Index != mokPCR {
				continue
			}
			m := MOKEvent{Num: int(e.Num()), Digest: hex.EncodeToString(e.Digest), Name: strings.TrimRight(string(e.Data), "\x00")}
			if e.Type != tcg.Ipl {
				m.Type = e.Type.String()
			}
			st.MOK = append(st.MOK, m)
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

// callingBootOption is the EV_EFI_ACTION the boot manager measures into
// PCR 4 when it first starts a boot option (ReadyToBoot).
const callingBootOption = "Calling EFI Application from Boot Option"

// firmwareVolumeImage tells an EFI application loaded from a firmware
// volume (its device path has a PIWG firmware volume or firmware file
// node): one of the firmware's own, such as its setup or boot menu.
func firmwareVolumeImage(e tcg.Event) bool {
	if e.Type != tcg.EFIBootServicesApplication {
		return false
	}
	img, err := tcg.ParseEFIImageLoad(bytes.NewReader(e.Data))
	if err != nil {
		return false
	}
	path, err := img.DevicePath()
	if err != nil {
		return false
	}
	for _, n := range path {
		if n.Type == tcg.MediaDevice && (n.Subtype == mediaPIWGFirmwareFile || n.Subtype == mediaPIWGFirmwareVolume) {
			return true
		}
	}
	return false
}

// Device path media subtypes of the UEFI specification (10.3.5.6, 10.3.5.7).
const (
	mediaPIWGFirmwareFile   = 0x06
	mediaPIWGFirmwareVolume = 0x07
)

// vendorDBName is the name newer shims log their built-in allow list
// under (older ones log it as "db").
const vendorDBName = "vendor_db"

// vendorDB collects the vendor_db entries shim logged in PCR 7: the
// authorities it verified an image with (EV_EFI_VARIABLE_AUTHORITY, an
// EFI_SIGNATURE_DATA each) and the variable itself when measured as a
// signature database (EV_EFI_VARIABLE_DRIVER_CONFIG).
func vendorDB(events []tcg.Event) (*SigDB, error) {
	db := &SigDB{Certs: []Cert{}, Hashes: []string{}}
	for _, e := range events {
		if e.Index != 7 || (e.Type != tcg.EFIVariableAuthority && e.Type != tcg.EFIVariableDriverConfig) {
			continue
		}
		v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
		if err != nil || v.VarName() != vendorDBName {
			continue
		}
		if e.Type == tcg.EFIVariableDriverConfig {
			certs, hashes, err := v.SignatureData()
			if err != nil {
				return nil, fmt.Errorf("event %d: vendor_db: %v", e.Num(), err)
			}
			add(db, sigDB(certs, hashes))
			continue
		}
		a, err := tcg.ParseUEFIVariableAuthority(v)
		switch {
		case err == nil || errors.Is(err, tcg.ErrSigMissingGUID):
			add(db, sigDB(a.Certs, nil))
		case len(v.VariableData) > 16:
			// An EFI_SIGNATURE_DATA holding a hash rather than a
			// certificate: the owner GUID, then the hash.
			add(db, sigDB(nil, [][]byte{v.VariableData[16:]}))
		default:
			return nil, fmt.Errorf("event %d: vendor_db authority: %v", e.Num(), err)
		}
	}
	return db, nil
}

// add appends src's entries to dst.
func add(dst, src *SigDB) {
	dst.Certs = append(dst.Certs, src.Certs...)
	dst.Hashes = append(dst.Hashes, src.Hashes...)
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
