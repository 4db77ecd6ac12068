package simhost

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/go-tpm/tpm2"
)

// DefaultSeed is the seed of a simulated host when none is given.
const DefaultSeed = "vigil-sim"

// DefaultKernelCmdline is what GRUB measures as the kernel command line
// when none is given: the kernel's path, then its arguments.
const DefaultKernelCmdline = "/boot/vmlinuz-6.12.0-vigil-sim root=/dev/mapper/sim-root ro quiet ima_policy=tcb ima_template=ima-ng"

// maxCmdline is the x86 kernel's COMMAND_LINE_SIZE.
const maxCmdline = 2048

// bootPCRs are the PCRs the simulated boot measures into.
var bootPCRs = [...]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// BootConfig describes the simulated machine and what it boots.
type BootConfig struct {
	// Seed determines every byte of the log: firmware, keys, certificates,
	// image digests. Empty means DefaultSeed.
	Seed string
	// SecureBoot is the SecureBoot variable: on, the firmware and shim log
	// the certificates that verified what they loaded.
	SecureBoot bool
	// KernelCmdline is the command line GRUB passes to the kernel and
	// measures ("kernel_cmdline: ..."). When it starts with an absolute
	// path, that is the kernel GRUB loads. Empty means
	// DefaultKernelCmdline.
	KernelCmdline string
	// MOK, when set, has shim measure its Machine Owner Key state into
	// PCR 14 as shim 15 does. Nil leaves PCR 14 alone, as the simulated
	// boot always did.
	MOK *MOKConfig
	// KernelBuild and InitrdBuild, when set, make the kernel and the
	// initrd other builds of the same files: the same paths with other
	// content, so other digests in PCR 4 and PCR 9.
	KernelBuild, InitrdBuild string
	// UnverifiedKernel has GRUB start the kernel without asking shim to
	// verify it, as GRUB does with Secure Boot off: no PCR 4 event for the
	// kernel. (Without it the kernel is measured into PCR 4 whatever
	// SecureBoot says, as the simulated boot always did.)
	UnverifiedKernel bool
}

// MOKConfig is shim's Machine Owner Key state. Shim measures each of its
// variables into PCR 14 as an EV_IPL event whose data is the variable's
// name and whose digest is of its content: MokList (the keys enrolled, as
// EFI_SIGNATURE_LISTs of certificates), MokListX (the hashes revoked) and
// MokListTrusted (whether the kernel may trust MokList keys, one byte).
type MOKConfig struct {
	// Keys are the common names of the Machine Owner Keys enrolled: each
	// a certificate derived from the seed.
	Keys []string
	// Revoked labels the SHA-256 hashes in MokListX, each derived from
	// the seed.
	Revoked []string
}

func (c BootConfig) withDefaults() BootConfig {
	if c.Seed == "" {
		c.Seed = DefaultSeed
	}
	if c.KernelCmdline == "" {
		c.KernelCmdline = DefaultKernelCmdline
	}
	return c
}

// Validate reports a configuration no GRUB would measure.
func (c BootConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.KernelCmdline) > maxCmdline:
		return fmt.Errorf("kernel command line: %d bytes, more than the kernel's %d", len(c.KernelCmdline), maxCmdline)
	case !utf8.ValidString(c.KernelCmdline):
		return fmt.Errorf("kernel command line: not UTF-8")
	case strings.ContainsAny(c.KernelCmdline, "\x00\n\r"):
		return fmt.Errorf("kernel command line: contains a NUL or line break")
	case strings.TrimSpace(c.KernelCmdline) != c.KernelCmdline:
		return fmt.Errorf("kernel command line: leading or trailing white space")
	}
	return nil
}

// BootLog is a simulated measured boot: the events a UEFI firmware, shim
// and GRUB would log, each with the digests they would extend.
type BootLog struct {
	Config BootConfig
	// Events are the measurements in log order, after the Spec ID event.
	Events []Event
	// KernelPath and InitrdPath are the files GRUB loaded.
	KernelPath, InitrdPath string
}

// NewBootLog builds the log of a boot of a machine with UEFI firmware,
// shim, GRUB and Linux, as the TCG PC Client Platform Firmware Profile and
// those programs lay it out:
//
//	PCR 0  S-CRTM version, firmware volumes, separator
//	PCR 1  BootOrder, Boot0001 (EV_EFI_VARIABLE_BOOT), separator
//	PCR 2, 3, 6  separator only
//	PCR 4  "Calling EFI Application from Boot Option", separator, shim,
//	       GRUB, the kernel (EV_EFI_BOOT_SERVICES_APPLICATION)
//	PCR 5  separator, ExitBootServices
//	PCR 7  SecureBoot, PK, KEK, db, dbx, separator, then the authorities
//	       that verified shim (a db certificate) and GRUB and the kernel
//	       (shim's vendor certificate), and shim's SbatLevel
//	PCR 8  GRUB's commands and the kernel command line (EV_IPL)
//	PCR 9  the files GRUB read: grub.cfg, kernel, initrd (EV_IPL)
//	PCR 14 with Config.MOK: shim's MokList, MokListX, MokListTrusted
//	       (EV_IPL)
//
// Data-bearing events hash their data (variables, separators, actions,
// GRUB commands); loaded images hash a stand-in for their Authenticode
// digest and files the stand-in of their content, both derived from the
// seed.
func NewBootLog(cfg BootConfig) (*BootLog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	b := &bootBuilder{seed: cfg.Seed}
	l := &BootLog{Config: cfg}
	l.KernelPath, l.InitrdPath = kernelFiles(cfg.KernelCmdline)

	// Platform firmware: the S-CRTM and the volumes it measured (PCR 0).
	ver := append(ucs2("VIGIL SIM FIRMWARE 1.0"), 0, 0)
	b.add(0, EvSCRTMVersion, ver, ver, "S-CRTM version")
	b.add(0, EvEFIPlatformFirmwareBlob, firmwareBlob(0xffc84000, 0x37c000), b.image("PEIFV"), "firmware volume PEIFV")
	b.add(0, EvEFIPlatformFirmwareBlob, firmwareBlob(0xff880000, 0x3c4000), b.image("DXEFV"), "firmware volume DXEFV")

	// Secure Boot configuration (PCR 7), measured as UEFI_VARIABLE_DATA.
	owner := guidFrom(derive(cfg.Seed, "signature-owner", 0))
	certs := map[string][]byte{}
	for _, cn := range []string{pkName, kekName, dbOSName, dbCAName, vendorName} {
		der, err := simCert(cfg.Seed, cn)
		if err != nil {
			return nil, err
		}
		certs[cn] = der
	}
	sb := []byte{0}
	if cfg.SecureBoot {
		sb[0] = 1
	}
	b.variable(7, EvEFIVariableDriverConfig, efiGlobalVariable, "SecureBoot", sb)
	b.variable(7, EvEFIVariableDriverConfig, efiGlobalVariable, "PK", x509Lists(owner, certs[pkName]))
	b.variable(7, EvEFIVariableDriverConfig, efiGlobalVariable, "KEK", x509Lists(owner, certs[kekName]))
	b.variable(7, EvEFIVariableDriverConfig, efiImageSecurityDatabase, "db", x509Lists(owner, certs[dbOSName], certs[dbCAName]))
	var revoked [][]byte
	for i := range uint32(3) {
		revoked = append(revoked, derive(cfg.Seed, "dbx", i))
	}
	b.variable(7, EvEFIVariableDriverConfig, efiImageSecurityDatabase, "dbx", signatureList(efiCertSHA256, owner, revoked...))
	b.separator(7)

	// Boot manager configuration (PCR 1). EDK2 hashes only the variable's
	// data for EV_EFI_VARIABLE_BOOT, and logs the whole structure.
	esp := guidFrom(derive(cfg.Seed, "esp-partition", 0))
	onESP := func(file string) []byte {
		return devicePath(hdNode(1, 2048, 1048576, esp), fileNode(file))
	}
	bootOrder := []byte{0x01, 0x00}
	b.add(1, EvEFIVariableBoot, uefiVariableData(efiGlobalVariable, "BootOrder", bootOrder), bootOrder, "BootOrder")
	opt := loadOption("vigil", onESP(`\EFI\vigil\shimx64.efi`))
	b.add(1, EvEFIVariableBoot, uefiVariableData(efiGlobalVariable, "Boot0001", opt), opt, "Boot0001")

	// ReadyToBoot: the boot manager starts Boot0001 and the pre-OS
	// environment ends (separators on PCRs 0-6; PCR 7's came earlier, so
	// that authorities land after it).
	b.action(4, "Calling EFI Application from Boot Option")
	for pcr := range 7 {
		b.separator(pcr)
	}

	// Firmware verifies and starts shim.
	if cfg.SecureBoot {
		b.variable(7, EvEFIVariableAuthority, efiImageSecurityDatabase, "db", signatureData(owner, certs[dbCAName]))
	}
	b.application("shimx64.efi", 0x7dc2b018, onESP(`\EFI\vigil\shimx64.efi`))
	if m := cfg.MOK; m != nil {
		var keys [][]byte
		for _, cn := range m.Keys {
			der, err := simCert(cfg.Seed, cn)
			if err != nil {
				return nil, err
			}
			keys = append(keys, der)
		}
		var revoked [][]byte
		for _, r := range m.Revoked {
			revoked = append(revoked, derive(cfg.Seed, "mokx:"+r, 0))
		}
		b.mok(MokList, x509Lists(owner, keys...))
		b.mok(MokListX, signatureList(efiCertSHA256, owner, revoked...))
	}
	b.variable(7, EvEFIVariableAuthority, shimLockGUID, "SbatLevel", []byte("sbat,1,2024010900\nshim,4\ngrub,4\ngrub.vigil,1\n"))
	if cfg.MOK != nil {
		b.mok(MokListTrusted, []byte{1})
	}

	// shim verifies GRUB with its built-in vendor certificate and logs that
	// certificate raw, without an EFI_SIGNATURE_DATA owner, as shim does.
	if cfg.SecureBoot {
		b.variable(7, EvEFIVariableAuthority, shimLockGUID, "Shim", certs[vendorName])
	}
	b.application("grubx64.efi", 0x7d35d018, onESP(`\EFI\vigil\grubx64.efi`))

	// GRUB reads its configuration (PCR 9) and measures each command it
	// runs (PCR 8) and each file it loads (PCR 9).
	version := strings.TrimPrefix(path.Base(l.KernelPath), "vmlinuz-")
	linuxCmd := "linux " + cfg.KernelCmdline
	if !strings.HasPrefix(cfg.KernelCmdline, "/") {
		linuxCmd = "linux " + l.KernelPath + " " + cfg.KernelCmdline
	}
	entry := []string{
		"insmod part_gpt",
		"insmod ext2",
		"set root=hd0,gpt2",
		"echo Loading Linux " + version + " ...",
		linuxCmd,
		"echo Loading initial ramdisk ...",
		"initrd " + l.InitrdPath,
	}
	grubCfg := "set timeout=0\nset default=0\nmenuentry 'Vigil simulated Linux' {\n\t" + strings.Join(entry, "\n\t") + "\n}\n"
	b.file("(hd0,gpt2)/boot/grub/grub.cfg", []byte(grubCfg))
	b.grub("grub_cmd: ", "set timeout=0")
	b.grub("grub_cmd: ", "set default=0")
	b.grub("grub_cmd: ", "setparams Vigil simulated Linux")
	kernel := b.image(build("kernel "+l.KernelPath, cfg.KernelBuild))
	for _, cmd := range entry {
		b.grub("grub_cmd: ", cmd)
		switch cmd {
		case linuxCmd:
			// The file digest covers the whole signed image; the PCR 4
			// digest below stands for its Authenticode hash, which
			// leaves the signature out.
			b.file("(hd0,gpt2)"+l.KernelPath, append(bytes.Clone(kernel), "\x00signature"...))
			b.grub("kernel_cmdline: ", cfg.KernelCmdline)
		case "initrd " + l.InitrdPath:
			b.file("(hd0,gpt2)"+l.InitrdPath, b.image(build("initrd "+l.InitrdPath, cfg.InitrdBuild)))
		}
	}

	// GRUB starts the kernel through shim (PCR 4; loaded from memory, so
	// no device path), and the kernel's EFI stub exits boot services.
	if !cfg.UnverifiedKernel {
		b.add(4, EvEFIBootServicesApplication, imageLoadEvent(0x7a3bc018, uint64(len(kernel)), nil), kernel, "kernel "+l.KernelPath)
	}
	b.action(5, "Exit Boot Services Invocation")
	b.action(5, "Exit Boot Services Returned with Success")

	l.Events = b.events
	return l, nil
}

// The simulated platform's Secure Boot certificates.
const (
	pkName     = "Vigil Sim Platform Key"
	kekName    = "Vigil Sim KEK CA"
	dbOSName   = "Vigil Sim Production PCA"
	dbCAName   = "Vigil Sim UEFI CA"
	vendorName = "Vigil Sim Distribution Secure Boot CA"
)

// Names of shim's PCR 14 measurements.
const (
	MokList        = "MokList"
	MokListX       = "MokListX"
	MokListTrusted = "MokListTrusted"
)

// build names another build of an image: the same name without one.
func build(name, b string) string {
	if b == "" {
		return name
	}
	return name + " build " + b
}

// mokPCR is where shim measures its MOK state.
const mokPCR = 14

// mok logs a MOK variable as shim does: EV_IPL on PCR 14, the
// NUL-terminated name as data, the digest of the variable's content.
func (b *bootBuilder) mok(name string, content []byte) {
	b.add(mokPCR, EvIPL, []byte(name+"\x00"), content, name)
}

// kernelFiles names the kernel and initrd GRUB loads for a command line.
func kernelFiles(cmdline string) (kernel, initrd string) {
	kernel = strings.Fields(DefaultKernelCmdline)[0]
	if f := strings.Fields(cmdline); len(f) > 0 && strings.HasPrefix(f[0], "/") {
		kernel = f[0]
	}
	dir, base := path.Split(kernel)
	version := strings.TrimPrefix(base, "vmlinuz")
	version = strings.TrimPrefix(version, "-")
	if version == "" {
		return kernel, dir + "initrd.img"
	}
	return kernel, dir + "initrd.img-" + version
}

type bootBuilder struct {
	seed   string
	events []Event
}

func (b *bootBuilder) add(pcr int, typ EventType, data, measured []byte, desc string) {
	b.events = append(b.events, newEvent(pcr, typ, data, measured, desc))
}

// image is the stand-in content of a firmware volume or program.
func (b *bootBuilder) image(name string) []byte {
	var out []byte
	out = append(out, "VIGIL SIMULATED IMAGE\x00"...)
	out = append(out, name...)
	out = append(out, 0)
	return append(out, derive(b.seed, "image:"+name, 0)...)
}

func (b *bootBuilder) variable(pcr int, typ EventType, vendor guid, name string, data []byte) {
	v := uefiVariableData(vendor, name, data)
	b.add(pcr, typ, v, v, name)
}

func (b *bootBuilder) separator(pcr int) {
	sep := []byte{0, 0, 0, 0}
	b.add(pcr, EvSeparator, sep, sep, "separator")
}

func (b *bootBuilder) action(pcr int, s string) {
	b.add(pcr, EvEFIAction, []byte(s), []byte(s), s)
}

func (b *bootBuilder) application(name string, addr uint64, devPath []byte) {
	img := b.image(name)
	b.add(4, EvEFIBootServicesApplication, imageLoadEvent(addr, uint64(len(img)), devPath), img, name)
}

// grub logs a command as GRUB 2.06 does: the data is the prefixed,
// NUL-terminated string, the digest is of the command alone.
func (b *bootBuilder) grub(prefix, cmd string) {
	b.add(8, EvIPL, []byte(prefix+cmd+"\x00"), []byte(cmd), prefix+cmd)
}

// file logs a file GRUB read: its NUL-terminated name, the digest of its
// content.
func (b *bootBuilder) file(name string, content []byte) {
	b.add(9, EvIPL, []byte(name+"\x00"), content, name)
}

// Bytes is the log as binary_bios_measurements holds it: the Spec ID
// event, then every event in the crypto-agile format.
func (l *BootLog) Bytes() []byte {
	out := specIDEvent()
	for _, e := range l.Events {
		out = appendEvent2(out, e)
	}
	return out
}

// measured are the PCRs the boot measures into: PCRs 0-9, and 14 when
// shim measures its MOK state.
func (l *BootLog) measured() []int {
	pcrs := bootPCRs[:]
	for _, e := range l.Events {
		if e.PCR == mokPCR {
			return append(slices.Clone(pcrs), mokPCR)
		}
	}
	return pcrs
}

// PCRs replays the log: the value each boot PCR (and PCR 14 with MOK)
// reaches, in each bank, from the all-zero reset value.
func (l *BootLog) PCRs() map[tpm2.TPMAlgID]map[int][]byte {
	out := make(map[tpm2.TPMAlgID]map[int][]byte, len(banks))
	for _, b := range banks {
		pcrs := make(map[int][]byte, len(bootPCRs)+1)
		for _, p := range l.measured() {
			pcrs[p] = make([]byte, b.Hash.Size())
		}
		for _, e := range l.Events {
			pcrs[e.PCR] = extend(b, pcrs[e.PCR], e.Digests[b.Alg])
		}
		out[b.Alg] = pcrs
	}
	return out
}

// Extend extends every event's digests into the TPM, in log order.
func (l *BootLog) Extend(ctx context.Context, t PCRExtender) error {
	for i, e := range l.Events {
		if err := t.PCRExtend(ctx, e.PCR, e.Digests); err != nil {
			return fmt.Errorf("event %d (PCR %d, %s): %w", i+1, e.PCR, e.Type, err)
		}
	}
	return nil
}

// Boot performs the simulated boot on a TPM: it checks that PCRs 0-9 (and
// 14 with MOK) are at their reset values (else ErrPCRsExtended), extends
// every event, and reads the PCRs back to confirm that the log replays to
// them. It returns the PCR values read.
func (l *BootLog) Boot(ctx context.Context, t TPM) (map[tpm2.TPMAlgID]map[int][]byte, error) {
	pcrs := l.measured()
	if err := requireReset(ctx, t, pcrs...); err != nil {
		return nil, err
	}
	if err := l.Extend(ctx, t); err != nil {
		return nil, err
	}
	got, err := ReadPCRs(ctx, t, pcrs...)
	if err != nil {
		return nil, err
	}
	want := l.PCRs()
	for _, b := range banks {
		for _, p := range pcrs {
			if !bytes.Equal(got[b.Alg][p], want[b.Alg][p]) {
				return got, fmt.Errorf("after the boot, PCR %d (%s bank) is %x but the log replays to %x: something else extended it", p, b.Name, got[b.Alg][p], want[b.Alg][p])
			}
		}
	}
	return got, nil
}
