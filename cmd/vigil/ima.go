package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/ima"
)

// imaCommand holds the offline IMA measurement-list tools.
func imaCommand() *cli.Command {
	hashAlg := &cli.StringFlag{Name: "template-hash-alg", Usage: "algorithm of the logged template digests when their length is ambiguous (sm3_256 for 32-byte SM3 digests); default: by length"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	return &cli.Command{
		Name:  "ima",
		Usage: "inspect, replay and verify IMA measurement lists (ASCII or binary, detected)",
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "print the entries and check each template hash",
				ArgsUsage: "FILE",
				Flags:     []cli.Flag{jsonFlag, hashAlg},
				Action:    imaShow,
			},
			{
				Name:      "replay",
				Usage:     "replay the list into PCR 10",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{jsonFlag, hashAlg,
					&cli.StringFlag{Name: "bank", Value: "sha1", Usage: "PCR bank: sha1, sha256, sha384 or sha512"},
					&cli.BoolFlag{Name: "pad-sha1", Usage: "replay as kernels before 5.8 did: extend every bank with the zero-padded SHA-1 template digest"},
				},
				Action: imaReplay,
			},
			{
				Name:      "verify",
				Usage:     "verify the list against a runtime policy (and a quoted PCR 10)",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{jsonFlag, hashAlg,
					&cli.StringFlag{Name: "policy", Usage: "Keylime runtime policy `FILE`: JSON, or a DSSE envelope (made by vigil policy sign or keylime-policy sign runtime), read only if its signature verifies against a --policy-key"},
					policyKeyFlag(),
					&cli.StringSliceFlag{Name: "pcr10", Usage: "quoted PCR 10 as `[BANK:]HEX` (bank by length when omitted); repeat per bank"},
					&cli.BoolFlag{Name: "allow-violations", Usage: "accept violation entries (denied by default)"},
					&cli.BoolFlag{Name: "pad-sha1", Usage: "replay as kernels before 5.8 did"},
				},
				Action: imaVerify,
			},
		},
	}
}

func readArgFile(c *cli.Context, what string) ([]byte, string, error) {
	if c.NArg() != 1 {
		return nil, "", badInputf("want one %s argument, got %d", what, c.NArg())
	}
	name := c.Args().First()
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, "", badInput(err)
	}
	return data, name, nil
}

func parseOptions(c *cli.Context) (ima.ParseOptions, error) {
	var o ima.ParseOptions
	if s := c.String("template-hash-alg"); s != "" {
		a, ok := ima.ParseAlgorithm(s)
		if !ok {
			return o, badInputf("--template-hash-alg: unknown algorithm %q", s)
		}
		o.TemplateHashAlg = a
	}
	return o, nil
}

// parseErr maps a parser error to exit 2 and anything else to exit 1.
func parseErr(name string, err error) error {
	var pe *ima.ParseError
	if errors.As(err, &pe) {
		return badInputf("%s: %v", name, err)
	}
	return failed(fmt.Errorf("%s: %w", name, err))
}

type imaShowEntry struct {
	Index        uint64 `json:"index"`
	PCR          uint32 `json:"pcr"`
	Template     string `json:"template"`
	TemplateHash string `json:"template_hash"`
	Digest       string `json:"digest,omitempty"`
	Path         string `json:"path,omitempty"`
	Violation    bool   `json:"violation,omitempty"`
	// HashCheck is "ok", "mismatch", "violation" or "unchecked".
	HashCheck string `json:"hash_check"`
	Error     string `json:"error,omitempty"`
}

func imaShow(c *cli.Context) error {
	data, name, err := readArgFile(c, "FILE")
	if err != nil {
		return err
	}
	popts, err := parseOptions(c)
	if err != nil {
		return err
	}
	p := ima.NewParser(data, popts)
	var entries []imaShowEntry
	mismatches := 0
	w := bufio.NewWriter(c.App.Writer)
	for p.Next() {
		e := p.Entry()
		se := imaShowEntry{Index: e.Index, PCR: e.PCR, Template: e.TemplateName, TemplateHash: hex.EncodeToString(e.TemplateHash),
			Path: string(e.Path()), Violation: e.IsViolation(), HashCheck: "ok"}
		if d, ok := e.Digest(); ok {
			se.Digest = d.String()
		}
		switch err := e.CheckTemplateHash(); {
		case e.IsViolation():
			se.HashCheck = "violation"
		case errors.Is(err, ima.ErrUnsupportedHash):
			se.HashCheck = "unchecked"
			se.Error = err.Error()
		case err != nil:
			se.HashCheck = "mismatch"
			se.Error = err.Error()
			mismatches++
		}
		if c.Bool("json") {
			entries = append(entries, se)
			continue
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%s\n", se.Index, se.PCR, se.Template, se.Digest, se.Path, se.HashCheck)
	}
	if err := p.Err(); err != nil {
		w.Flush()
		return parseErr(name, err)
	}
	if c.Bool("json") {
		if entries == nil {
			entries = []imaShowEntry{}
		}
		if err := printJSON(w, map[string]any{"format": p.Format().String(), "entries": entries, "template_hash_mismatches": mismatches}); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if mismatches > 0 {
		if c.Bool("json") {
			return silentFailure
		}
		return failed(fmt.Errorf("%s: %d template hash mismatch(es)", name, mismatches))
	}
	return nil
}

func bankFlag(c *cli.Context) (ima.Algorithm, error) {
	a, ok := ima.ParseAlgorithm(c.String("bank"))
	if !ok || !a.Computable() {
		return 0, badInputf("--bank: %q is not sha1, sha256, sha384 or sha512", c.String("bank"))
	}
	return a, nil
}

func imaReplay(c *cli.Context) error {
	data, name, err := readArgFile(c, "FILE")
	if err != nil {
		return err
	}
	popts, err := parseOptions(c)
	if err != nil {
		return err
	}
	bank, err := bankFlag(c)
	if err != nil {
		return err
	}
	res, err := ima.Replay(data, popts, ima.ReplayOptions{PadSHA1: c.Bool("pad-sha1")}, bank)
	if err != nil {
		return parseErr(name, err)
	}
	pcr := hex.EncodeToString(res.PCR[bank.String()])
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{
			"entries": res.Entries, "pcr10": pcr, "violations": res.Violations,
			"bank": bank.String(), "unchecked": res.Unchecked, "other_pcr_entries": res.Skipped,
		})
	}
	fmt.Fprintf(c.App.Writer, "entries\t%d\nviolations\t%d\npcr10\t%s:%s\n", res.Entries, res.Violations, bank, pcr)
	return nil
}

// parsePCR10 reads --pcr10 values: "sha256:HEX" or a bare HEX whose length
// names the bank (40 digits sha1, 64 sha256, ...).
func parsePCR10(vals []string) (map[ima.Algorithm][]byte, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[ima.Algorithm][]byte{}
	for _, v := range vals {
		bankName, hx, hasBank := strings.Cut(v, ":")
		if !hasBank {
			hx = bankName
		}
		b, err := hex.DecodeString(hx)
		if err != nil {
			return nil, badInputf("--pcr10 %q: not hex", v)
		}
		var a ima.Algorithm
		if hasBank {
			var ok bool
			if a, ok = ima.ParseAlgorithm(bankName); !ok {
				return nil, badInputf("--pcr10 %q: unknown bank %q", v, bankName)
			}
		} else {
			switch len(b) {
			case 20:
				a = ima.SHA1
			case 32:
				a = ima.SHA256
			case 48:
				a = ima.SHA384
			case 64:
				a = ima.SHA512
			}
		}
		if a == 0 || len(b) != a.Size() {
			return nil, badInputf("--pcr10 %q: %d bytes is not a %s PCR value", v, len(b), a)
		}
		out[a] = b
	}
	return out, nil
}

func imaVerify(c *cli.Context) error {
	data, name, err := readArgFile(c, "FILE")
	if err != nil {
		return err
	}
	if err := required(c, "policy"); err != nil {
		return err
	}
	popts, err := parseOptions(c)
	if err != nil {
		return err
	}
	pdata, err := os.ReadFile(c.String("policy"))
	if err != nil {
		return badInput(err)
	}
	pol, err := readRuntimePolicy(c, "--policy", c.String("policy"), pdata)
	if err != nil {
		return err
	}
	quoted, err := parsePCR10(c.StringSlice("pcr10"))
	if err != nil {
		return err
	}
	banks := []ima.Algorithm{ima.SHA1}
	if quoted != nil {
		banks = banks[:0]
		for a := range quoted {
			banks = append(banks, a)
		}
	}
	res, err := ima.Verify(ima.NewState(banks...), data, quoted, pol, ima.VerifyOptions{
		Parse:           popts,
		Replay:          ima.ReplayOptions{PadSHA1: c.Bool("pad-sha1")},
		AllowViolations: c.Bool("allow-violations"),
		MaxFailures:     1 << 20,
	})
	if err != nil {
		return parseErr(name, err)
	}
	// Offline, the whole file is the evidence: a quote that covers only a
	// prefix of it (the verifier's "log ahead of the quote") leaves the rest
	// unproven, so it fails here.
	ok := res.OK() && res.Pending == 0
	if c.Bool("json") {
		out := struct {
			OK bool `json:"ok"`
			ima.Result
		}{ok, res}
		if err := printJSON(c.App.Writer, out); err != nil {
			return err
		}
		if !ok {
			return silentFailure
		}
		return nil
	}
	w := c.App.Writer
	for _, f := range res.Failures {
		fmt.Fprintln(w, f.Error())
	}
	if !res.OK() {
		return failed(fmt.Errorf("%s: %d failure(s) in %d entries", name, res.FailureCount, res.Entries))
	}
	if res.Pending > 0 {
		return failed(fmt.Errorf("%s: the quoted PCR 10 covers only the first %d of %d entries", name, res.Committed, res.Entries))
	}
	fmt.Fprintf(w, "ok: %d entries, %d violations\n", res.Entries, res.Violations)
	return nil
}

// policyCreateRuntimeCommand writes a Keylime runtime policy from a
// known-good host's measurement list or from a root filesystem tree.
func policyCreateRuntimeCommand() *cli.Command {
	return &cli.Command{
		Name:  "runtime",
		Usage: "create a Keylime-format runtime (IMA) policy from --ima-log FILE or --rootfs DIR",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ima-log", Usage: "IMA measurement list `FILE` of a known-good host (ASCII or binary)"},
			&cli.StringFlag{Name: "rootfs", Usage: "root filesystem `DIR`: hash every executable and ELF file under it"},
			&cli.StringFlag{Name: "algo", Value: "sha256", Usage: "digest algorithm for --rootfs"},
			&cli.StringFlag{Name: "template-hash-alg", Usage: "as for vigil ima show"},
			&cli.StringFlag{Name: "out", Usage: "write the policy to `FILE` instead of standard output"},
		},
		Action: func(c *cli.Context) error {
			logFile, rootfs := c.String("ima-log"), c.String("rootfs")
			if (logFile == "") == (rootfs == "") {
				return badInputf("give exactly one of --ima-log FILE and --rootfs DIR")
			}
			var rp ima.RuntimePolicy
			if logFile != "" {
				data, err := os.ReadFile(logFile)
				if err != nil {
					return badInput(err)
				}
				popts, err := parseOptions(c)
				if err != nil {
					return err
				}
				if rp, err = ima.PolicyFromLog(data, popts); err != nil {
					return badInputf("%s: %v", logFile, err)
				}
			} else {
				a, ok := ima.ParseAlgorithm(c.String("algo"))
				if !ok || !a.Computable() {
					return badInputf("--algo: %q is not sha1, sha256, sha384 or sha512", c.String("algo"))
				}
				st, err := os.Stat(rootfs)
				if err != nil || !st.IsDir() {
					return badInputf("--rootfs %s: not a directory", rootfs)
				}
				if rp, err = ima.PolicyFromRootfs(c.Context, rootfs, a); err != nil {
					return failed(err)
				}
			}
			out, err := rp.JSON()
			if err != nil {
				return err
			}
			return writeDocument(c, out)
		},
	}
}
