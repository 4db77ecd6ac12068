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
)

var allChecks = []string{CheckSecureBoot, CheckSCRTM, CheckFirmwareBlobs, CheckPK, CheckKEK, CheckDB, CheckDBX, CheckBootDigests, CheckKernelCmdline}

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
	// Skip names checks this policy waives.
	Skip []string `json:"skip,omitempty"`

	cmdline *regexp.Regexp
}

// Parse reads a boot policy: Vigil's format, or Keylime's measured-boot
// reference state, which is converted. Unknown fields are errors, so a typo
// cannot silently switch a check off.
func Parse(b []byte) (*Policy, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("boot policy: %w", err)
	}
	if _, ok := probe["scrtm_and_bios"]; ok {
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
	if p.Version != 1 {
		return fmt.Errorf("boot policy: version %d is not supported (want 1)", p.Version)
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
	} {
		for i, v := range l.vals {
			if err := checkHex(v, l.size); err != nil {
				return fmt.Errorf("boot policy: %s[%d]: %w", l.name, i, err)
			}
		}
	}
	re, err := regexp.Compile(`^(?:` + p.KernelCmdline + `)$`)
	if err != nil {
		return fmt.Errorf("boot policy: kernel_cmdline: %w", err)
	}
	p.cmdline = re
	return nil
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

func (p *Policy) skips(check string) bool { return slices.Contains(p.Skip, check) }

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
			fail(ReasonStateMissing, "secure_boot: the log does not establish the Secure Boot state")
		case p.SecureBoot == "enabled" && !st.SecureBoot:
			fail(ReasonSecureBoot, "Secure Boot is disabled, the policy requires it enabled")
		case p.SecureBoot == "disabled" && st.SecureBoot:
			fail(ReasonSecureBoot, "Secure Boot is enabled, the policy requires it disabled")
		}
	}
	if !p.skips(CheckSCRTM) && !slices.Contains(p.SCRTM, st.SCRTM) {
		if st.SCRTM == "" {
			fail(ReasonStateMissing, "scrtm: the log has no S-CRTM version event")
		} else {
			fail(ReasonSCRTM, "S-CRTM version digest %s is not allowed", st.SCRTM)
		}
	}
	if !p.skips(CheckFirmwareBlobs) {
		for _, d := range st.FirmwareBlobs {
			if !slices.Contains(p.FirmwareBlobs, d) {
				fail(ReasonFirmware, "platform firmware digest %s is not allowed", d)
			}
		}
	}
	for _, db := range []struct {
		check   string
		allowed []string
		have    *bootlog.SigDB
	}{{CheckPK, p.PK, st.PK}, {CheckKEK, p.KEK, st.KEK}, {CheckDB, p.DB, st.DB}} {
		if p.skips(db.check) {
			continue
		}
		if db.have == nil {
			fail(ReasonStateMissing, "%s: the log does not establish the %s database", db.check, db.check)
			continue
		}
		for _, e := range entries(db.have) {
			if !slices.Contains(db.allowed, e.id) {
				fail(ReasonSigDB, "%s entry %s is not allowed", db.check, e.label)
			}
		}
	}
	if !p.skips(CheckDBX) {
		if st.DBX == nil {
			fail(ReasonStateMissing, "dbx: the log does not establish the dbx database")
		} else {
			have := map[string]bool{}
			for _, e := range entries(st.DBX) {
				have[e.id] = true
			}
			for _, want := range p.DBX {
				if !have[want] {
					fail(ReasonDBXMissing, "dbx lacks required entry %s", want)
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

// FromState writes the policy a known-good host's boot state implies: its
// Secure Boot state, firmware, keys, dbx, boot applications and command
// line, exactly. Checks the state cannot support (a part extraction could
// not produce) are put in skip, so the policy is usable and says so.
func FromState(st *bootlog.BootState) *Policy {
	p := &Policy{
		Kind: Kind, Version: 1, Bank: st.Bank,
		SecureBoot:    "disabled",
		SCRTM:         []string{},
		FirmwareBlobs: uniq(st.FirmwareBlobs),
		BootDigests:   uniq(st.BootDigests),
		KernelCmdline: regexp.QuoteMeta(st.KernelCmdline),
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
	p.PK, p.KEK, p.DB, p.DBX = ids(st.PK), ids(st.KEK), ids(st.DB), ids(st.DBX)
	for _, m := range st.Incomplete {
		part, _, _ := strings.Cut(m, ":")
		switch part {
		case "secure_boot":
			p.SecureBoot = "any"
			p.Skip = append(p.Skip, CheckPK, CheckKEK, CheckDB, CheckDBX)
		case "grub", "kernel_cmdline":
			if !slices.Contains(p.Skip, CheckKernelCmdline) {
				p.Skip = append(p.Skip, CheckKernelCmdline)
			}
		}
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
