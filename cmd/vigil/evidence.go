package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/urfave/cli/v2"

	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/pcrpolicy"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// quoteCommand is `vigil quote verify`: the verifier's whole evidence check
// (package verdict, the pipeline the verifier runs), offline, on files.
func quoteCommand() *cli.Command {
	return &cli.Command{
		Name:  "quote",
		Usage: "check TPM quotes offline",
		Subcommands: []*cli.Command{{
			Name:  "verify",
			Usage: "verify a quote, its PCR values, boot log and IMA list; print a report",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "ak", Usage: "attestation key `FILE`: TPM2B_PUBLIC, TPMT_PUBLIC or PEM"},
				&cli.StringFlag{Name: "quote", Usage: "quote `FILE`: marshalled TPMS_ATTEST (or TPM2B_ATTEST)"},
				&cli.StringFlag{Name: "sig", Usage: "signature `FILE`: marshalled TPMT_SIGNATURE"},
				&cli.StringFlag{Name: "nonce", Usage: "expected qualifying data, `HEX` (without it the nonce is not checked)"},
				&cli.StringFlag{Name: "pcrs", Usage: "PCR values `FILE`, Vigil's JSON {\"sha256\": {\"0\": \"hex\", ...}}"},
				&cli.StringFlag{Name: "previous-quote", Usage: "an earlier accepted quote `FILE` of the same TPM: check clock and counters moved forward"},
				&cli.StringFlag{Name: "boot-log", Usage: "UEFI event log `FILE` (binary_bios_measurements, raw or base64)"},
				&cli.StringFlag{Name: "boot-policy", Usage: "measured-boot policy `FILE` (Vigil's, or Keylime's mb_refstate)"},
				&cli.StringFlag{Name: "ima-log", Usage: "IMA measurement list `FILE` (ASCII or binary); alone, it is checked against the quoted PCR 10 with no policy"},
				&cli.StringFlag{Name: "runtime-policy", Usage: "Keylime runtime policy `FILE` for --ima-log (JSON, or a DSSE envelope verified against --policy-key)"},
				&cli.StringFlag{Name: "pcr-policy", Usage: "PCR policy `FILE` the --pcrs values must meet (Keylime's tpm_policy or Vigil's PCR format)"},
				policyKeyFlag(),
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			},
			Action: quoteVerify,
		}},
	}
}

// quoteReport is the report `vigil quote verify` prints.
type quoteReport struct {
	OK              bool                  `json:"ok"`
	Failures        []*evidence.Failure   `json:"failures"`
	Warnings        []string              `json:"warnings,omitempty"`
	Clock           *evidence.ClockInfo   `json:"clock,omitempty"`
	ClockChange     *evidence.ClockChange `json:"clock_change,omitempty"`
	FirmwareVersion string                `json:"firmware_version,omitempty"`
	PCRs            evidence.PCRValues    `json:"pcrs_quoted,omitempty"`
	PCRsReplayed    evidence.PCRValues    `json:"pcrs_replayed,omitempty"`
	Boot            *bootlog.BootState    `json:"boot,omitempty"`
	IMA             *ima.Result           `json:"ima,omitempty"`
	// IMAPolicyApplied is set when an IMA list was given: false says it
	// was only replayed against the quoted PCR 10.
	IMAPolicyApplied *bool `json:"ima_policy_applied,omitempty"`
}

func readInput(flag, name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, badInputf("--%s: %v", flag, err)
	}
	return b, nil
}

func quoteVerify(c *cli.Context) error {
	if err := required(c, "ak", "quote", "sig"); err != nil {
		return err
	}
	for _, dep := range [][2]string{{"boot-log", "pcrs"}, {"boot-policy", "boot-log"}, {"ima-log", "pcrs"}, {"runtime-policy", "ima-log"}, {"pcr-policy", "pcrs"}} {
		if c.String(dep[0]) != "" && c.String(dep[1]) == "" {
			return badInputf("--%s needs --%s", dep[0], dep[1])
		}
	}
	akBytes, err := readInput("ak", c.String("ak"))
	if err != nil {
		return err
	}
	ak, err := evidence.ParseAK(akBytes)
	if err != nil {
		return badInputf("--ak %s: %v", c.String("ak"), err)
	}
	attest, err := readInput("quote", c.String("quote"))
	if err != nil {
		return err
	}
	sig, err := readInput("sig", c.String("sig"))
	if err != nil {
		return err
	}
	q, err := evidence.ParseQuote(attest, sig)
	if err != nil {
		return badInputf("--quote/--sig: %v", err)
	}
	rep := &quoteReport{}
	want := evidence.Expect{}
	if n := c.String("nonce"); n != "" {
		if want.Nonce, err = hex.DecodeString(strings.TrimPrefix(n, "0x")); err != nil {
			return badInputf("--nonce: %v", err)
		}
	} else {
		want.SkipNonce = true
		rep.Warnings = append(rep.Warnings, "no --nonce: freshness not checked")
	}
	if f := c.String("pcrs"); f != "" {
		b, err := readInput("pcrs", f)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &want.PCRs); err != nil {
			return badInputf("--pcrs %s: %v", f, err)
		}
	} else {
		want.SkipPCRs = true
		rep.Warnings = append(rep.Warnings, "no --pcrs: PCR digest not checked")
	}
	in := verdict.Input{AK: ak, Quote: q, Expect: want, MaxIMAFailures: 1000}
	if f := c.String("previous-quote"); f != "" {
		b, err := readInput("previous-quote", f)
		if err != nil {
			return err
		}
		// Only its clock is used: it is a quote the caller accepted before.
		prev, err := evidence.ParseQuote(b, []byte{0, 0x10})
		if err != nil {
			return badInputf("--previous-quote %s: %v", f, err)
		}
		p := prev.Attest.ClockInfo
		in.Previous = &evidence.ClockInfo{Clock: p.Clock, ResetCount: p.ResetCount, RestartCount: p.RestartCount, Safe: bool(p.Safe)}
	}
	// Inputs for the later stages are read before judging, so bad input is
	// exit 2 whatever the quote says.
	if f := c.String("pcr-policy"); f != "" {
		if in.PCRPolicy, err = readPCRPolicy(c, f); err != nil {
			return err
		}
	}
	if f := c.String("boot-log"); f != "" {
		if in.BootLog, err = readInput("boot-log", f); err != nil {
			return err
		}
		if _, err = bootlog.Parse(in.BootLog); err != nil {
			return badInputf("--boot-log %s: %v", f, err)
		}
	}
	if f := c.String("boot-policy"); f != "" {
		b, err := readInput("boot-policy", f)
		if err != nil {
			return err
		}
		if in.BootPolicy, err = readBootPolicy(c, "--boot-policy", f, b); err != nil {
			return err
		}
	}
	if f := c.String("ima-log"); f != "" {
		if in.IMALog, err = readInput("ima-log", f); err != nil {
			return err
		}
		applied := c.String("runtime-policy") != ""
		rep.IMAPolicyApplied = &applied
		if !applied {
			rep.Warnings = append(rep.Warnings, "no --runtime-policy: the IMA list is only checked against the quoted PCR 10, no policy applied")
		}
	}
	if pf := c.String("runtime-policy"); pf != "" {
		b, err := readInput("runtime-policy", pf)
		if err != nil {
			return err
		}
		if in.RuntimePolicy, err = readRuntimePolicy(c, "--runtime-policy", pf, b); err != nil {
			return err
		}
	}

	j := verdict.Judge(in)
	for _, f := range j.Failures {
		// An IMA list is read only once the quote verified; one that does
		// not parse is still bad input, not a verdict.
		if f.Reason == verdict.CheckIMAMalformed {
			return badInputf("--ima-log %s: %s", c.String("ima-log"), f.Detail)
		}
	}
	rep.Failures = j.Failures
	if res := j.Quote; res != nil {
		rep.Clock = &res.Clock
		rep.FirmwareVersion = fmt.Sprintf("%#016x", res.FirmwareVersion)
		rep.PCRs = res.PCRs
	}
	rep.ClockChange = j.ClockChange
	if j.Boot != nil {
		rep.PCRsReplayed, rep.Boot = j.Boot.Replayed, j.Boot.State
	}
	rep.IMA = j.IMA
	rep.OK = j.Verdict == nil
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else {
		printQuoteReport(c, rep)
	}
	if !rep.OK {
		return silentFailure
	}
	return nil
}

// readPCRPolicy reads --pcr-policy, plain or DSSE-signed (then verified
// against --policy-key), as the verifier's upload check does.
func readPCRPolicy(c *cli.Context, file string) (*pcrpolicy.Policy, error) {
	data, err := readInput("pcr-policy", file)
	if err != nil {
		return nil, err
	}
	if dsse.IsEnvelope(data) {
		keys, err := loadPolicyKeys(c)
		if err != nil {
			return nil, err
		}
		if data, err = dsse.Open(data, dsse.PayloadTypeKeylime, keys); err != nil {
			return nil, signedPolicyErr("--pcr-policy", file, fmt.Errorf("signed PCR policy: %w", err))
		}
	}
	pol, err := pcrpolicy.Parse(data)
	if err != nil {
		return nil, badInputf("--pcr-policy %s: %v", file, err)
	}
	return pol, nil
}

func printQuoteReport(c *cli.Context, rep *quoteReport) {
	w := c.App.Writer
	for _, warn := range rep.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
	if rep.Clock != nil {
		fmt.Fprintf(w, "clock %d ms, resetCount %d, restartCount %d, safe %v, firmware %s\n",
			rep.Clock.Clock, rep.Clock.ResetCount, rep.Clock.RestartCount, rep.Clock.Safe, rep.FirmwareVersion)
	}
	if rep.ClockChange != nil && rep.ClockChange.Reboot() {
		fmt.Fprintln(w, "reboot since the previous quote")
	}
	if rep.Boot != nil {
		fmt.Fprintf(w, "boot (%s): secure boot %v, %d boot applications, kernel cmdline %q\n",
			rep.Boot.Bank, rep.Boot.SecureBoot, len(rep.Boot.BootDigests), rep.Boot.KernelCmdline)
	}
	if rep.IMA != nil {
		fmt.Fprintf(w, "ima: %d entries, %d committed by the quote\n", rep.IMA.Entries, rep.IMA.Committed)
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "FAIL %s: %s\n", f.Reason, f.Detail)
	}
	if rep.OK {
		fmt.Fprintln(w, "OK")
	}
}

// eventlogCommand holds the offline UEFI event-log tools.
func eventlogCommand() *cli.Command {
	bank := &cli.StringFlag{Name: "bank", Usage: "PCR bank: sha1, sha256 or sha384 (default: sha256 if the log has it, else its strongest)"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	return &cli.Command{
		Name:  "eventlog",
		Usage: "inspect and replay UEFI measured-boot event logs (raw or base64, detected)",
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "print the events of one bank",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{bank, jsonFlag},
				Action:    eventlogShow,
			},
			{
				Name:      "replay",
				Usage:     "replay the log into PCR values",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{bank, jsonFlag},
				Action:    eventlogReplay,
			},
		},
	}
}

// openEventLog reads the FILE argument and picks the bank.
func openEventLog(c *cli.Context) (*bootlog.Log, tpm2.TPMAlgID, error) {
	if c.NArg() != 1 {
		return nil, 0, badInputf("want one FILE argument, got %d", c.NArg())
	}
	name := c.Args().First()
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, 0, badInput(err)
	}
	l, err := bootlog.Parse(b)
	if err != nil {
		return nil, 0, badInputf("%s: %v", name, err)
	}
	bank := l.Banks[0]
	if l.HasBank(tpm2.TPMAlgSHA256) {
		bank = tpm2.TPMAlgSHA256
	}
	if s := c.String("bank"); s != "" {
		if bank, err = evidence.ParseBank(s); err != nil {
			return nil, 0, badInputf("--bank: %v", err)
		}
		if !l.HasBank(bank) {
			var have []string
			for _, b := range l.Banks {
				have = append(have, evidence.BankName(b))
			}
			return nil, 0, badInputf("%s: the log has no %s digests (it has %s)", name, s, strings.Join(have, ", "))
		}
	}
	return l, bank, nil
}

func eventlogShow(c *cli.Context) error {
	l, bank, err := openEventLog(c)
	if err != nil {
		return err
	}
	events, err := l.Events(bank)
	if err != nil {
		return badInput(err)
	}
	format := "sha1"
	if l.Agile {
		format = "crypto-agile"
	}
	if c.Bool("json") {
		var banks []string
		for _, b := range l.Banks {
			banks = append(banks, evidence.BankName(b))
		}
		return printJSON(c.App.Writer, map[string]any{"format": format, "banks": banks, "bank": evidence.BankName(bank), "events": events})
	}
	w := c.App.Writer
	fmt.Fprintf(w, "%s log, showing the %s bank\n", format, evidence.BankName(bank))
	for _, e := range events {
		fmt.Fprintf(w, "%d\tPCR %d\t%s\t%s\t%s\n", e.Num, e.PCR, e.Type, e.Digest, e.Text)
	}
	return nil
}

func eventlogReplay(c *cli.Context) error {
	l, bank, err := openEventLog(c)
	if err != nil {
		return err
	}
	pcrs, err := l.Replay(bank)
	if err != nil {
		return badInputf("%s: %v", c.Args().First(), err)
	}
	events, _ := l.Events(bank)
	vals := evidence.PCRValues{bank: pcrs}
	if c.Bool("json") {
		out := map[string]string{}
		for _, i := range vals.Indices(bank) {
			out[strconv.Itoa(i)] = hex.EncodeToString(pcrs[i])
		}
		return printJSON(c.App.Writer, map[string]any{"bank": evidence.BankName(bank), "pcrs": out, "events": len(events)})
	}
	w := c.App.Writer
	for _, i := range vals.Indices(bank) {
		fmt.Fprintf(w, "%s PCR %2d: %x\n", evidence.BankName(bank), i, pcrs[i])
	}
	fmt.Fprintf(w, "%d events\n", len(events))
	return nil
}

// policyCreateBootCommand writes a measured-boot policy from a known-good
// host's event log, or from a Keylime measured-boot reference state.
func policyCreateBootCommand() *cli.Command {
	return &cli.Command{
		Name:  "boot",
		Usage: "create a measured-boot policy from a known-good host's --boot-log FILE, or convert a --keylime-refstate FILE",
		Description: "With --boot-log alone, the policy is what the known-good host booted, exactly.\n" +
			"With --keylime-refstate, Keylime's measured-boot reference state (keylime-policy create measured-boot,\n" +
			"create_mb_refstate) is converted into a Vigil policy, every field Keylime's example policy checks\n" +
			"into a check, or refused naming the field; with --boot-log too, that log (against --pcrs, or taken\n" +
			"at its word) must meet the converted policy, else exit 1 listing what fails.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "boot-log", Usage: "UEFI event log `FILE` of a known-good host (raw or base64)"},
			&cli.StringFlag{Name: "keylime-refstate", Usage: "Keylime measured-boot reference state `FILE` (JSON) to convert"},
			&cli.StringFlag{Name: "pcrs", Usage: "the host's PCR values `FILE` (Vigil's JSON): check the log against them first"},
			&cli.StringFlag{Name: "bank", Usage: "PCR bank of the policy's digests (default: sha256 if the log has it, else its strongest; a Keylime reference state is sha256)"},
			&cli.StringFlag{Name: "out", Usage: "write the policy to `FILE` instead of standard output"},
		},
		Action: policyCreateBoot,
	}
}

func policyCreateBoot(c *cli.Context) error {
	name, refName := c.String("boot-log"), c.String("keylime-refstate")
	if name == "" && refName == "" {
		return badInputf("missing required flag --boot-log or --keylime-refstate")
	}
	if c.NArg() > 0 {
		return badInputf("unexpected argument %q", c.Args().First())
	}
	var (
		b   []byte
		err error
	)
	if name != "" {
		if b, err = readInput("boot-log", name); err != nil {
			return err
		}
	}
	var opts bootpolicy.LogOptions
	if s := c.String("bank"); s != "" {
		if opts.Bank, err = evidence.ParseBank(s); err != nil {
			return badInputf("--bank: %v", err)
		}
	}
	if f := c.String("pcrs"); f != "" {
		if name == "" {
			return badInputf("--pcrs needs --boot-log")
		}
		pb, err := readInput("pcrs", f)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(pb, &opts.PCRs); err != nil {
			return badInputf("--pcrs %s: %v", f, err)
		}
	}
	var pol *bootpolicy.Policy
	if refName != "" {
		if pol, err = keylimePolicy(refName, name, b, opts); err != nil {
			return err
		}
	} else {
		pol, err = bootpolicy.FromLog(b, opts)
		if evidence.ReasonOf(err) != "" {
			return failed(fmt.Errorf("--boot-log %s: %w", name, err))
		}
		if err != nil {
			return badInputf("--boot-log %s: %v", name, err)
		}
	}
	js, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return err
	}
	return writeDocument(c, js)
}

// keylimePolicy converts a Keylime reference state and, given a
// known-good host's log, checks that the log meets it.
func keylimePolicy(refName, logName string, log []byte, opts bootpolicy.LogOptions) (*bootpolicy.Policy, error) {
	rb, err := readInput("keylime-refstate", refName)
	if err != nil {
		return nil, err
	}
	pol, err := bootpolicy.ParseKeylime(rb)
	if err != nil {
		return nil, badInputf("--keylime-refstate %s: %v", refName, err)
	}
	if opts.Bank != 0 && evidence.BankName(opts.Bank) != pol.Bank {
		return nil, badInputf("--bank %s: a Keylime reference state's digests are %s", evidence.BankName(opts.Bank), pol.Bank)
	}
	if logName == "" {
		return pol, nil
	}
	l, err := bootlog.Parse(log)
	if err != nil {
		return nil, badInputf("--boot-log %s: %v", logName, err)
	}
	quoted := opts.PCRs
	if quoted == nil {
		bank, _ := evidence.ParseBank(pol.Bank)
		if !l.HasBank(bank) {
			return nil, badInputf("--boot-log %s: the log has no %s digests", logName, pol.Bank)
		}
		if quoted, err = bootpolicy.LogPCRs(l, bank); err != nil {
			return nil, badInputf("--boot-log %s: %v", logName, err)
		}
	}
	res, f := verdict.Boot(log, quoted, pol)
	if f == nil {
		return pol, nil
	}
	lines := make([]string, 0, len(res.Failures))
	for _, x := range res.Failures {
		lines = append(lines, fmt.Sprintf("%s: %s", x.Reason, x.Detail))
	}
	return nil, failed(fmt.Errorf("--boot-log %s does not meet --keylime-refstate %s:\n  %s", logName, refName, strings.Join(lines, "\n  ")))
}
