package bootpolicy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Kind is the value of a Vigil boot policy's "kind" field.
const Kind = "vigil-boot-policy"

// Check names, as used in "skip" and in failure details.
const (
	CheckSecureBoot    = "secure_boot"
	CheckSCRTM         = "scrtm"
	CheckFirmwareBlobs = "firmware_blobs"
	CheckPK            = "pk"
	CheckKEK           = "kek"
	CheckDB            = "db"
	CheckDBX           = "dbx"
	CheckBootDigests   = "boot_digests"
	CheckKernelCmdline = "kernel_cmdline"
	// Version 2 checks.
	CheckPostCodes = "post_codes"
	CheckVendorDB  = "vendor_db"
	CheckMOK       = "mok"
	CheckMOKX      = "mokx"
	CheckKernels   = "kernels"
)

var allChecks = []string{CheckSecureBoot, CheckSCRTM, CheckFirmwareBlobs, CheckPK, CheckKEK, CheckDB, CheckDBX, CheckBootDigests, CheckKernelCmdline,
	CheckPostCodes, CheckVendorDB, CheckMOK, CheckMOKX, CheckKernels}

// v2Checks are the checks version 1 policies predate: they do not apply to
// a version 1 policy, which keeps meaning what it meant.
var v2Checks = []string{CheckPostCodes, CheckVendorDB, CheckMOK, CheckMOKX, CheckKernels}

// Reasons a boot policy gives.
const (
	ReasonSecureBoot    evidence.Reason = "secure_boot_state"
	ReasonSCRTM         evidence.Reason = "scrtm_not_allowed"
	ReasonFirmware      evidence.Reason = "firmware_not_allowed"
	ReasonSigDB         evidence.Reason = "secure_boot_key_not_allowed"
	ReasonDBXMissing    evidence.Reason = "dbx_entry_missing"
	ReasonBootDigest    evidence.Reason = "boot_digest_not_allowed"
	ReasonKernelCmdline evidence.Reason = "kernel_cmdline_mismatch"
	ReasonStateMissing  evidence.Reason = "boot_state_missing"
	// ReasonMOK: a MokList shim measured into PCR 14 is not allowed (an
	// enrolled Machine Owner Key the policy does not know), or PCR 14
	// holds something other than shim's MOK measurements.
	ReasonMOK evidence.Reason = "mok_not_allowed"
	// ReasonMOKX: the MokListX (shim's revocations) is not allowed.
	ReasonMOKX evidence.Reason = "mokx_not_allowed"
	// ReasonBootChain: the PCR 4 boot chain has another shape than any
	// kernels entry (more or fewer applications).
	ReasonBootChain evidence.Reason = "boot_chain_mismatch"
	// ReasonShim, ReasonGrub, ReasonKernel: that application of the boot
	// chain (its Authenticode digest in PCR 4) is not the entry's.
	ReasonShim   evidence.Reason = "shim_not_allowed"
	ReasonGrub   evidence.Reason = "grub_not_allowed"
	ReasonKernel evidence.Reason = "kernel_not_allowed"
	// ReasonInitrd, ReasonVmlinuz: the initrd or kernel file GRUB measured
	// into PCR 9 is not the entry's.
	ReasonInitrd  evidence.Reason = "initrd_not_allowed"
	ReasonVmlinuz evidence.Reason = "vmlinuz_not_allowed"
	// ReasonBootFile: GRUB measured a file into PCR 9 that is neither its
	// configuration, a boot loader entry, the kernel nor the initrd.
	ReasonBootFile evidence.Reason = "boot_file_not_allowed"
)

// Policy is a measured-boot reference state.
type Policy struct {
	Kind    string `json:"kind"`
	Version int    `json:"version"`
	// Bank is the PCR bank the digests are in ("sha256").
	Bank string `json:"bank"`
	// SecureBoot is "enabled", "disabled" or "any".
	SecureBoot    string   `json:"secure_boot"`
	SCRTM         []string `json:"scrtm"`
	FirmwareBlobs []string `json:"firmware_blobs"`
	PK            []string `json:"pk"`
	KEK           []string `json:"kek"`
	DB            []string `json:"db"`
	DBX           []string `json:"dbx"`
	BootDigests   []string `json:"boot_digests"`
	KernelCmdline string   `json:"kernel_cmdline"`

	// Version 2. A version 1 policy must leave these out; its checks
	// then do not apply.

	// PostCodes are the allowed PCR 0 EV_POST_CODE digests. (A version 1
	// policy holds them to firmware_blobs.)
	PostCodes []string `json:"post_codes"`

	// VendorDB lists the entries of shim's built-in vendor_db a host may
	// show (certificates by the SHA-256 of their DER, hashes by their hex).
	VendorDB []string `json:"vendor_db"`
	// MOK and MOKX are the allowed digests of shim's MokList and MokListX
	// measurements (PCR 14): the Machine Owner Keys enrolled and revoked.
	MOK  []string `json:"mok"`
	MOKX []string `json:"mokx"`
	// Kernels are the boot chains allowed; a host must match one.
	Kernels []Kernel `json:"kernels"`

	// Skip names checks this policy waives.
	Skip []string `json:"skip,omitempty"`

	cmdline *regexp.Regexp
	// keylime is set for a policy converted from a Keylime reference
	// state, whose field names failures then name too.
	keylime bool
}

// Parse reads a boot policy: Vigil's format, or Keylime's measured-boot
// reference state, which is converted. Unknown fields are errors, so a typo
// cannot silently switch a check off.
func Parse(b []byte) (*Policy, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if isKeylime(probe) {
		return fromKeylime(b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if err := p.init(); err != nil {
		return nil, err
	}
	return &p, nil
}

// init validates the policy and compiles its pattern.
func (p *Policy) init() error {
	if p.Kind != Kind {
		return fmt.Errorf("boot policy: kind is %q, want %q", p.Kind, Kind)
	}
	switch p.Version {
	case 1:
		for i, set := range []bool{p.PostCodes != nil, p.VendorDB != nil, p.MOK != nil, p.MOKX != nil, p.Kernels != nil} {
			if set {
				return fmt.Errorf("boot policy: %s needs version 2 (this policy is version 1)", v2Checks[i])
			}
		}
	case 2:
	default:
		return fmt.Errorf("boot policy: version %d is not supported (want 1 or 2)", p.Version)
	}
	alg, err := evidence.ParseBank(p.Bank)
	if err != nil {
		return fmt.Errorf("boot policy: bank: %w", err)
	}
	h, _ := evidence.HashOf(alg)
	switch p.SecureBoot {
	case "enabled", "disabled", "any":
	default:
		return fmt.Errorf("boot policy: secure_boot is %q, want enabled, disabled or any", p.SecureBoot)
	}
	for _, s := range p.Skip {
		if !slices.Contains(allChecks, s) {
			return fmt.Errorf("boot policy: skip: unknown check %q (known: %s)", s, strings.Join(allChecks, ", "))
		}
	}
	for _, l := range []struct {
		name string
		vals []string
		size int // 0: any digest size (signature database entries)
	}{
		{CheckSCRTM, p.SCRTM, h.Size()}, {CheckFirmwareBlobs, p.FirmwareBlobs, h.Size()},
		{CheckBootDigests, p.BootDigests, h.Size()},
		{CheckPK, p.PK, 0}, {CheckKEK, p.KEK, 0}, {CheckDB, p.DB, 0}, {CheckDBX, p.DBX, 0},
		{CheckPostCodes, p.PostCodes, h.Size()}, {CheckVendorDB, p.VendorDB, 0}, {CheckMOK, p.MOK, h.Size()}, {CheckMOKX, p.MOKX, h.Size()},
	} {
		for i, v := range l.vals {
			if err := checkHex(v, l.size); err != nil {
				return fmt.Errorf("boot policy: %s: %w", p.name(fmt.Sprintf("%s[%d]", l.name, i)), err)
			}
		}
	}
	re, err := compileCmdline(p.KernelCmdline)
	if err != nil {
		return fmt.Errorf("boot policy: kernel_cmdline: %w", err)
	}
	for i := range p.Kernels {
		if err := p.Kernels[i].init(p, i, h.Size()); err != nil {
			return err
		}
	}
	p.cmdline = re
	return nil
}

// compileCmdline compiles a command-line pattern, which must match the
// whole command line (as Keylime's fullmatch does).
func compileCmdline(pattern string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + pattern + `)$`)
}

func checkHex(v string, size int) error {
	if len(v)%2 != 0 || strings.ToLower(v) != v {
		return fmt.Errorf("%q is not lowercase hex", v)
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%q is not lowercase hex", v)
		}
	}
	if size > 0 && len(v) != 2*size {
		return fmt.Errorf("%q has %d bytes, the bank's digests have %d", v, len(v)/2, size)
	}
	return nil
}

// skips reports a check the policy waives, or that its version predates.
func (p *Policy) skips(check string) bool {
	return slices.Contains(p.Skip, check) || p.Version < 2 && slices.Contains(v2Checks, check)
}

// Evaluate holds a boot state to the policy and returns every violation
// (nil when the state meets it). The state must be extracted in the
// policy's bank.
func (p *Policy) Evaluate(st *bootlog.BootState) []*evidence.Failure {
	if p.cmdline == nil {
		if err := p.init(); err != nil {
			return []*evidence.Failure{evidence.Fail(ReasonStateMissing, "%v", err)}
		}
	}
	var out []*evidence.Failure
	fail := func(r evidence.Reason, format string, args ...any) {
		out = append(out, evidence.Fail(r, format, args...))
	}
	if st.Bank != p.Bank {
		return []*evidence.Failure{evidence.Fail(ReasonStateMissing, "boot state is in the %s bank, the policy in %s", st.Bank, p.Bank)}
	}
	// Parts extraction could not produce: a check that needs one fails.
	missing := func(part string) bool {
		for _, m := range st.Incomplete {
			if strings.HasPrefix(m, part+":") {
				return true
			}
		}
		return false
	}
	if !p.skips(CheckSecureBoot) && p.SecureBoot != "any" {
		switch {
		case missing("secure_boot"):
			fail(ReasonStateMissing, "%s: the log does not establish the Secure Boot state", p.name(CheckSecureBoot))
		case p.SecureBoot == "enabled" && !st.SecureBoot:
			fail(ReasonSecureBoot, "Secure Boot is disabled, %s requires it enabled", p.name(CheckSecureBoot))
		case p.SecureBoot == "disabled" && st.SecureBoot:
			fail(ReasonSecureBoot, "Secure Boot is enabled, %s requires it disabled", p.name(CheckSecureBoot))
		}
	}
	if !p.skips(CheckSCRTM) && !slices.Contains(p.SCRTM, st.SCRTM) {
		if st.SCRTM == "" {
			fail(ReasonStateMissing, "%s: the log has no S-CRTM version event", p.name(CheckSCRTM))
		} else {
			fail(ReasonSCRTM, "S-CRTM version digest %s is not allowed by %s", st.SCRTM, p.name(CheckSCRTM))
		}
	}
	firmware := st.FirmwareBlobs
	if p.Version < 2 {
		// Version 1 lists POST codes with the firmware volumes.
		firmware = append(slices.Clone(firmware), st.PostCodes...)
	}
	if !p.skips(CheckFirmwareBlobs) {
		for _, d := range firmware {
			if !slices.Contains(p.FirmwareBlobs, d) {
				fail(ReasonFirmware, "platform firmware digest %s is not allowed by %s", d, p.name(CheckFirmwareBlobs))
			}
		}
	}
	if !p.skips(CheckPostCodes) {
		for _, d := range st.PostCodes {
			if !slices.Contains(p.PostCodes, d) {
				fail(ReasonFirmware, "POST code digest %s (PCR 0) is not allowed by %s", d, p.name(CheckPostCodes))
			}
		}
	}
	for _, db := range []struct {
		check   string
		allowed []string
		have    *bootlog.SigDB
	}{{CheckPK, p.PK, st.PK}, {CheckKEK, p.KEK, st.KEK}, {CheckDB, p.DB, st.DB}, {CheckVendorDB, p.VendorDB, st.VendorDB}} {
		if p.skips(db.check) {
			continue
		}
		if db.have == nil {
			fail(ReasonStateMissing, "%s: the log does not establish the %s database", p.name(db.check), db.check)
			continue
		}
		for _, e := range entries(db.have) {
			if !slices.Contains(db.allowed, e.id) {
				fail(ReasonSigDB, "%s entry %s is not allowed", p.name(db.check), e.label)
			}
		}
	}
	if !p.skips(CheckDBX) {
		if st.DBX == nil {
			fail(ReasonStateMissing, "%s: the log does not establish the dbx database", p.name(CheckDBX))
		} else {
			have := map[string]bool{}
			for _, e := range entries(st.DBX) {
				have[e.id] = true
			}
			for _, want := range p.DBX {
				if !have[want] {
					fail(ReasonDBXMissing, "dbx lacks entry %s, which %s requires", want, p.name(CheckDBX))
				}
			}
		}
	}
	if !p.skips(CheckBootDigests) {
		for i, d := range st.BootDigests {
			if !slices.Contains(p.BootDigests, d) {
				fail(ReasonBootDigest, "PCR 4 code digest #%d %s (boot application) is not allowed", i+1, d)
			}
		}
	}
	if !p.skips(CheckKernelCmdline) {
		switch {
		case missing("grub") || missing("kernel_cmdline"):
			fail(ReasonStateMissing, "kernel_cmdline: the log has no kernel command line measured by GRUB")
		case !p.cmdline.MatchString(st.KernelCmdline):
			fail(ReasonKernelCmdline, "kernel command line %q does not match %q", st.KernelCmdline, p.KernelCmdline)
		}
	}
	out = append(out, p.evaluateMOK(st)...)
	if !p.skips(CheckKernels) {
		out = append(out, p.evaluateKernels(st, missing)...)
	}
	return out
}

type entry struct{ id, label string }

func entries(db *bootlog.SigDB) []entry {
	var out []entry
	for _, c := range db.Certs {
		label := "certificate " + c.SHA256
		if c.Subject != "" {
			label += " (" + c.Subject + ")"
		}
		out = append(out, entry{c.SHA256, label})
	}
	for _, h := range db.Hashes {
		out = append(out, entry{h, "hash " + h})
	}
	return out
}

// FromState writes the (version 2) policy a known-good host's boot state
// implies: its Secure Boot state, firmware, keys, dbx, shim's vendor_db,
// boot applications, MOK state and command line, exactly, and one kernels
// entry for its boot chain, kernel and initrd (see kernelOf). Checks the
// state cannot support (a part extraction could not produce, a MOK state
// where PCR 14 was not quoted or shim measured nothing, a boot chain of no
// known shape) are put in skip, so the policy is usable and says so.
func FromState(st *bootlog.BootState) *Policy {
	p := &Policy{
		Kind: Kind, Version: 2, Bank: st.Bank,
		SecureBoot:    "disabled",
		SCRTM:         []string{},
		FirmwareBlobs: uniq(st.FirmwareBlobs),
		PostCodes:     uniq(st.PostCodes),
		BootDigests:   uniq(st.BootDigests),
		KernelCmdline: regexp.QuoteMeta(st.KernelCmdline),
		MOK:           []string{},
		MOKX:          []string{},
		Kernels:       []Kernel{},
	}
	if st.SecureBoot {
		p.SecureBoot = "enabled"
	}
	if st.SCRTM != "" {
		p.SCRTM = []string{st.SCRTM}
	} else {
		p.Skip = append(p.Skip, CheckSCRTM)
	}
	ids := func(db *bootlog.SigDB) []string {
		var out []string
		if db != nil {
			for _, e := range entries(db) {
				out = append(out, e.id)
			}
		}
		return uniq(out)
	}
	p.PK, p.KEK, p.DB, p.DBX, p.VendorDB = ids(st.PK), ids(st.KEK), ids(st.DB), ids(st.DBX), ids(st.VendorDB)
	for _, m := range st.MOK {
		switch m.Name {
		case bootlog.MokList:
			p.MOK = uniq(append(p.MOK, m.Digest))
		case bootlog.MokListX:
			p.MOKX = uniq(append(p.MOKX, m.Digest))
		}
	}
	skip := func(checks ...string) {
		for _, c := range checks {
			if !slices.Contains(p.Skip, c) {
				p.Skip = append(p.Skip, c)
			}
		}
	}
	for _, m := range st.Incomplete {
		part, _, _ := strings.Cut(m, ":")
		switch part {
		case "secure_boot":
			p.SecureBoot = "any"
			skip(CheckPK, CheckKEK, CheckDB, CheckDBX, CheckVendorDB)
		case "vendor_db":
			skip(CheckVendorDB)
		case "grub", "kernel_cmdline":
			skip(CheckKernelCmdline)
		}
	}
	if len(p.MOK) == 0 && len(p.MOKX) == 0 {
		// No shim (or PCR 14 not quoted): nothing to hold a MOK state
		// to. A host that later boots through shim shows another boot
		// chain, which boot_digests and kernels refuse.
		skip(CheckMOK, CheckMOKX)
	}
	if k, ok := kernelOf(st); ok {
		p.Kernels = append(p.Kernels, k)
	} else {
		skip(CheckKernels)
	}
	_ = p.init()
	return p
}

func uniq(in []string) []string {
	out := []string{}
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
