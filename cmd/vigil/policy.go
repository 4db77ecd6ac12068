package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/dsse"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
)

// policyCommand groups the offline policy tools. Runtime (IMA) policy
// generation lives with the IMA commands, boot policy generation with the
// event-log commands.
func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "create, sign, compare and try out reference policies",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "write a policy to standard output (or --out FILE)",
				Subcommands: []*cli.Command{
					policyCreateRuntimeCommand(),
					policyCreateBootCommand(),
					// policy kinds are registered here, one line each
				},
			},
			policySignCommand(),
			policyDiffCommand(),
			policyCheckCommand(),
		},
	}
}

// policySignCommand is `vigil policy sign --key FILE POLICY`: a DSSE
// envelope in Keylime's format (`keylime-policy sign runtime`), which the
// verifier's --policy-key and the offline tools' --policy-key accept.
func policySignCommand() *cli.Command {
	return &cli.Command{
		Name:      "sign",
		Usage:     "sign a runtime or boot policy: write a DSSE envelope (Keylime's format) to standard output (or --out FILE)",
		ArgsUsage: "POLICY",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Usage: "private key `FILE` (PEM: PKCS #8, SEC 1 EC or PKCS #1 RSA; an EC key for Keylime to verify it too)"},
			&cli.StringFlag{Name: "out", Usage: "write the envelope to `FILE` instead of standard output"},
		},
		Action: func(c *cli.Context) error {
			data, name, err := readArgFile(c, "POLICY")
			if err != nil {
				return err
			}
			if err := required(c, "key"); err != nil {
				return err
			}
			if dsse.IsEnvelope(data) {
				return badInputf("%s: already a DSSE envelope; sign the policy inside it", name)
			}
			// Only a policy the verifier would take is signed.
			if _, rerr := ima.ParsePolicy(data); rerr != nil {
				if _, berr := bootpolicy.Parse(data); berr != nil {
					return badInputf("%s: neither a runtime policy (%v) nor a boot policy (%v)", name, rerr, berr)
				}
			}
			signer, err := dsse.LoadSigner(c.String("key"))
			if err != nil {
				return badInputf("--key: %v", err)
			}
			env, err := dsse.Sign(dsse.PayloadTypeKeylime, data, signer)
			if err != nil {
				return err
			}
			out, err := env.Marshal()
			if err != nil {
				return err
			}
			return writeDocument(c, out)
		},
	}
}

// writeDocument writes a document a command made (a policy, an envelope)
// to --out, or to standard output without it.
func writeDocument(c *cli.Context, doc []byte) error {
	doc = append(doc, '\n')
	if f := c.String("out"); f != "" {
		if err := os.WriteFile(f, doc, 0o644); err != nil {
			return badInputf("--out: %v", err)
		}
		return nil
	}
	_, err := c.App.Writer.Write(doc)
	return err
}

// policyKeyFlag is --policy-key of the offline commands that read policies.
func policyKeyFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "policy-key", Usage: "public key or certificate `FILE` (PEM) a DSSE-signed policy must verify against (repeatable)"}
}

func loadPolicyKeys(c *cli.Context) ([]dsse.PublicKey, error) {
	keys, err := dsse.LoadPublicKeys(c.StringSlice("policy-key")...)
	if err != nil {
		return nil, badInputf("--policy-key: %v", err)
	}
	return keys, nil
}

// signedPolicyErr explains an envelope that did not open: all bad input
// (exit 2), with a hint when no key was given.
func signedPolicyErr(flag, file string, err error) error {
	if errors.Is(err, dsse.ErrNoKeys) {
		return badInputf("%s %s: %v; give --policy-key FILE", flag, file, err)
	}
	return badInputf("%s %s: %v", flag, file, err)
}

// readRuntimePolicy reads a runtime policy file, plain or DSSE-signed (then
// verified against --policy-key).
func readRuntimePolicy(c *cli.Context, flag, file string, data []byte) (*ima.Policy, error) {
	keys, err := loadPolicyKeys(c)
	if err != nil {
		return nil, err
	}
	pol, err := ima.ParseSignedPolicy(data, keys)
	if err != nil {
		return nil, signedPolicyErr(flag, file, err)
	}
	return pol, nil
}

// readBootPolicy reads a boot policy file, plain or DSSE-signed (then
// verified against --policy-key), as the verifier's upload check does.
func readBootPolicy(c *cli.Context, flag, file string, data []byte) (*bootpolicy.Policy, error) {
	if dsse.IsEnvelope(data) {
		keys, err := loadPolicyKeys(c)
		if err != nil {
			return nil, err
		}
		if data, err = dsse.Open(data, dsse.PayloadTypeKeylime, keys); err != nil {
			return nil, signedPolicyErr(flag, file, fmt.Errorf("signed boot policy: %w", err))
		}
	}
	pol, err := bootpolicy.Parse(data)
	if err != nil {
		return nil, badInputf("%s %s: %v", flag, file, err)
	}
	return pol, nil
}

// readRuntimePolicyArg reads a runtime policy named on the command line,
// plain or DSSE-signed (verified against --policy-key).
func readRuntimePolicyArg(c *cli.Context, what, file string) (*ima.Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, badInputf("%s: %v", what, err)
	}
	return readRuntimePolicy(c, what, file, data)
}

// policyDiffCommand is `vigil policy diff A B`: what changed between two
// runtime policies, in terms of what they accept. Exit 0 when they accept
// the same, 1 when they differ, 2 on bad input, as diff(1).
func policyDiffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "compare two runtime policies: paths added, removed or with other digests, excludes, keyrings, ima-buf, verification keys (exit 0 same, 1 different)",
		ArgsUsage: "A B",
		Description: "Lines: '+ member name: digests' is only in B, '- member name: digests' only in A,\n" +
			"'~ member name: +digest -digest' is listed in both with other digests. meta and release are not\n" +
			"compared (they change no verdict); digests are compared as sets, in lower case.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			policyKeyFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return badInputf("want two runtime policy arguments A B, got %d", c.NArg())
			}
			fa, fb := c.Args().Get(0), c.Args().Get(1)
			a, err := readRuntimePolicyArg(c, "A", fa)
			if err != nil {
				return err
			}
			b, err := readRuntimePolicyArg(c, "B", fb)
			if err != nil {
				return err
			}
			d := ima.DiffPolicies(a, b)
			if c.Bool("json") {
				out := struct {
					A string `json:"a"`
					B string `json:"b"`
					ima.PolicyDiff
				}{fa, fb, d}
				if err := printJSON(c.App.Writer, out); err != nil {
					return err
				}
			} else if !d.Identical {
				w := c.App.Writer
				fmt.Fprintf(w, "--- %s\n+++ %s\n", fa, fb)
				for _, l := range d.Lines() {
					fmt.Fprintln(w, l)
				}
			}
			if !d.Identical {
				return silentFailure
			}
			return nil
		},
	}
}

// policyCheckCommand is `vigil policy check POLICY --ima-log FILE`: the
// entries of a measurement list the policy would fail, judged by the
// verifier's code (ima.Verify, as verdict.Runtime calls it) without a quote.
func policyCheckCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "list the entries of an IMA log a runtime policy would fail, and why (no quote: PCR 10 and boot_aggregate against PCRs 0-9 are not checked)",
		ArgsUsage: "POLICY",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ima-log", Usage: "IMA measurement list `FILE` (ASCII or binary)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "template-hash-alg", Usage: "as for vigil ima show"},
			policyKeyFlag(),
		},
		Action: policyCheck,
	}
}

// noQuote says what an offline check leaves out.
const noQuote = "there is no quote: the entries are not replayed against a quoted PCR 10, and boot_aggregate is not checked against quoted PCRs 0-9"

type policyCheckReport struct {
	OK         bool   `json:"ok"`
	Policy     string `json:"policy"`
	IMALog     string `json:"ima_log"`
	NotChecked string `json:"not_checked"`
	Entries    uint64 `json:"entries"`
	// Violations and UncheckedTemplateHashes are as in vigil ima verify.
	Violations              uint64        `json:"violations"`
	UncheckedTemplateHashes uint64        `json:"unchecked_template_hashes"`
	FailureCount            int           `json:"failure_count"`
	Failures                []ima.Failure `json:"failures"`
	// BootAggregate says how entry 0 was judged: "policy" (a digest the
	// policy lists, or an exclude), "pcrs" (the policy does not list it:
	// it passes only if it matches the quoted PCRs 0-9, which the verifier
	// checks where it quotes them), "failed" (a failure above), or "" when
	// the list does not start with a boot_aggregate.
	BootAggregate       string `json:"boot_aggregate,omitempty"`
	BootAggregateDigest string `json:"boot_aggregate_digest,omitempty"`
}

func policyCheck(c *cli.Context) error {
	if c.NArg() != 1 {
		return badInputf("want one POLICY argument, got %d", c.NArg())
	}
	if err := required(c, "ima-log"); err != nil {
		return err
	}
	polFile, logFile := c.Args().First(), c.String("ima-log")
	pol, err := readRuntimePolicyArg(c, "POLICY", polFile)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(logFile)
	if err != nil {
		return badInputf("--ima-log: %v", err)
	}
	popts, err := parseOptions(c)
	if err != nil {
		return err
	}
	// As the verifier judges a list from its start (verdict.Runtime), with
	// no quoted PCRs: every failure listed.
	res, err := ima.Verify(ima.NewState(ima.SHA1, ima.SHA256), data, nil, pol, ima.VerifyOptions{
		Parse:              popts,
		MaxFailures:        1 << 20,
		DeferBootAggregate: true,
	})
	if err != nil {
		return parseErr("--ima-log "+logFile, err)
	}
	rep := policyCheckReport{
		OK: res.OK(), Policy: polFile, IMALog: logFile, NotChecked: noQuote, Entries: res.Entries,
		Violations: res.Violations, UncheckedTemplateHashes: res.Unchecked,
		FailureCount: res.FailureCount, Failures: res.Failures,
	}
	p := ima.NewParser(data, popts)
	if p.Next() {
		e := p.Entry()
		if d, ok := e.Digest(); ok && string(e.Path()) == "boot_aggregate" && !e.IsViolation() {
			rep.BootAggregateDigest = d.String()
			rep.BootAggregate = "policy"
			if res.BootAggregateUnchecked {
				rep.BootAggregate = "pcrs"
			}
			for _, f := range res.Failures {
				if f.Entry == 0 {
					rep.BootAggregate = "failed"
				}
			}
		}
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
		if !rep.OK {
			return silentFailure
		}
		return nil
	}
	w := c.App.Writer
	fmt.Fprintf(w, "note: %s\n", noQuote)
	if rep.BootAggregate == "pcrs" {
		fmt.Fprintf(w, "note: entry 0 boot_aggregate (%s) is not in the policy: it passes only if it matches the quoted PCRs 0-9\n", rep.BootAggregateDigest)
	}
	for _, f := range res.Failures {
		fmt.Fprintln(w, f.Error())
	}
	if !res.OK() {
		return failed(fmt.Errorf("%s: %d of %d entries would fail %s", logFile, res.FailureCount, res.Entries, polFile))
	}
	fmt.Fprintf(w, "ok: %d entries pass %s\n", res.Entries, polFile)
	return nil
}
