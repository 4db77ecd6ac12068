package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// agentEnrollFlags are the flags `vigil agent enroll` shares with `vigil
// agent`.
func agentEnrollFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Usage: "data `DIR` (the AK is kept here)"},
		&cli.StringFlag{Name: "tpm", Value: agent.DefaultTPM, Usage: "`SPEC`: a TPM device, swtpm:HOST:PORT, or sim"},
		&cli.StringFlag{Name: "registrar", Usage: "registrar `URL` (https://HOST:PORT)"},
		&cli.StringFlag{Name: "ca", Usage: "CA certificate `FILE` the servers' certificates chain to"},
		&cli.StringFlag{Name: "id", Usage: "agent `ID` (default: SHA-256 of the EK public key)"},
		&cli.StringFlag{Name: "ak-alg", Value: "rsa", Usage: "AK algorithm: rsa (RSA-2048) or ecc (P-256)"},
		&cli.StringFlag{Name: "ek-alg", Value: "rsa", Usage: "EK algorithm: rsa or ecc"},
	}
}

func agentCommand() *cli.Command {
	enrollFlags, enrollBefore := serviceFlags(append(agentEnrollFlags(),
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"})...)
	runFlags, runBefore := serviceFlags(append(agentEnrollFlags(),
		&cli.StringSliceFlag{Name: "verifier", Usage: "verifier `URL` (https://HOST:PORT); repeat it for the replicas of one deployment, tried in turn when one cannot be reached"},
		&cli.StringFlag{Name: "boot-log", Value: agent.DefaultBootLog, Usage: "UEFI event log `FILE`"},
		&cli.StringFlag{Name: "ima-log", Value: agent.DefaultIMALog, Usage: "IMA measurement list `FILE` (binary or ASCII)"},
		&cli.StringFlag{Name: "proof-socket", Usage: "answer node-proof requests (a quote by this host's AK over a caller's challenge, for SPIRE's vigil NodeAttestor) on Unix socket `PATH`, mode 0660; off when empty"},
		&cli.StringFlag{Name: "user", Usage: "after enrolling and opening the TPM and the logs, run as `NAME` (e.g. vigil, in group tss) instead of root"},
	)...)
	return &cli.Command{
		Name:   "agent",
		Usage:  "the host agent: enrolls the host's TPM and attests to the verifier",
		Flags:  runFlags,
		Before: runBefore,
		Action: func(c *cli.Context) error {
			if len(c.StringSlice("verifier")) == 0 {
				return badInputf("missing required flag(s) --verifier")
			}
			enroller, closeTPM, err := enrollerFromFlags(c)
			if err != nil {
				return err
			}
			defer closeTPM()
			att := &agent.Attester{
				Open:         enroller.Open,
				DataDir:      enroller.DataDir,
				VerifierURLs: c.StringSlice("verifier"),
				HTTP:         enroller.HTTP,
				BootLogPath:  c.String("boot-log"),
				IMALogPath:   c.String("ima-log"),
				Log:          enroller.Log,
			}
			// The logs are checked before enrolling, so a misconfigured
			// host fails at once with a clear error.
			if err := att.CheckLogs(); err != nil {
				return badInput(err)
			}
			res, err := enroller.Enroll(c.Context)
			if err != nil {
				return err
			}
			enroller.Log.Info("attesting", "agent_id", res.AgentID, "verifiers", c.StringSlice("verifier"))
			if err := att.Prepare(); err != nil {
				return err
			}
			ctx, stop := context.WithCancel(c.Context)
			defer stop()
			if path := c.String("proof-socket"); path != "" {
				// Listening comes before dropping privileges: the socket's
				// directory (/run/vigil) may be root's.
				ln, err := agent.ListenProofSocket(path)
				if err != nil {
					return err
				}
				defer os.Remove(path)
				go func() {
					// A proof socket that stops answering is a broken
					// configuration, not a reason to attest on unnoticed.
					if err := att.ServeProofs(ctx, ln); err != nil {
						enroller.Log.Error("node proofs stopped", "err", err)
						stop()
					}
				}()
				enroller.Log.Info("answering node proofs", "socket", path)
			}
			if name := c.String("user"); name != "" {
				if err := att.Hold(c.Context); err != nil {
					return err
				}
				if err := agent.DropPrivileges(name); err != nil {
					return err
				}
				enroller.Log.Info("running unprivileged", "user", name)
			}
			return att.Run(ctx)
		},
		Subcommands: []*cli.Command{{
			Name:   "enroll",
			Usage:  "register the host's AK with the registrar, activate it, print the result and exit",
			Flags:  enrollFlags,
			Before: enrollBefore,
			Action: func(c *cli.Context) error {
				enroller, closeTPM, err := enrollerFromFlags(c)
				if err != nil {
					return err
				}
				defer closeTPM()
				res, err := enroller.Enroll(c.Context)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, res)
				}
				fmt.Fprintf(c.App.Writer, "agent %s enrolled: active=%v ak_alg=%s ak_reused=%v\n", res.AgentID, res.Active, res.AKAlg, res.AKReused)
				return nil
			},
		}},
	}
}

func enrollerFromFlags(c *cli.Context) (*agent.Enroller, func() error, error) {
	if err := required(c, "data", "tpm", "registrar", "ca"); err != nil {
		return nil, nil, err
	}
	log, err := newLogger(c, stderr(c))
	if err != nil {
		return nil, nil, err
	}
	akAlg, err := tpmfacts.ParseAlg(c.String("ak-alg"))
	if err != nil {
		return nil, nil, badInputf("--ak-alg: %v", err)
	}
	ekAlg, err := tpmfacts.ParseAlg(c.String("ek-alg"))
	if err != nil {
		return nil, nil, badInputf("--ek-alg: %v", err)
	}
	if id := c.String("id"); id != "" && !validAgentID(id) {
		return nil, nil, badInputf("--id %q: 1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit", id)
	}
	tlsCfg, err := tlsutil.ClientConfig(c.String("ca"), "", "")
	if err != nil {
		return nil, nil, badInputf("--ca: %v", err)
	}
	open, closeTPM, err := agent.OpenerFromSpec(c.String("tpm"))
	if err != nil {
		return nil, nil, badInput(err)
	}
	return &agent.Enroller{
		Open:         open,
		DataDir:      c.String("data"),
		RegistrarURL: c.String("registrar"),
		HTTP:         &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}},
		AgentID:      c.String("id"),
		EKAlg:        ekAlg,
		AKAlg:        akAlg,
		Log:          log.With("service", "agent"),
	}, closeTPM, nil
}
