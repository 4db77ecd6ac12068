package bootpolicy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// keylimeRefState is Keylime's measured-boot reference state (mb_refstate),
// as create_mb_refstate and `keylime-policy create measured-boot` write it.
type keylimeRefState struct {
	SCRTMAndBIOS []struct {
		SCRTM            map[string]string   `json:"scrtm"`
		PlatformFirmware []map[string]string `json:"platform_firmware"`
	} `json:"scrtm_and_bios"`
	PK      []keylimeSig        `json:"pk"`
	KEK     []keylimeSig        `json:"kek"`
	DB      []keylimeSig        `json:"db"`
	DBX     []keylimeSig        `json:"dbx"`
	MokDig  []map[string]string `json:"mokdig"`
	MokXDig []map[string]string `json:"mokxdig"`
	Kernels []map[string]string `json:"kernels"`
}

type keylimeSig struct {
	SignatureOwner string `json:"SignatureOwner"`
	SignatureData  string `json:"SignatureData"`
}

// fromKeylime converts a Keylime reference state. Keylime's digests are
// SHA-256, so the policy is in that bank. Its example policy requires
// Secure Boot, and so does the conversion. Keylime's mokdig/mokxdig and
// initrd digests have no Vigil counterpart yet and are ignored; each
// kernels entry contributes its shim, GRUB and kernel Authenticode digests
// to boot_digests and its command line (a regular expression in Keylime
// too) as an alternative.
func fromKeylime(b []byte) (*Policy, error) {
	var k keylimeRefState
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("keylime reference state: %w", err)
	}
	p := &Policy{Kind: Kind, Version: 1, Bank: "sha256", SecureBoot: "enabled",
		SCRTM: []string{}, FirmwareBlobs: []string{}, BootDigests: []string{}}
	digest := func(where string, m map[string]string) (string, error) {
		v, ok := m["sha256"]
		if !ok {
			return "", fmt.Errorf("keylime reference state: %s has no sha256 digest", where)
		}
		return unhex(where, v)
	}
	for i, s := range k.SCRTMAndBIOS {
		d, err := digest(fmt.Sprintf("scrtm_and_bios[%d].scrtm", i), s.SCRTM)
		if err != nil {
			return nil, err
		}
		p.SCRTM = append(p.SCRTM, d)
		for j, f := range s.PlatformFirmware {
			d, err := digest(fmt.Sprintf("scrtm_and_bios[%d].platform_firmware[%d]", i, j), f)
			if err != nil {
				return nil, err
			}
			p.FirmwareBlobs = append(p.FirmwareBlobs, d)
		}
	}
	var err error
	for _, db := range []struct {
		name string
		in   []keylimeSig
		out  *[]string
	}{{"pk", k.PK, &p.PK}, {"kek", k.KEK, &p.KEK}, {"db", k.DB, &p.DB}, {"dbx", k.DBX, &p.DBX}} {
		*db.out = []string{}
		for i, s := range db.in {
			id, e := sigID(fmt.Sprintf("%s[%d]", db.name, i), s.SignatureData)
			if e != nil {
				return nil, e
			}
			*db.out = append(*db.out, id)
		}
	}
	var cmdlines []string
	for i, kern := range k.Kernels {
		for _, key := range []string{"shim_authcode_sha256", "grub_authcode_sha256", "kernel_authcode_sha256"} {
			v, ok := kern[key]
			if !ok {
				continue
			}
			d, e := unhex(fmt.Sprintf("kernels[%d].%s", i, key), v)
			if e != nil {
				return nil, e
			}
			p.BootDigests = append(p.BootDigests, d)
		}
		if c, ok := kern["kernel_cmdline"]; ok {
			cmdlines = append(cmdlines, "(?:"+c+")")
		}
	}
	p.BootDigests = uniq(p.BootDigests)
	if len(cmdlines) == 0 {
		p.Skip = append(p.Skip, CheckKernelCmdline)
	}
	p.KernelCmdline = strings.Join(cmdlines, "|")
	if err = p.init(); err != nil {
		return nil, fmt.Errorf("keylime reference state: %w", err)
	}
	return p, nil
}

func unhex(where, v string) (string, error) {
	s := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"))
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("keylime reference state: %s: %q is not hex", where, v)
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
	raw, _ := hex.DecodeString(s)
	if c, err := x509.ParseCertificate(raw); err == nil {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:]), nil
	}
	return s, nil
}
