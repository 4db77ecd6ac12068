package bootpolicy

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Keylime's measured-boot reference state (mb_refstate), as
// create_mb_refstate and `keylime-policy create measured-boot` write it
// and as the example policy of keylime/mba/elchecking/example.py reads it.
// Every field that policy reads is converted into a check, or the
// reference state is refused with an error naming the field: nothing is
// silently dropped.
//
//	has_secureboot    optional, default true: Secure Boot must be on
//	                  (secure_boot "enabled"); false: it must be off
//	                  ("disabled"), and pk, kek, db, dbx and vendor_db are
//	                  only checked when listed (Keylime accepts anything
//	                  for an empty one then).
//	scrtm_and_bios    scrtm and firmware_blobs (the union of the entries)
//	pk, kek, db       pk, kek, db: every entry on the host must be listed
//	dbx               dbx: every listed entry must be on the host
//	                  (entries are compared by SignatureData: certificates
//	                  by the SHA-256 of their DER, hashes as they are; the
//	                  SignatureOwner GUID, which firmware does not use to
//	                  decide trust, must be there but is not compared)
//	vendor_db         optional, default []: vendor_db
//	mokdig, mokxdig   mok, mokx (PCR 14)
//	kernels           kernels: shim_authcode_sha256 → shim,
//	                  grub_authcode_sha256 → grub, kernel_authcode_sha256
//	                  → kernel, initrd_plain_sha256 → initrd,
//	                  vmlinuz_plain_sha256 → vmlinuz, kernel_cmdline →
//	                  cmdline
//
// The kernels entries stand for the boot chain, so boot_digests and the
// policy-wide kernel_cmdline are skipped: applications the firmware ran
// from its own volumes before the boot option (its setup or boot menu),
// which Keylime's generator leaves out of a reference state too, are
// covered by the firmware volumes in scrtm_and_bios. A reference state has
// no field for PCR 0's EV_POST_CODE events (ACPI tables on some firmware),
// so post_codes is skipped too. Keylime's digests are SHA-256, so the
// policy is in that bank.
var keylimeFields = []string{"has_secureboot", "scrtm_and_bios", "pk", "kek", "db", "dbx", "vendor_db", "mokdig", "mokxdig", "kernels"}

// keylimeRequired are the fields Keylime's example policy refuses a
// reference state without.
var keylimeRequired = []string{"scrtm_and_bios", "pk", "kek", "db", "dbx", "mokdig", "mokxdig", "kernels"}

// keylimeOnly are fields only a Keylime reference state has, which tell
// it from a Vigil policy.
var keylimeOnly = []string{"has_secureboot", "scrtm_and_bios", "mokdig", "mokxdig"}

// isKeylime tells a Keylime reference state from a Vigil policy (which
// always has "kind").
func isKeylime(probe map[string]json.RawMessage) bool {
	if _, ok := probe["kind"]; ok {
		return false
	}
	for _, f := range keylimeOnly {
		if _, ok := probe[f]; ok {
			return true
		}
	}
	if raw, ok := probe["kernels"]; ok {
		// Keylime's kernels entries have fields Vigil's lack.
		return bytes.Contains(raw, []byte("_sha256")) || bytes.Contains(raw, []byte("kernel_cmdline"))
	}
	return false
}

// keylimeKernelFields name each Vigil kernels field in Keylime's terms.
var keylimeKernelFields = map[string]string{
	"shim": "shim_authcode_sha256", "grub": "grub_authcode_sha256", "kernel": "kernel_authcode_sha256",
	"initrd": "initrd_plain_sha256", "vmlinuz": "vmlinuz_plain_sha256", "cmdline": "kernel_cmdline",
}

// keylimeTopFields name Vigil's policy-wide fields in Keylime's terms.
var keylimeTopFields = map[string]string{
	"scrtm": "scrtm_and_bios[].scrtm", "firmware_blobs": "scrtm_and_bios[].platform_firmware",
	"mok": "mokdig", "mokx": "mokxdig", "secure_boot": "has_secureboot",
}

// name is how failures and errors name a policy field: Vigil's name, and
// Keylime's too when the policy came from a Keylime reference state.
func (p *Policy) name(path string) string {
	if !p.keylime {
		return path
	}
	k := path
	if head, f, ok := strings.Cut(path, "."); ok && strings.HasPrefix(head, "kernels[") {
		if kf, ok := keylimeKernelFields[f]; ok {
			k = head + "." + kf
		}
	} else {
		base, idx, _ := strings.Cut(path, "[")
		if kf, ok := keylimeTopFields[base]; ok {
			k = kf
			if idx != "" && !strings.Contains(kf, "[]") {
				k += "[" + idx
			}
		}
	}
	if k == path {
		return path
	}
	return fmt.Sprintf("%s (Keylime %s)", path, k)
}

// keylimeError is an error about a reference state, naming the field.
func keylimeError(format string, args ...any) error {
	return fmt.Errorf("keylime reference state: "+format, args...)
}

// decodeStrict decodes JSON into v, refusing fields v does not have.
func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

// list decodes a field that must be a JSON array (not null).
func list[T any](where string, raw json.RawMessage) ([]T, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, keylimeError("%s is null, want a list", where)
	}
	var out []T
	if err := decodeStrict(raw, &out); err != nil {
		return nil, keylimeError("%s: %v", where, err)
	}
	return out, nil
}

// Keylime digests are maps from an algorithm name to 0x-prefixed hex.
var keylimeAlgs = []string{"sha1", "sha256", "sha384", "sha512", "sm3_256"}

// keylimeDigest takes the SHA-256 digest of a Keylime digest map. Digests
// of the same event in other algorithms may come along; Vigil compares the
// SHA-256 one, the bank it judges.
func keylimeDigest(where string, raw json.RawMessage) (string, error) {
	var m map[string]string
	if err := decodeStrict(raw, &m); err != nil || m == nil {
		return "", keylimeError("%s: want a digest, {\"sha256\": \"0x...\"}", where)
	}
	for alg := range m {
		if !slices.Contains(keylimeAlgs, alg) {
			return "", keylimeError("%s: unknown digest algorithm %q", where, alg)
		}
	}
	v, ok := m["sha256"]
	if !ok {
		return "", keylimeError("%s has no sha256 digest (Vigil checks the SHA-256 bank)", where)
	}
	return unhex(where, v)
}

type keylimeSig struct {
	SignatureOwner *string `json:"SignatureOwner"`
	SignatureData  *string `json:"SignatureData"`
}

type keylimePlatform struct {
	SCRTM            json.RawMessage   `json:"scrtm"`
	PlatformFirmware []json.RawMessage `json:"platform_firmware"`
}

// ParseKeylime reads a Keylime measured-boot reference state, and only
// that, into a version 2 policy (see keylimeFields). Parse reads it too,
// telling it from Vigil's format.
func ParseKeylime(b []byte) (*Policy, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, keylimeError("%v", err)
	}
	if _, ok := probe["kind"]; ok {
		return nil, keylimeError("this is a Vigil boot policy (it has \"kind\"), not a Keylime reference state")
	}
	return fromKeylime(b)
}

// fromKeylime converts a Keylime reference state (see keylimeFields).
func fromKeylime(b []byte) (*Policy, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, keylimeError("%v", err)
	}
	var unknown, lacking []string
	for f := range top {
		if !slices.Contains(keylimeFields, f) {
			unknown = append(unknown, f)
		}
	}
	for _, f := range keylimeRequired {
		if _, ok := top[f]; !ok {
			lacking = append(lacking, f)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		return nil, keylimeError("unknown field(s) %s (Vigil reads %s)", strings.Join(unknown, ", "), strings.Join(keylimeFields, ", "))
	}
	if len(lacking) > 0 {
		return nil, keylimeError("lacks %s (Keylime's example policy requires it)", strings.Join(lacking, ", "))
	}

	hasSB := true
	if raw, ok := top["has_secureboot"]; ok {
		if err := decodeStrict(raw, &hasSB); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			return nil, keylimeError("has_secureboot: want true or false")
		}
	}
	p := &Policy{Kind: Kind, Version: 2, Bank: "sha256", SecureBoot: "enabled",
		SCRTM: []string{}, FirmwareBlobs: []string{}, PostCodes: []string{}, BootDigests: []string{}, MOK: []string{}, MOKX: []string{}, Kernels: []Kernel{},
		keylime: true}
	if !hasSB {
		p.SecureBoot = "disabled"
	}

	platforms, err := list[keylimePlatform]("scrtm_and_bios", top["scrtm_and_bios"])
	if err != nil {
		return nil, err
	}
	if len(platforms) == 0 {
		return nil, keylimeError("scrtm_and_bios is empty: Keylime would admit no firmware")
	}
	for i, s := range platforms {
		if s.SCRTM == nil || s.PlatformFirmware == nil {
			return nil, keylimeError("scrtm_and_bios[%d] lacks scrtm or platform_firmware", i)
		}
		d, err := keylimeDigest(fmt.Sprintf("scrtm_and_bios[%d].scrtm", i), s.SCRTM)
		if err != nil {
			return nil, err
		}
		p.SCRTM = append(p.SCRTM, d)
		for j, f := range s.PlatformFirmware {
			d, err := keylimeDigest(fmt.Sprintf("scrtm_and_bios[%d].platform_firmware[%d]", i, j), f)
			if err != nil {
				return nil, err
			}
			p.FirmwareBlobs = append(p.FirmwareBlobs, d)
		}
	}
	p.SCRTM, p.FirmwareBlobs = uniq(p.SCRTM), uniq(p.FirmwareBlobs)

	if _, ok := top["vendor_db"]; !ok {
		top["vendor_db"] = json.RawMessage("[]")
	}
	for _, db := range []struct {
		name string
		out  *[]string
	}{{"pk", &p.PK}, {"kek", &p.KEK}, {"db", &p.DB}, {"dbx", &p.DBX}, {"vendor_db", &p.VendorDB}} {
		sigs, err := list[keylimeSig](db.name, top[db.name])
		if err != nil {
			return nil, err
		}
		*db.out = []string{}
		for i, s := range sigs {
			where := fmt.Sprintf("%s[%d]", db.name, i)
			if s.SignatureOwner == nil || s.SignatureData == nil {
				return nil, keylimeError("%s lacks SignatureOwner or SignatureData", where)
			}
			id, err := sigID(where, *s.SignatureData)
			if err != nil {
				return nil, err
			}
			*db.out = append(*db.out, id)
		}
		*db.out = uniq(*db.out)
		// Keylime accepts anything for a database a reference state
		// without Secure Boot leaves empty.
		if !hasSB && len(sigs) == 0 {
			p.Skip = append(p.Skip, db.name)
		}
	}

	for _, m := range []struct {
		name string
		out  *[]string
	}{{"mokdig", &p.MOK}, {"mokxdig", &p.MOKX}} {
		digests, err := list[json.RawMessage](m.name, top[m.name])
		if err != nil {
			return nil, err
		}
		for i, raw := range digests {
			d, err := keylimeDigest(fmt.Sprintf("%s[%d]", m.name, i), raw)
			if err != nil {
				return nil, err
			}
			*m.out = uniq(append(*m.out, d))
		}
	}

	kernels, err := list[map[string]json.RawMessage]("kernels", top["kernels"])
	if err != nil {
		return nil, err
	}
	if len(kernels) == 0 {
		return nil, keylimeError("kernels is empty: Keylime would admit no kernel")
	}
	for i, kern := range kernels {
		k, err := keylimeKernel(i, kern, hasSB)
		if err != nil {
			return nil, err
		}
		p.Kernels = append(p.Kernels, k)
	}
	p.Skip = append(p.Skip, CheckBootDigests, CheckKernelCmdline, CheckPostCodes)
	if err := p.init(); err != nil {
		return nil, keylimeError("%v", strings.TrimPrefix(err.Error(), "boot policy: "))
	}
	return p, nil
}

// keylimeKernel converts one kernels entry. With Secure Boot, Keylime's
// example policy requires shim, GRUB and kernel Authenticode digests, the
// initrd digest and the command line; without, the kernel file's digest
// (vmlinuz_plain_sha256) in place of its Authenticode digest.
func keylimeKernel(i int, kern map[string]json.RawMessage, hasSB bool) (Kernel, error) {
	where := func(f string) string { return fmt.Sprintf("kernels[%d].%s", i, f) }
	if kern == nil {
		return Kernel{}, keylimeError("kernels[%d] is null, want an object", i)
	}
	var unknown []string
	for f := range kern {
		known := false
		for _, kf := range keylimeKernelFields {
			known = known || f == kf
		}
		if !known {
			unknown = append(unknown, f)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Kernel{}, keylimeError("kernels[%d]: unknown field(s) %s", i, strings.Join(unknown, ", "))
	}
	required := []string{"shim_authcode_sha256", "grub_authcode_sha256", "kernel_authcode_sha256", "initrd_plain_sha256", "kernel_cmdline"}
	if !hasSB {
		required = []string{"shim_authcode_sha256", "grub_authcode_sha256", "vmlinuz_plain_sha256", "initrd_plain_sha256", "kernel_cmdline"}
		if _, ok := kern["kernel_authcode_sha256"]; ok {
			return Kernel{}, keylimeError("%s: with has_secureboot false GRUB does not have shim verify the kernel, so no kernel Authenticode digest is measured (Keylime ignores this field there); give vmlinuz_plain_sha256 instead, or set has_secureboot true", where("kernel_authcode_sha256"))
		}
	}
	for _, f := range required {
		if _, ok := kern[f]; !ok {
			sb := "true"
			if !hasSB {
				sb = "false"
			}
			return Kernel{}, keylimeError("kernels[%d] lacks %s (Keylime's example policy requires it with has_secureboot %s)", i, f, sb)
		}
	}
	str := func(f string) (string, error) {
		var s *string
		if err := decodeStrict(kern[f], &s); err != nil || s == nil {
			return "", keylimeError("%s: want a string", where(f))
		}
		return *s, nil
	}
	var k Kernel
	for _, d := range []struct {
		field string
		out   *string
	}{
		{"shim_authcode_sha256", &k.Shim}, {"grub_authcode_sha256", &k.Grub}, {"kernel_authcode_sha256", &k.Kernel},
		{"initrd_plain_sha256", &k.Initrd}, {"vmlinuz_plain_sha256", &k.Vmlinuz},
	} {
		if _, ok := kern[d.field]; !ok {
			continue
		}
		s, err := str(d.field)
		if err != nil {
			return Kernel{}, err
		}
		if *d.out, err = unhex(where(d.field), s); err != nil {
			return Kernel{}, err
		}
		if *d.out == "" {
			return Kernel{}, keylimeError("%s is empty", where(d.field))
		}
	}
	c, err := str("kernel_cmdline")
	if err != nil {
		return Kernel{}, err
	}
	if _, err := compileCmdline(c); err != nil {
		return Kernel{}, keylimeError("%s: %v (Vigil reads RE2 regular expressions; Python-only syntax such as lookarounds or backreferences is refused)", where("kernel_cmdline"), err)
	}
	k.Cmdline = &c
	return k, nil
}

func unhex(where, v string) (string, error) {
	s := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"))
	if _, err := hex.DecodeString(s); err != nil {
		return "", keylimeError("%s: %q is not hex", where, v)
	}
	return s, nil
}

// sigID names a signature-list entry the way BootState does: a
// certificate by the SHA-256 of its DER, anything else (a hash) by itself.
func sigID(where, data string) (string, error) {
	s, err := unhex(where, data)
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", keylimeError("%s: SignatureData is empty", where)
	}
	raw, _ := hex.DecodeString(s)
	if c, err := x509.ParseCertificate(raw); err == nil {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:]), nil
	}
	return s, nil
}
