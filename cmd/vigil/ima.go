package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
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

// repeated is the value of a flag that may be given several times. Unlike
// cli.StringSliceFlag it does not split a value at commas: file names and
// keyring names may hold them.
type repeated []string

func (r *repeated) Set(s string) error { *r = append(*r, s); return nil }
func (r *repeated) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(*r, ", ")
}

// repeatedFlag declares a repeatable flag whose values repeatedValues reads.
func repeatedFlag(name, usage string) cli.Flag {
	return &cli.GenericFlag{Name: name, Usage: usage, Value: &repeated{}}
}

func repeatedValues(c *cli.Context, name string) []string {
	if r, ok := c.Generic(name).(*repeated); ok && r != nil {
		return *r
	}
	return nil
}

// policyCreateRuntimeCommand writes a Keylime runtime policy from
// known-good hosts' measurement lists, root filesystem trees, or both,
// merged into a base policy; its flags follow `keylime-policy create
// runtime`'s.
func policyCreateRuntimeCommand() *cli.Command {
	return &cli.Command{
		Name:  "runtime",
		Usage: "create a Keylime-format runtime (IMA) policy from --ima-log FILE and/or --rootfs DIR, merged into --base-policy FILE",
		Description: "Sources (each repeatable, all merged): --ima-log, a known-good host's measurement list (every path\n" +
			"with its digests, boot_aggregate included; keys measured into keyrings; other ima-buf buffers);\n" +
			"--rootfs, a root filesystem tree (every executable or ELF file); --base-policy, a runtime policy to\n" +
			"merge into. With --rootfs alone the policy lists no boot_aggregate: entry 0 is then checked against\n" +
			"the quoted PCRs 0-9 (docs/runtime-policy.md).",
		Flags: []cli.Flag{
			repeatedFlag("ima-log", "IMA measurement list `FILE` of a known-good host (ASCII or binary); repeatable (Keylime: --ima-measurement-list)"),
			repeatedFlag("rootfs", "root filesystem `DIR`: hash every executable and ELF file under it, listed as / + its path in DIR; repeatable"),
			&cli.StringFlag{Name: "algo", Usage: "digest algorithm `ALG` for --rootfs: sha1, sha256, sha384 or sha512 (default: that of --base-policy's digests, else of --ima-log's file digests, else sha256)"},
			repeatedFlag("skip-path", "`PATH` under --rootfs, as the booted host sees it (/opt/cache), not to hash; repeatable; "+strings.Join(ima.DefaultRootfsSkip, " ")+" are always skipped (Keylime: --skip-path)"),
			&cli.StringFlag{Name: "base-policy", Usage: "runtime policy `FILE` (Keylime's JSON, or a DSSE envelope verified with --policy-key) to merge into: digests unioned per path, excludes, keyrings, ima-buf, ignored keyrings and verification keys kept"},
			policyKeyFlag(),
			repeatedFlag("exclude", "exclude list `FILE`: one regular expression per line, '#' comments (Keylime's --excludelist); repeatable"),
			repeatedFlag("keyring", "take keys the --ima-log measured into keyring `NAME` into \"keyrings\" (repeatable); without it, every keyring's keys are taken (Keylime: --keyrings)"),
			repeatedFlag("ignored-keyring", "keyring `NAME` whose key measurements are not judged (ima.ignored_keyrings; \"*\" for all); repeatable (Keylime: --ignored-keyrings)"),
			repeatedFlag("ima-key", "IMA signature verification key `FILE`: an X.509 certificate or public key, PEM or DER, into \"verification-keys\"; repeatable (Keylime: --add-ima-signature-verification-key)"),
			&cli.StringFlag{Name: "template-hash-alg", Usage: "as for vigil ima show"},
			&cli.StringFlag{Name: "out", Usage: "write the policy to `FILE` instead of standard output"},
		},
		Action: policyCreateRuntime,
	}
}

// algoSource is a digest algorithm and where it came from; guessed when
// it was read from digest lengths (a policy's 64 hex digits are SHA-256 or
// SM3).
type algoSource struct {
	alg     ima.Algorithm
	from    string
	guessed bool
}

// sameDigestAlg reports whether two sources' algorithms can be the same.
func sameDigestAlg(a, b algoSource) bool {
	if a.alg == b.alg {
		return true
	}
	sha256OrSM3 := (a.alg == ima.SHA256 && b.alg == ima.SM3) || (a.alg == ima.SM3 && b.alg == ima.SHA256)
	return sha256OrSM3 && (a.guessed || b.guessed)
}

func policyCreateRuntime(c *cli.Context) error {
	if c.NArg() > 0 {
		return badInputf("unexpected argument %q: the sources are flags (--ima-log FILE, --rootfs DIR, --base-policy FILE)", c.Args().First())
	}
	logs, roots, base := repeatedValues(c, "ima-log"), repeatedValues(c, "rootfs"), c.String("base-policy")
	if len(logs) == 0 && len(roots) == 0 && base == "" {
		return badInputf("give --ima-log FILE and/or --rootfs DIR (each repeatable), or --base-policy FILE to add to")
	}
	keyrings := repeatedValues(c, "keyring")
	if len(keyrings) > 0 && len(logs) == 0 {
		return badInputf("--keyring takes keys from an IMA log: give --ima-log FILE")
	}
	for _, k := range keyrings {
		if k == "" {
			return badInputf("--keyring: empty keyring name")
		}
	}
	if len(repeatedValues(c, "skip-path")) > 0 && len(roots) == 0 {
		return badInputf("--skip-path applies to --rootfs: give --rootfs DIR")
	}
	if c.String("algo") != "" && len(roots) == 0 {
		return badInputf("--algo is the digest algorithm of --rootfs: give --rootfs DIR, or drop --algo (a log's digests are as logged)")
	}
	popts, err := parseOptions(c)
	if err != nil {
		return err
	}

	rp := ima.NewRuntimePolicy()
	var algs []algoSource
	if c.String("algo") != "" {
		a, ok := ima.ParseAlgorithm(c.String("algo"))
		if !ok || !a.Computable() {
			return badInputf("--algo: %q is not sha1, sha256, sha384 or sha512", c.String("algo"))
		}
		algs = append(algs, algoSource{alg: a, from: "--algo"})
	}

	// The base policy first: what it holds is kept, the rest is added.
	if base != "" {
		data, err := os.ReadFile(base)
		if err != nil {
			return badInputf("--base-policy: %v", err)
		}
		bp, err := readRuntimePolicy(c, "--base-policy", base, data)
		if err != nil {
			return err
		}
		if err := rp.Merge(bp.Source); err != nil {
			return badInputf("--base-policy %s: %v", base, err)
		}
		rp.Release = bp.Source.Release
		if bp.Source.IMA.LogHashAlg != "" {
			rp.IMA.LogHashAlg = bp.Source.IMA.LogHashAlg
		}
		if a := bp.Source.DigestAlg(); a != ima.AlgUnknown {
			algs = append(algs, algoSource{a, "--base-policy " + base + "'s digests", true})
		}
	}

	// Excludes: the base's, then each list's, validated line by line.
	for _, f := range repeatedValues(c, "exclude") {
		data, err := os.ReadFile(f)
		if err != nil {
			return badInputf("--exclude: %v", err)
		}
		ex, err := ima.ParseExcludeList(data, f)
		if err != nil {
			return badInputf("--exclude %v", err)
		}
		rp.Excludes = append(rp.Excludes, ex...)
	}
	ignored := repeatedValues(c, "ignored-keyring")
	for _, k := range ignored {
		if k == "" {
			return badInputf("--ignored-keyring: empty keyring name")
		}
		if slices.Contains(keyrings, k) || (k == "*" && len(keyrings) > 0) {
			return badInputf("--ignored-keyring %s and --keyring %s: a keyring is either judged or ignored", k, strings.Join(keyrings, ", "))
		}
	}
	rp.IMA.IgnoredKeyrings = append(rp.IMA.IgnoredKeyrings, ignored...)

	// Measurement lists.
	measured := map[string]int{}
	skipped := map[string]bool{}
	for i, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			return badInputf("--ima-log: %v", err)
		}
		var want []string
		if len(keyrings) > 0 {
			want = keyrings
		}
		lp, info, err := ima.PolicyFromLogWith(data, ima.LogPolicyOptions{Parse: popts, Keyrings: want, IgnoredKeyrings: rp.IMA.IgnoredKeyrings})
		if err != nil {
			return badInputf("--ima-log %s: %v", f, err)
		}
		if info.Entries == 0 {
			return badInputf("--ima-log %s: no measurement in it", f)
		}
		if err := rp.Merge(lp); err != nil {
			return badInputf("--ima-log %s: %v", f, err)
		}
		if i == 0 {
			rp.IMA.LogHashAlg = lp.IMA.LogHashAlg
		}
		for k, n := range info.KeyringKeys {
			measured[k] += n
		}
		for _, k := range info.SkippedKeyrings {
			skipped[k] = true
		}
		if a := info.MainFileDigestAlg(); a != ima.AlgUnknown {
			algs = append(algs, algoSource{alg: a, from: "--ima-log " + f + "'s file digests"})
		}
	}
	for _, k := range keyrings {
		if measured[k] == 0 {
			return badInputf("--keyring %s: no key was measured into that keyring in the --ima-log list(s)", k)
		}
	}
	if len(skipped) > 0 {
		names := make([]string, 0, len(skipped))
		for k := range skipped {
			names = append(names, k)
		}
		slices.Sort(names)
		fmt.Fprintf(c.App.ErrWriter, "vigil: note: keys measured into %s are left out (not named by --keyring): the policy fails them unless --ignored-keyring names the keyring\n", strings.Join(names, ", "))
	}

	// One digest algorithm for everything merged, as Keylime insists: a
	// root filesystem hashed in another algorithm than the hosts' IMA
	// logs would never match.
	for i := range algs {
		for j := i + 1; j < len(algs); j++ {
			if !sameDigestAlg(algs[i], algs[j]) {
				return badInputf("digest algorithms disagree: %s are %s, %s are %s (a policy mixing them would not match what IMA logs)", algs[i].from, algs[i].alg, algs[j].from, algs[j].alg)
			}
		}
	}

	// Root filesystems, hashed in that algorithm; files the excludes pass
	// anyway are not hashed.
	if len(roots) > 0 {
		alg := ima.SHA256
		if len(algs) > 0 {
			alg = algs[0].alg
			// A base policy's 64 hex digits may be SM3: a log says which.
			for _, s := range algs {
				if algs[0].guessed && s.alg == ima.SM3 {
					alg = ima.SM3
				}
			}
		}
		if !alg.Computable() {
			return badInputf("--rootfs: the digests to match are %s, which Vigil cannot compute", alg)
		}
		skip := append(slices.Clone(ima.DefaultRootfsSkip), repeatedValues(c, "skip-path")...)
		for _, dir := range roots {
			st, err := os.Stat(dir)
			if err != nil || !st.IsDir() {
				return badInputf("--rootfs %s: not a directory", dir)
			}
			fp, err := ima.PolicyFromRootfsWith(c.Context, dir, ima.RootfsOptions{Alg: alg, Skip: skip, Excludes: rp.Excludes})
			if err != nil {
				if c.Context.Err() != nil {
					return failed(err)
				}
				return badInputf("--rootfs %s: %v", dir, err)
			}
			if err := rp.Merge(fp); err != nil {
				return err
			}
		}
	}

	// IMA signature verification keys.
	for _, f := range repeatedValues(c, "ima-key") {
		data, err := os.ReadFile(f)
		if err != nil {
			return badInputf("--ima-key: %v", err)
		}
		k, err := ima.ReadVerificationKey(data)
		if err != nil {
			return badInputf("--ima-key %s: %v", f, err)
		}
		if err := rp.AddVerificationKeys(k); err != nil {
			return badInputf("--ima-key %s: %v", f, err)
		}
	}

	rp.Normalize()
	pol, err := ima.CompilePolicy(rp)
	if err != nil {
		// Every input was checked; what is left is their combination.
		return badInputf("the merged policy is not valid: %v", err)
	}
	if _, listed := rp.Digests["boot_aggregate"]; !listed && !pol.Excluded([]byte("boot_aggregate")) {
		fmt.Fprintln(c.App.ErrWriter, "vigil: note: the policy lists no boot_aggregate: entry 0 passes only where the verifier checks it against the quoted PCRs 0-9 (see docs/runtime-policy.md)")
	}
	out, err := rp.JSON()
	if err != nil {
		return err
	}
	return writeDocument(c, out)
}
