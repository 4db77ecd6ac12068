package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/verifier"
)

func verifierAdmin(c *cli.Context) (*verifier.AdminClient, error) {
	if err := required(c, "tls-dir", "verifier"); err != nil {
		return nil, err
	}
	cfg, err := tlsutil.AdminClientConfig(c.String("tls-dir"))
	if err != nil {
		return nil, badInputf("--tls-dir: %v", err)
	}
	return &verifier.AdminClient{
		BaseURL: c.String("verifier"),
		HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 2 * time.Minute},
	}, nil
}

func tenantPolicyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "reference policies on the verifier",
		Subcommands: []*cli.Command{
			tenantCmd("add", "add a policy, or a new version of it", "NAME", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, name string) error {
				var kind verifier.PolicyKind
				var file string
				for _, k := range []verifier.PolicyKind{verifier.PolicyRuntime, verifier.PolicyBoot, verifier.PolicyPCR} {
					if f := c.String(string(k)); f != "" {
						if file != "" {
							return badInputf("give one of --runtime FILE, --boot FILE or --pcr FILE, not several")
						}
						kind, file = k, f
					}
				}
				if file == "" {
					return badInputf("give --runtime FILE, --boot FILE or --pcr FILE")
				}
				body, err := os.ReadFile(file)
				if err != nil {
					return badInput(err)
				}
				p, err := client.AddPolicy(c.Context, name, kind, body)
				if err != nil {
					return apiInputError(err)
				}
				return printDone(c, p, "%s policy %s version %d (sha256 %s)", p.Kind, p.Name, p.Version, p.SHA256)
			},
				&cli.StringFlag{Name: "runtime", Usage: "runtime (IMA) policy `FILE`, Keylime format"},
				&cli.StringFlag{Name: "boot", Usage: "boot policy `FILE`"},
				&cli.StringFlag{Name: "pcr", Usage: "PCR policy `FILE`: allowed values of PCRs 0-23 in any bank, Keylime's tpm_policy JSON or Vigil's {\"version\": 1, \"pcrs\": {\"sha256\": {\"16\": [\"hex\", …]}}}"}),
			tenantCmd("list", "list policies", "", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, _ string) error {
				ps, err := client.ListPolicies(c.Context)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, ps)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tVERSION\tSHA256\tCREATED")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%.16s\t%s\n", p.Name, p.Kind, p.Version, p.SHA256, p.CreatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			}),
			tenantCmd("show", "print a policy's body (its latest version, or --version V); with --json, the whole record", "NAME", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, name string) error {
				var p verifier.Policy
				var err error
				switch v := c.Int("version"); {
				case c.IsSet("version") && v < 1:
					return badInputf("--version %d: want a version number (1, 2, …)", v)
				case c.IsSet("version"):
					p, err = client.GetPolicyVersion(c.Context, name, v)
				default:
					p, err = client.GetPolicy(c.Context, name)
				}
				if err != nil {
					return apiInputError(err)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, p)
				}
				_, err = c.App.Writer.Write(p.Body)
				return err
			},
				&cli.IntFlag{Name: "version", Usage: "that version `V` rather than the latest"}),
			tenantCmd("history", "list every stored version of a policy, oldest first", "NAME", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, name string) error {
				ps, err := client.PolicyVersions(c.Context, name)
				if err != nil {
					return apiInputError(err)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, ps)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tSHA256\tCREATED")
				for _, p := range ps {
					fmt.Fprintf(tw, "%d\t%s\t%s\n", p.Version, p.SHA256, p.CreatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			}),
			tenantCmd("delete", "delete a policy no agent uses", "NAME", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, name string) error {
				if err := client.DeletePolicy(c.Context, name); err != nil {
					return apiInputError(err)
				}
				return printDone(c, map[string]any{"name": name, "deleted": true}, "deleted policy %s", name)
			}),
		},
	}
}

// printAgent prints an agent's record as the verifier reports it.
func printAgent(c *cli.Context, a verifier.AgentView) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, a)
	}
	fmt.Fprintf(c.App.Writer, "agent_id:         %s\nstate:            %s\n", a.ID, a.State)
	if a.Reason != "" {
		fmt.Fprintf(c.App.Writer, "reason:           %s\ndetail:           %s\nfailed_at:        %s\n", a.Reason, a.Detail, a.FailedAt.Format(time.RFC3339))
	}
	fmt.Fprintf(c.App.Writer, "attestations:     %d\nlast_attested_at: %s\nima_entries:      %d\nruntime_policy:   %s\nboot_policy:      %s\npcr_policy:       %s\ninterval:         %s\n",
		a.Attestations, a.LastAttestedAt.Format(time.RFC3339), a.IMAEntries, pinned(a.RuntimePolicy, a.RuntimePolicyVersion), pinned(a.BootPolicy, a.BootPolicyVersion),
		pinned(a.PCRPolicy, a.PCRPolicyVersion), a.Interval)
	for _, id := range a.Identities {
		fmt.Fprintf(c.App.Writer, "identity:         %s\n", id)
	}
	return nil
}

// pinned names an agent's policy: NAME (its latest version), or
// NAME@V (pinned) for one pinned to version V.
func pinned(name string, version int) string {
	if name == "" || version == 0 {
		return name
	}
	return fmt.Sprintf("%s@%d (pinned)", name, version)
}

// agentFlags are the flags of agent add and agent update.
func agentFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "runtime-policy", Usage: "runtime policy `NAME` (its latest version) or NAME@VERSION (pinned to that version)"},
		&cli.StringFlag{Name: "boot-policy", Usage: "boot policy `NAME` (its latest version) or NAME@VERSION (pinned to that version)"},
		&cli.StringFlag{Name: "pcr-policy", Usage: "PCR policy `NAME` (its latest version) or NAME@VERSION (pinned to that version)"},
		&cli.StringSliceFlag{Name: "identity", Usage: "workload identity `URI` to revoke on failure (repeatable)"},
		&cli.DurationFlag{Name: "interval", Usage: "attestation interval (default: the verifier's)"},
	}
}

// updateRequest is agent update's flags: only those given change anything.
func updateRequest(c *cli.Context) (verifier.UpdateRequest, error) {
	var req verifier.UpdateRequest
	if c.IsSet("runtime-policy") {
		v := c.String("runtime-policy")
		req.RuntimePolicy = &v
	}
	if c.IsSet("boot-policy") {
		v := c.String("boot-policy")
		req.BootPolicy = &v
	}
	if c.IsSet("pcr-policy") {
		v := c.String("pcr-policy")
		req.PCRPolicy = &v
	}
	if c.IsSet("identity") {
		// --identity "" alone removes every identity.
		ids := []string{}
		for _, id := range c.StringSlice("identity") {
			if id != "" {
				ids = append(ids, id)
			}
		}
		req.Identities = &ids
	}
	if c.IsSet("interval") {
		v := c.Duration("interval")
		req.Interval = &v
	}
	if req == (verifier.UpdateRequest{}) {
		return req, badInputf("agent update: nothing to update: give --runtime-policy, --boot-policy, --pcr-policy, --identity or --interval")
	}
	return req, nil
}

func tenantAgentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "agents admitted to the verifier",
		Subcommands: []*cli.Command{
			tenantCmd("add", "admit an agent for continuous attestation", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				a, err := client.Admit(c.Context, verifier.AdmitRequest{
					AgentID:       id,
					RuntimePolicy: c.String("runtime-policy"),
					BootPolicy:    c.String("boot-policy"),
					PCRPolicy:     c.String("pcr-policy"),
					Identities:    c.StringSlice("identity"),
					Interval:      c.Duration("interval"),
				})
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}, agentFlags()...),
			tenantCmd("update", "change an agent's policies, identities or interval; flags not given keep theirs (--runtime-policy \"\" removes that policy, --identity \"\" every identity)", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				req, err := updateRequest(c)
				if err != nil {
					return err
				}
				a, err := client.Update(c.Context, id, req)
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}, agentFlags()...),
			tenantCmd("status", "show an agent's attestation state", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				a, err := client.Status(c.Context, id)
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}),
			tenantCmd("list", "list admitted agents", "", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, _ string) error {
				as, err := client.List(c.Context)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, as)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "AGENT\tSTATE\tREASON\tATTESTATIONS\tLAST ATTESTED")
				for _, a := range as {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", a.ID, a.State, a.Reason, a.Attestations, a.LastAttestedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			}),
			tenantCmd("delete", "remove an agent from the verifier", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				if err := client.Delete(c.Context, id); err != nil {
					return apiInputError(err)
				}
				return printDone(c, map[string]any{"agent_id": id, "state": "deleted"}, "deleted %s", id)
			}),
			tenantCmd("history", "show what happened to an agent: admissions, verdicts, failures, reboots, revocations and their delivery, operators' actions", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				since, err := parseSince(c.String("since"), time.Now())
				if err != nil {
					return badInput(err)
				}
				h, err := client.History(c.Context, id, since, c.Int("limit"))
				if err != nil {
					return apiInputError(err)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, h)
				}
				return printHistory(c.App.Writer, h.Entries)
			},
				&cli.StringFlag{Name: "since", Usage: "only what happened in the last `D` (e.g. 24h) or since a time (RFC 3339)"},
				&cli.IntFlag{Name: "limit", Usage: "at most the newest `N` entries (default: all kept)"}),
			tenantCmd("readmit", "put a failed agent back into attestation", "ID", verifierAdmin, func(c *cli.Context, client *verifier.AdminClient, id string) error {
				a, err := client.Readmit(c.Context, id)
				if err != nil {
					return apiInputError(err)
				}
				return printAgent(c, a)
			}),
		},
	}
}

// parseSince reads --since: a duration back from now, or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: a duration back from now must not be negative", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration (24h) or an RFC 3339 time", v)
	}
	return t, nil
}

// printHistory prints one line an entry: when, what, and its details.
func printHistory(w io.Writer, hist []verifier.HistoryEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tWHAT\tDETAIL")
	for _, h := range hist {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h.At.UTC().Format(time.RFC3339), h.Kind, historyDetail(h))
	}
	return tw.Flush()
}

func historyDetail(h verifier.HistoryEntry) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	if h.Operator != "" {
		add("by %s", h.Operator)
	}
	switch h.Kind {
	case verifier.HistoryState:
		add("%s → %s", h.From, h.To)
	case verifier.HistoryFailure:
		add("%s %s", h.Reason, h.Check)
		if h.IMA != nil {
			add("IMA entry %d %s (%s)", h.IMA.Index, h.IMA.Path, h.IMA.Digest)
		} else {
			add("%s", h.Detail)
		}
	case verifier.HistoryUpdated:
		add("%s", h.Detail)
		// The summary names the policies and interval already.
		return strings.Join(parts, "; ")
	case verifier.HistoryReboot:
		add("reset count %d", h.ResetCount)
	case verifier.HistoryVerdicts:
		if v := h.Verdicts; v != nil {
			add("%d passed from %s", v.Count, v.From.UTC().Format(time.RFC3339))
		}
	case verifier.HistoryRevocation, verifier.HistoryDelivered:
		if e := h.Event; e != nil {
			add("%s %s", e.Type, e.ID)
		}
		sinks := slices.Sorted(maps.Keys(h.Deliveries))
		for _, sink := range sinks {
			d := h.Deliveries[sink]
			switch {
			case d.Delivered:
				add("delivered to %s at %s", sink, d.DeliveredAt.UTC().Format(time.RFC3339))
			case d.LastError != "":
				add("not yet delivered to %s: %d attempts, last: %s", sink, d.Attempts, d.LastError)
			default:
				add("pending for %s", sink)
			}
		}
	}
	if h.RuntimePolicy != "" {
		add("runtime policy %s", h.RuntimePolicy)
	}
	if h.BootPolicy != "" {
		add("boot policy %s", h.BootPolicy)
	}
	if h.PCRPolicy != "" {
		add("PCR policy %s", h.PCRPolicy)
	}
	if h.IntervalText != "" {
		add("interval %s", h.IntervalText)
	}
	return strings.Join(parts, "; ")
}
