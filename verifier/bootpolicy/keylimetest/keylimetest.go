// Package keylimetest writes Keylime measured-boot reference states from
// UEFI event logs, the way Keylime's generator (keylime-policy create
// measured-boot, keylime/policy/create_mb_policy.py) does, for tests that
// check what Vigil makes of such reference states. It reads the log with
// go-eventlog's parser alone, not with Vigil's bootlog, so that a test
// does not check Vigil against itself; like Keylime's generator it
// verifies nothing.
package keylimetest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// RefState is the reference state Keylime's generator writes for a log:
// has_secureboot from the SecureBoot variable, scrtm_and_bios, pk, kek,
// db, dbx (the signature lists with their owners), vendor_db, mokdig,
// mokxdig and one kernels entry (shim, GRUB and, with Secure Boot, kernel
// Authenticode digests from PCR 4 leaving out applications loaded from a
// firmware volume; the first initrd and, without Secure Boot, the first
// vmlinuz file digest from PCR 9; the kernel command line from PCR 8,
// escaped as Python's re.escape does). Digests are "0x"-prefixed SHA-256.
func RefState(log []byte) (map[string]any, error) {
	el, err := tcg.ParseEventLog(log, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, err
	}
	events := el.Events(register.HashSHA256)
	digest := func(e tcg.Event) map[string]string {
		return map[string]string{"sha256": "0x" + hex.EncodeToString(e.Digest)}
	}
	text := func(e tcg.Event) string { return strings.TrimRight(string(e.Data), "\x00") }

	secureBoot := false
	platform := map[string]any{"platform_firmware": []map[string]string{}}
	keys := map[string][]map[string]string{"pk": {}, "kek": {}, "db": {}, "dbx": {}}
	vendorDB := []map[string]string{}
	mokdig, mokxdig := []map[string]string{}, []map[string]string{}
	var apps []string
	for _, e := range events {
		switch e.Type {
		case tcg.SCRTMVersion:
			if _, ok := platform["scrtm"]; !ok {
				platform["scrtm"] = digest(e)
			}
		case tcg.EFIPlatformFirmwareBlob, tcg.EFIPlatformFirmwareBlob2:
			platform["platform_firmware"] = append(platform["platform_firmware"].([]map[string]string), digest(e))
		case tcg.EFIVariableDriverConfig:
			v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
			if err != nil {
				continue
			}
			name := v.VarName()
			if name == "SecureBoot" {
				secureBoot = len(v.VariableData) == 1 && v.VariableData[0] == 1
				continue
			}
			if _, ok := keys[strings.ToLower(name)]; ok {
				sigs, err := signatureLists(v.VariableData)
				if err != nil {
					return nil, fmt.Errorf("event %d (%s): %v", e.Num(), name, err)
				}
				keys[strings.ToLower(name)] = sigs
			}
		case tcg.EFIVariableAuthority:
			v, err := tcg.ParseUEFIVariableData(bytes.NewReader(e.Data))
			if err != nil || v.VarName() != "vendor_db" || len(v.VariableData) < 16 {
				continue
			}
			vendorDB = append(vendorDB, map[string]string{
				"SignatureOwner": guid(v.VariableData[:16]), "SignatureData": "0x" + hex.EncodeToString(v.VariableData[16:]),
			})
		case tcg.Ipl:
			switch text(e) {
			case "MokList":
				mokdig = append(mokdig, digest(e))
			case "MokListX":
				mokxdig = append(mokxdig, digest(e))
			}
		case tcg.EFIBootServicesApplication:
			if !firmwareVolume(e.Data) {
				apps = append(apps, "0x"+hex.EncodeToString(e.Digest))
			}
		}
	}

	kernel := map[string]string{}
	if secureBoot {
		if len(apps) != 3 && len(apps) != 4 {
			return nil, fmt.Errorf("expected 3 UEFI applications (shim, GRUB, Linux), got %d", len(apps))
		}
		kernel["kernel_authcode_sha256"] = apps[2]
	} else if len(apps) != 2 {
		return nil, fmt.Errorf("expected 2 UEFI applications (shim, GRUB), got %d", len(apps))
	}
	kernel["shim_authcode_sha256"], kernel["grub_authcode_sha256"] = apps[0], apps[1]
	first := func(pcr int, match func(string) bool) (tcg.Event, bool) {
		for _, e := range events {
			if e.Type == tcg.Ipl && e.Index == pcr && match(text(e)) {
				return e, true
			}
		}
		return tcg.Event{}, false
	}
	if e, ok := first(9, func(s string) bool { return strings.Contains(s, "initrd") || strings.Contains(s, "initramfs") }); ok {
		kernel["initrd_plain_sha256"] = digest(e)["sha256"]
	}
	if !secureBoot {
		if e, ok := first(9, func(s string) bool { return strings.Contains(s, "vmlinuz") }); ok {
			kernel["vmlinuz_plain_sha256"] = digest(e)["sha256"]
		}
	}
	if e, ok := first(8, func(s string) bool { return strings.Contains(s, "kernel_cmdline") }); ok {
		kernel["kernel_cmdline"] = PyReEscape(strings.TrimPrefix(text(e), "kernel_cmdline: "))
	}
	out := map[string]any{
		"has_secureboot": secureBoot,
		"scrtm_and_bios": []map[string]any{platform},
		"vendor_db":      vendorDB,
		"mokdig":         mokdig,
		"mokxdig":        mokxdig,
		"kernels":        []map[string]string{kernel},
	}
	for k, v := range keys {
		out[k] = v
	}
	return out, nil
}

// signatureLists reads EFI_SIGNATURE_LISTs into Keylime's signature
// entries: the owner GUID and the data (a DER certificate or a hash).
func signatureLists(b []byte) ([]map[string]string, error) {
	out := []map[string]string{}
	for len(b) > 0 {
		if len(b) < 28 {
			return nil, errors.New("truncated EFI_SIGNATURE_LIST header")
		}
		size := binary.LittleEndian.Uint32(b[16:])
		header := binary.LittleEndian.Uint32(b[20:])
		sigSize := binary.LittleEndian.Uint32(b[24:])
		if uint64(size) > uint64(len(b)) || uint64(size) < 28+uint64(header) || sigSize < 16 || (size-28-header)%sigSize != 0 {
			return nil, errors.New("malformed EFI_SIGNATURE_LIST")
		}
		for body := b[28+header : size]; len(body) > 0; body = body[sigSize:] {
			out = append(out, map[string]string{
				"SignatureOwner": guid(body[:16]), "SignatureData": "0x" + hex.EncodeToString(body[16:sigSize]),
			})
		}
		b = b[size:]
	}
	return out, nil
}

// guid formats an EFI_GUID in its registry form.
func guid(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

// firmwareVolume tells an image loaded from a firmware volume, which
// Keylime's generator leaves out ("FvVol(...)/FvFile(...)" device paths).
func firmwareVolume(data []byte) bool {
	img, err := tcg.ParseEFIImageLoad(bytes.NewReader(data))
	if err != nil {
		return false
	}
	path, err := img.DevicePath()
	if err != nil {
		return false
	}
	for _, n := range path {
		if n.Type == tcg.MediaDevice && (n.Subtype == 6 || n.Subtype == 7) {
			return true
		}
	}
	return false
}

// PyReEscape escapes s as Python 3.7's re.escape does, which is how
// Keylime's generator writes a kernel command line as a pattern.
func PyReEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("()[]{}?*+-|^$\\.&~# \t\n\r\v\f", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
