package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/urfave/cli/v2"

	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
)

// simCommand fakes a host's measurements on a simulated TPM: the UEFI boot
// log (PCRs 0-9) and the IMA measurement list (PCR 10).
func simCommand() *cli.Command {
	tpmFlag := &cli.StringFlag{Name: "tpm", Usage: "simulated TPM `SPEC`: swtpm:HOST:PORT, sim or soft:FILE (a hardware TPM is refused)"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	return &cli.Command{
		Name:  "sim",
		Usage: "simulate a host's measured boot and IMA list on a simulated TPM",
		Subcommands: []*cli.Command{
			{
				Name:  "boot",
				Usage: "write a synthetic UEFI event log and extend its digests into PCRs 0-9",
				Flags: []cli.Flag{tpmFlag, jsonFlag,
					&cli.StringFlag{Name: "out", Usage: "write the event log (binary_bios_measurements format) to `FILE`"},
					&cli.BoolFlag{Name: "secure-boot", Value: true, Usage: "the SecureBoot variable (--secure-boot=false to boot without)"},
					&cli.StringFlag{Name: "kernel-cmdline", Value: simhost.DefaultKernelCmdline, Usage: "the command line GRUB measures (kernel path first)"},
					&cli.StringFlag{Name: "seed", Value: simhost.DefaultSeed, Usage: "derive firmware, keys and image digests from `SEED`: one seed, one log, byte for byte"},
					&cli.StringSliceFlag{Name: "mok-key", Usage: "have shim measure its Machine Owner Keys into PCR 14, with a key of common name `NAME` enrolled (repeat for more)"},
					&cli.StringSliceFlag{Name: "mok-revoked", Usage: "with shim's MOK state in PCR 14, a hash labelled `LABEL` in MokListX (repeat for more)"},
					&cli.StringFlag{Name: "kernel-build", Usage: "boot another build of the same kernel, labelled `LABEL`: the same path, other digests in PCRs 4 and 9"},
					&cli.StringFlag{Name: "initrd-build", Usage: "boot another build of the same initrd, labelled `LABEL` (other digest in PCR 9)"},
					&cli.BoolFlag{Name: "unverified-kernel", Usage: "GRUB starts the kernel without shim verifying it, as with Secure Boot off: no PCR 4 event for the kernel"},
				},
				Action: simBoot,
			},
			{
				Name:      "ima",
				Usage:     "start an IMA measurement list (--init) or append ima-ng entries for files (--measure), extending PCR 10",
				ArgsUsage: "[PATH...]",
				Flags: []cli.Flag{tpmFlag, jsonFlag,
					&cli.StringFlag{Name: "log", Usage: "the measurement list `FILE`"},
					&cli.BoolFlag{Name: "init", Usage: "write a new list holding the boot_aggregate entry (replaces FILE)"},
					&cli.BoolFlag{Name: "measure", Usage: "append one entry per PATH argument"},
					&cli.StringFlag{Name: "format", Usage: "binary or ascii (default: the list's own; binary for a new list)"},
				},
				Action: simIMA,
			},
		},
	}
}

// openSimTPM opens the TPM named by spec. A hardware TPM is refused: fake
// measurements in a real host's PCRs would make it fail attestation until
// its next reboot.
func openSimTPM(c *cli.Context) (agent.TPM, func(), error) {
	spec := c.String("tpm")
	if spec == "" {
		return nil, nil, badInputf("--tpm is required (swtpm:HOST:PORT, sim or soft:FILE)")
	}
	if strings.HasPrefix(spec, "/") {
		return nil, nil, badInputf("--tpm %s: vigil sim extends fake measurements and refuses a hardware TPM; use swtpm:HOST:PORT, sim or soft:FILE", spec)
	}
	opener, closeOpener, err := agent.OpenerFromSpec(spec)
	if err != nil {
		return nil, nil, badInput(err)
	}
	tpm, err := opener(c.Context)
	if err != nil {
		closeOpener()
		return nil, nil, failed(fmt.Errorf("open TPM %s: %w", spec, err))
	}
	return tpm, func() {
		tpm.Close()
		closeOpener()
	}, nil
}

// simErr maps what the simulated host refused as input to exit 2 and
// everything else (a TPM that fails, PCRs already extended) to exit 1.
func simErr(err error) error {
	var ie *simhost.InputError
	if errors.As(err, &ie) {
		return badInput(err)
	}
	return failed(err)
}

// hexPCRs renders PCR values as bank name → index → hex.
func hexPCRs(pcrs map[tpm2.TPMAlgID]map[int][]byte) map[string]map[string]string {
	out := make(map[string]map[string]string, len(pcrs))
	for alg, bank := range pcrs {
		name := fmt.Sprintf("alg%#04x", uint16(alg))
		switch alg {
		case tpm2.TPMAlgSHA1:
			name = "sha1"
		case tpm2.TPMAlgSHA256:
			name = "sha256"
		}
		m := make(map[string]string, len(bank))
		for i, v := range bank {
			m[strconv.Itoa(i)] = hex.EncodeToString(v)
		}
		out[name] = m
	}
	return out
}

type simBootResult struct {
	Out           string                       `json:"out"`
	Seed          string                       `json:"seed"`
	Events        int                          `json:"events"`
	SecureBoot    bool                         `json:"secure_boot"`
	KernelCmdline string                       `json:"kernel_cmdline"`
	Kernel        string                       `json:"kernel"`
	Initrd        string                       `json:"initrd"`
	PCRs          map[string]map[string]string `json:"pcrs"`
}

func simBoot(c *cli.Context) error {
	if c.NArg() > 0 {
		return badInputf("unexpected arguments %q", c.Args().Slice())
	}
	out := c.String("out")
	if out == "" {
		return badInputf("--out is required")
	}
	if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		return badInputf("--out %s: directory %s does not exist", out, filepath.Dir(out))
	}
	cfg := simhost.BootConfig{Seed: c.String("seed"), SecureBoot: c.Bool("secure-boot"), KernelCmdline: c.String("kernel-cmdline"),
		KernelBuild: c.String("kernel-build"), InitrdBuild: c.String("initrd-build"), UnverifiedKernel: c.Bool("unverified-kernel")}
	if err := cfg.Validate(); err != nil {
		return badInputf("--kernel-cmdline: %v", err)
	}
	keys, revoked := c.StringSlice("mok-key"), c.StringSlice("mok-revoked")
	if len(revoked) > 0 && len(keys) == 0 {
		return badInputf("--mok-revoked needs shim's MOK state in PCR 14: give at least one --mok-key")
	}
	for _, name := range append(append([]string(nil), keys...), revoked...) {
		if strings.TrimSpace(name) == "" || len(name) > 64 {
			return badInputf("--mok-key/--mok-revoked %q: want a name of 1 to 64 characters", name)
		}
	}
	if len(keys) > 0 {
		cfg.MOK = &simhost.MOKConfig{Keys: keys, Revoked: revoked}
	}
	l, err := simhost.NewBootLog(cfg)
	if err != nil {
		return failed(err)
	}
	tpm, done, err := openSimTPM(c)
	if err != nil {
		return err
	}
	defer done()
	// The TPM first: the log appears only once the PCRs hold it.
	pcrs, err := l.Boot(c.Context, tpm)
	if err != nil {
		return failed(err)
	}
	if err := simhost.WriteFileAtomic(out, l.Bytes()); err != nil {
		return simErr(fmt.Errorf("PCRs %s extended but the log was not written: %w", pcrList(pcrs), err))
	}
	res := simBootResult{
		Out: out, Seed: l.Config.Seed, Events: len(l.Events), SecureBoot: l.Config.SecureBoot,
		KernelCmdline: l.Config.KernelCmdline, Kernel: l.KernelPath, Initrd: l.InitrdPath, PCRs: hexPCRs(pcrs),
	}
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, res)
	}
	sb := "on"
	if !res.SecureBoot {
		sb = "off"
	}
	fmt.Fprintf(w, "booted %s (Secure Boot %s, seed %q): %d events written to %s and extended into PCRs %s\n", res.Kernel, sb, res.Seed, res.Events, out, pcrList(pcrs))
	for _, i := range measuredPCRs(pcrs) {
		fmt.Fprintf(w, "  PCR %d sha256 %s\n", i, res.PCRs["sha256"][strconv.Itoa(i)])
	}
	return nil
}

// measuredPCRs are the PCRs a boot extended, ascending.
func measuredPCRs(pcrs map[tpm2.TPMAlgID]map[int][]byte) []int {
	var out []int
	for i := range pcrs[tpm2.TPMAlgSHA256] {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// pcrList names a boot's PCRs: "0-9", or "0-9, 14" with shim's MOK state.
func pcrList(pcrs map[tpm2.TPMAlgID]map[int][]byte) string {
	var parts []string
	ps := measuredPCRs(pcrs)
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", ps[i], ps[j]))
		} else {
			parts = append(parts, strconv.Itoa(ps[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

type simIMAEntry struct {
	Path         string `json:"path"`
	FileDigest   string `json:"file_digest"`
	TemplateHash string `json:"template_hash"`
}

type simIMAResult struct {
	Log     string            `json:"log"`
	Format  string            `json:"format"`
	Entries []simIMAEntry     `json:"entries"`
	PCR10   map[string]string `json:"pcr10"`
}

func simIMA(c *cli.Context) error {
	doInit, measure, paths := c.Bool("init"), c.Bool("measure"), c.Args().Slice()
	switch {
	case !doInit && !measure:
		return badInputf("give --init, --measure PATH... or both")
	case measure && len(paths) == 0:
		return badInputf("--measure needs at least one PATH")
	case !measure && len(paths) > 0:
		return badInputf("unexpected arguments %q (with --measure they are files to measure)", paths)
	}
	logPath := c.String("log")
	if logPath == "" {
		return badInputf("--log is required")
	}
	format, err := simhost.ParseFormat(c.String("format"))
	if err != nil {
		return badInputf("--format: %v", err)
	}
	// Hash every file before touching the TPM or the list, so a missing
	// one changes nothing.
	var entries []simhost.IMAEntry
	for _, p := range paths {
		e, err := simhost.MeasureFile(p)
		if err != nil {
			return simErr(err)
		}
		entries = append(entries, e)
	}
	if !doInit {
		if _, err := os.Stat(logPath); err != nil {
			return badInputf("--log %s: %v (create the list with --init)", logPath, errors.Unwrap(err))
		}
	}
	tpm, done, err := openSimTPM(c)
	if err != nil {
		return err
	}
	defer done()

	list := simhost.IMALog{Path: logPath, Format: format}
	var written []simhost.IMAEntry
	if doInit {
		agg, err := list.Init(c.Context, tpm)
		if err != nil {
			return simErr(err)
		}
		written = append(written, agg)
	}
	if measure {
		if err := list.Append(c.Context, tpm, entries...); err != nil {
			return simErr(err)
		}
		written = append(written, entries...)
	}
	pcrs, err := simhost.ReadPCRs(c.Context, tpm, simhost.IMAPCR)
	if err != nil {
		return failed(err)
	}
	res := simIMAResult{Log: logPath, Format: listFormat(logPath).String(), Entries: []simIMAEntry{}, PCR10: map[string]string{}}
	for bank, v := range hexPCRs(pcrs) {
		res.PCR10[bank] = v[strconv.Itoa(simhost.IMAPCR)]
	}
	for _, e := range written {
		res.Entries = append(res.Entries, simIMAEntry{
			Path:         e.Path,
			FileDigest:   "sha256:" + hex.EncodeToString(e.FileDigest),
			TemplateHash: hex.EncodeToString(e.Digests()[tpm2.TPMAlgSHA1]),
		})
	}
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, res)
	}
	// The entries as ascii_runtime_measurements would print them.
	for _, e := range written {
		w.Write(e.AppendASCII(nil))
	}
	banks := make([]string, 0, len(res.PCR10))
	for b := range res.PCR10 {
		banks = append(banks, b)
	}
	sort.Strings(banks)
	for _, b := range banks {
		fmt.Fprintf(w, "PCR 10 %s %s\n", b, res.PCR10[b])
	}
	return nil
}

// listFormat reports the format of the list as written, for the report.
func listFormat(path string) simhost.Format {
	f, err := os.Open(path)
	if err != nil {
		return simhost.FormatAuto
	}
	defer f.Close()
	var head [4]byte
	n, _ := f.Read(head[:])
	format, _ := simhost.DetectFormat(head[:n])
	return format
}
