package bootpolicy

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Kernel is one boot chain a host may show: what shim, GRUB and Linux
// measured, as Keylime's "kernels" entries describe it. A field left out
// is not judged by the entry (the policy's other checks still apply); an
// entry that sets nothing is refused.
//
//   - Shim, Grub, Kernel: the Authenticode digests of the boot chain, the
//     PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION events from the boot option
//     on (bootlog.BootState.BootChain). The chain must be exactly shim,
//     GRUB (those set), then the kernel once or twice when Kernel is set
//     (shim measures the kernel when GRUB asks it to verify it, which GRUB
//     does with Secure Boot on; some GRUBs ask twice), and nothing more.
//   - Initrd, Vmlinuz: the digests of the initrd and of the kernel image
//     as files, which GRUB measures into PCR 9 (EV_IPL). GRUB then must
//     have measured at least one such file and every one must have that
//     digest; and every file it measured must be its own configuration or
//     environment (a name with /grub), a boot loader entry
//     (/loader/entries), a kernel (vmlinuz) or an initrd (initrd,
//     initramfs). File names are not measured: as in Keylime, they only
//     sort the files.
//   - Cmdline: a regular expression (RE2) the whole kernel command line
//     GRUB measured into PCR 8 must match.
type Kernel struct {
	Shim    string  `json:"shim,omitempty"`
	Grub    string  `json:"grub,omitempty"`
	Kernel  string  `json:"kernel,omitempty"`
	Initrd  string  `json:"initrd,omitempty"`
	Vmlinuz string  `json:"vmlinuz,omitempty"`
	Cmdline *string `json:"cmdline,omitempty"`

	cmdline *regexp.Regexp
}

// digests lists the entry's digest fields in the order the boot measures
// them.
func (k *Kernel) digests() []struct{ field, value string } {
	return []struct{ field, value string }{
		{"shim", k.Shim}, {"grub", k.Grub}, {"kernel", k.Kernel}, {"initrd", k.Initrd}, {"vmlinuz", k.Vmlinuz},
	}
}

func (k *Kernel) init(p *Policy, i, size int) error {
	empty := k.Cmdline == nil
	for _, d := range k.digests() {
		if d.value == "" {
			continue
		}
		empty = false
		if err := checkHex(d.value, size); err != nil {
			return fmt.Errorf("boot policy: %s: %w", p.name(fmt.Sprintf("kernels[%d].%s", i, d.field)), err)
		}
	}
	if empty {
		return fmt.Errorf("boot policy: kernels[%d] sets nothing, so it would allow any boot chain", i)
	}
	k.cmdline = nil
	if k.Cmdline != nil {
		re, err := compileCmdline(*k.Cmdline)
		if err != nil {
			return fmt.Errorf("boot policy: %s: %w", p.name(fmt.Sprintf("kernels[%d].cmdline", i)), err)
		}
		k.cmdline = re
	}
	return nil
}

// evaluateKernels passes a host whose boot matches one kernels entry, and
// otherwise lists how the closest entry (fewest differences) differs.
func (p *Policy) evaluateKernels(st *bootlog.BootState, missing func(string) bool) []*evidence.Failure {
	if len(p.Kernels) == 0 {
		return []*evidence.Failure{evidence.Fail(ReasonBootChain, "%s is empty: the policy allows no boot chain", p.name("kernels"))}
	}
	var best []*evidence.Failure
	bestAt := -1
	for i := range p.Kernels {
		fs := p.Kernels[i].mismatches(p, i, st, missing)
		if len(fs) == 0 {
			return nil
		}
		if bestAt < 0 || len(fs) < len(best) {
			best, bestAt = fs, i
		}
	}
	if len(p.Kernels) > 1 {
		for _, f := range best {
			f.Detail = fmt.Sprintf("no kernels entry matches; the closest, kernels[%d]: %s", bestAt, f.Detail)
		}
	}
	return best
}

// mismatches lists how the host differs from entry i.
func (k *Kernel) mismatches(p *Policy, i int, st *bootlog.BootState, missing func(string) bool) []*evidence.Failure {
	var out []*evidence.Failure
	fail := func(r evidence.Reason, format string, args ...any) {
		out = append(out, evidence.Fail(r, format, args...))
	}
	field := func(f string) string { return p.name(fmt.Sprintf("kernels[%d].%s", i, f)) }

	// The PCR 4 boot chain: shim, GRUB, then the kernel once or twice.
	type app struct {
		field, digest string
		reason        evidence.Reason
	}
	var want []app
	if k.Shim != "" {
		want = append(want, app{"shim", k.Shim, ReasonShim})
	}
	if k.Grub != "" {
		want = append(want, app{"grub", k.Grub, ReasonGrub})
	}
	if len(want) > 0 || k.Kernel != "" {
		chain := st.BootChain
		for j, w := range want {
			if j >= len(chain) {
				fail(ReasonBootChain, "the PCR 4 boot chain ends after %d application(s); %s expects %s next", len(chain), field(w.field), w.digest)
				break
			}
			if chain[j] != w.digest {
				fail(w.reason, "PCR 4 boot application #%d has digest %s, %s is %s", j+1, chain[j], field(w.field), w.digest)
			}
		}
		var rest []string
		if len(chain) > len(want) {
			rest = chain[len(want):]
		}
		switch {
		case len(chain) < len(want):
		case k.Kernel == "" && len(rest) > 0:
			fail(ReasonBootChain, "the PCR 4 boot chain has %d application(s) after the %d the entry lists (%s); %s names no kernel, and without Secure Boot GRUB measures none there",
				len(rest), len(want), strings.Join(rest, ", "), fmt.Sprintf("kernels[%d]", i))
		case k.Kernel != "" && len(rest) == 0:
			fail(ReasonBootChain, "the PCR 4 boot chain has no kernel after its %d application(s); %s expects %s", len(chain), field("kernel"), k.Kernel)
		case k.Kernel != "":
			for j, d := range rest {
				n := len(want) + j + 1
				if j >= 2 {
					fail(ReasonBootChain, "PCR 4 boot application #%d (%s) comes after the kernel; %s allows the kernel once or twice and nothing after it", n, d, fmt.Sprintf("kernels[%d]", i))
					break
				}
				if d != k.Kernel {
					fail(ReasonKernel, "PCR 4 boot application #%d has digest %s, %s is %s", n, d, field("kernel"), k.Kernel)
				}
			}
		}
	}

	// The files GRUB measured into PCR 9.
	if k.Initrd != "" || k.Vmlinuz != "" {
		if missing("grub") {
			fail(ReasonStateMissing, "kernels[%d]: the log has no GRUB measurements (PCR 8 and 9) to find the kernel and initrd in", i)
		} else {
			var initrds, kernels []bootlog.GrubFile
			for _, f := range st.GrubFiles {
				switch fileClass(f.Name) {
				case classInitrd:
					initrds = append(initrds, f)
				case classKernel:
					kernels = append(kernels, f)
				case classGrub, classEntry:
				default:
					fail(ReasonBootFile, "GRUB measured file %q (digest %s) into PCR 9, which is neither its configuration, a boot loader entry, a kernel nor an initrd: kernels[%d] does not allow it", f.Name, f.Digest, i)
				}
			}
			for _, c := range []struct {
				field, want, what string
				files             []bootlog.GrubFile
				reason            evidence.Reason
			}{
				{"initrd", k.Initrd, "initrd", initrds, ReasonInitrd},
				{"vmlinuz", k.Vmlinuz, "kernel", kernels, ReasonVmlinuz},
			} {
				if c.want == "" {
					continue
				}
				if len(c.files) == 0 {
					fail(c.reason, "GRUB measured no %s file into PCR 9; %s expects %s", c.what, field(c.field), c.want)
				}
				for _, f := range c.files {
					if f.Digest != c.want {
						fail(c.reason, "%s file %q measured into PCR 9 has digest %s, %s is %s", c.what, f.Name, f.Digest, field(c.field), c.want)
					}
				}
			}
		}
	}

	if k.cmdline != nil {
		switch {
		case missing("grub") || missing("kernel_cmdline"):
			fail(ReasonStateMissing, "%s: the log has no kernel command line measured by GRUB", field("cmdline"))
		case !k.cmdline.MatchString(st.KernelCmdline):
			fail(ReasonKernelCmdline, "kernel command line %q does not match %s %q", st.KernelCmdline, field("cmdline"), *k.Cmdline)
		}
	}
	return out
}

// What a file GRUB measured into PCR 9 is, by its (unmeasured) name.
const (
	classOther = iota
	classEntry
	classInitrd
	classKernel
	classGrub
)

// fileClass sorts a PCR 9 file by name, as Keylime's example policy does
// (".*/loader/entries.*", ".*/grub.*", ".*/vmlinuz.*", ".*/initrd.*",
// ".*/initramfs.*"), but judging kernels and initrds before GRUB's own
// files, and knowing the names RHEL 8's GRUB gives them.
func fileClass(name string) int {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "/loader/entries"):
		return classEntry
	case strings.Contains(n, "initrd") || strings.Contains(n, "initramfs"):
		return classInitrd
	case strings.Contains(n, "vmlinuz") || strings.Contains(n, "vmlinux") || strings.HasSuffix(n, "linuxefi kernel"):
		return classKernel
	case strings.Contains(n, "/grub"):
		return classGrub
	}
	return classOther
}

// kernelOf is the kernels entry a known-good host's state implies: its
// boot chain when it has the shape of one (shim and GRUB, then the kernel
// once or twice), and its initrd and kernel files when GRUB measured one
// of each and nothing the entry could not describe. (Its command line is
// the policy's kernel_cmdline.) False when the state gives nothing.
func kernelOf(st *bootlog.BootState) (Kernel, bool) {
	var k Kernel
	switch c := st.BootChain; {
	case len(c) == 2:
		k.Shim, k.Grub = c[0], c[1]
	case len(c) == 3, len(c) == 4 && c[2] == c[3]:
		k.Shim, k.Grub, k.Kernel = c[0], c[1], c[2]
	}
	if !slices.ContainsFunc(st.Incomplete, func(m string) bool { return strings.HasPrefix(m, "grub:") }) {
		var initrds, kernels []string
		other := false
		for _, f := range st.GrubFiles {
			switch fileClass(f.Name) {
			case classInitrd:
				initrds = uniq(append(initrds, f.Digest))
			case classKernel:
				kernels = uniq(append(kernels, f.Digest))
			case classOther:
				other = true
			}
		}
		if !other && len(initrds) <= 1 && len(kernels) <= 1 {
			if len(initrds) == 1 {
				k.Initrd = initrds[0]
			}
			if len(kernels) == 1 {
				k.Vmlinuz = kernels[0]
			}
		}
	}
	return k, k != Kernel{}
}

// evaluateMOK holds shim's PCR 14 measurements to mok and mokx: every
// MokList and MokListX measured must be allowed, one of each must be there
// when the policy lists any, and PCR 14 may hold nothing else but shim's
// MokListTrusted and MokPolicy settings and a MokSBState that keeps
// shim's verification on.
func (p *Policy) evaluateMOK(st *bootlog.BootState) []*evidence.Failure {
	checkMOK, checkMOKX := !p.skips(CheckMOK), !p.skips(CheckMOKX)
	if !checkMOK && !checkMOKX {
		return nil
	}
	var out []*evidence.Failure
	fail := func(r evidence.Reason, format string, args ...any) {
		out = append(out, evidence.Fail(r, format, args...))
	}
	if st.MOK == nil {
		var names []string
		if checkMOK {
			names = append(names, p.name(CheckMOK))
		}
		if checkMOKX {
			names = append(names, p.name(CheckMOKX))
		}
		fail(ReasonStateMissing, "%s: PCR 14 was not quoted, so shim's MOK measurements cannot be checked", strings.Join(names, ", "))
		return out
	}
	alg, _ := evidence.ParseBank(p.Bank)
	h, _ := evidence.HashOf(alg)
	hh := h.New()
	hh.Write([]byte{0})
	validationOn := hex.EncodeToString(hh.Sum(nil))
	seen := map[string]bool{}
	for _, m := range st.MOK {
		name := m.Name
		if m.Type != "" {
			name = ""
		}
		switch name {
		case bootlog.MokList, bootlog.MokListX:
			seen[name] = true
			check, allowed, field, reason := checkMOK, p.MOK, CheckMOK, ReasonMOK
			if name == bootlog.MokListX {
				check, allowed, field, reason = checkMOKX, p.MOKX, CheckMOKX, ReasonMOKX
			}
			if check && !slices.Contains(allowed, m.Digest) {
				fail(reason, "%s digest %s (PCR 14, event %d) is not allowed by %s", name, m.Digest, m.Num, p.name(field))
			}
		case bootlog.MokListTrusted, bootlog.MokPolicy:
		case bootlog.MokSBState:
			if checkMOK && m.Digest != validationOn {
				fail(ReasonMOK, "shim measured MokSBState (PCR 14, event %d) with a value other than 0: its owner turned shim's verification off", m.Num)
			}
		default:
			if checkMOK {
				what := m.Type
				if what == "" {
					what = "EV_IPL"
				}
				fail(ReasonMOK, "PCR 14 event %d (%s %q, digest %s) is not one of shim's MOK measurements", m.Num, what, printableName(m.Name), m.Digest)
			}
		}
	}
	if checkMOK && len(p.MOK) > 0 && !seen[bootlog.MokList] {
		fail(ReasonMOK, "PCR 14 has no MokList measurement; %s expects one of %s", p.name(CheckMOK), strings.Join(p.MOK, ", "))
	}
	if checkMOKX && len(p.MOKX) > 0 && !seen[bootlog.MokListX] {
		fail(ReasonMOKX, "PCR 14 has no MokListX measurement; %s expects one of %s", p.name(CheckMOKX), strings.Join(p.MOKX, ", "))
	}
	return out
}

// printableName shortens and cleans unmeasured event data for a message.
func printableName(s string) string {
	b := []byte(s)
	if len(b) > 64 {
		b = append(b[:64:64], "..."...)
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}
