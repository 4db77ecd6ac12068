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
		Usage: "create and sign reference policies",
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
