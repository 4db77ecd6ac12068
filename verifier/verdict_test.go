package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/bootpolicy"
	"github.com/vigil-attest/vigil/verifier/evidence"
	"github.com/vigil-attest/vigil/verifier/verdict"
)

// bootedHost is a soft-TPM host that booted with a simulated UEFI log
// and keeps an IMA list, with the policies its known-good logs imply.
type bootedHost struct {
	tpm     agent.TPM
	ak      agent.AKBlob
	key     *evidence.AK
	bootLog []byte
	list    simhost.IMALog
	pol     Policies
}

func newBootedHost(t *testing.T) *bootedHost {
	t.Helper()
	ctx := context.Background()
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	h := &bootedHost{tpm: agent.NewSoftTPM(st)}
	bl, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bl.Boot(ctx, h.tpm); err != nil {
		t.Fatal(err)
	}
	h.bootLog = bl.Bytes()
	h.list = simhost.IMALog{Path: filepath.Join(t.TempDir(), "ima")}
	if _, err := h.list.Init(ctx, h.tpm); err != nil {
		t.Fatal(err)
	}
	h.measure(t, "/usr/bin/sshd")
	if h.ak, err = h.tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC); err != nil {
		t.Fatal(err)
	}
	pub, _ := h.ak.Public.Contents()
	if h.key, err = evidence.NewAK(*pub); err != nil {
		t.Fatal(err)
	}
	if h.pol.Boot, err = bootpolicy.FromLog(h.bootLog, bootpolicy.LogOptions{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(h.list.Path)
	rp, err := ima.PolicyFromLog(data, ima.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.pol.Runtime, err = ima.CompilePolicy(rp); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *bootedHost) measure(t *testing.T, path string) {
	t.Helper()
	sum := sha256.Sum256([]byte(path))
	if err := h.list.Append(context.Background(), h.tpm, simhost.IMAEntry{Path: path, FileDigest: sum[:]}); err != nil {
		t.Fatal(err)
	}
}

// evidence is what an honest agent sends for a first, complete attestation.
func (h *bootedHost) evidence(t *testing.T, asked Asked) wire.Evidence {
	t.Helper()
	ctx := context.Background()
	q, sig, err := h.tpm.Quote(ctx, h.ak, asked.Nonce, asked.Selection)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := h.tpm.PCRRead(ctx, asked.Selection)
	if err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile(h.list.Path)
	if err != nil {
		t.Fatal(err)
	}
	ev := wire.Evidence{AgentID: "h", Nonce: asked.Nonce, Quote: q.Bytes(), Signature: tpm2.Marshal(sig),
		PCRs: map[uint16]map[int][]byte{}, BootLog: h.bootLog, IMA: list}
	for bank, v := range pcrs {
		ev.PCRs[uint16(bank)] = v
	}
	return ev
}

// offline judges evidence as `vigil quote verify` does: the same bytes,
// through verdict.Judge.
func offline(t *testing.T, key *evidence.AK, ev wire.Evidence, pol Policies) verdict.Report {
	t.Helper()
	q, err := evidence.ParseQuote(ev.Quote, ev.Signature)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := evidence.PCRValues{}
	for bank, v := range ev.PCRs {
		pcrs[tpm2.TPMAlgID(bank)] = v
	}
	return verdict.Judge(verdict.Input{
		AK: key, Quote: q, Expect: evidence.Expect{Nonce: ev.Nonce, PCRs: pcrs},
		BootLog: ev.BootLog, BootPolicy: pol.Boot, IMALog: ev.IMA, RuntimePolicy: pol.Runtime,
	})
}

// The same evidence gets the same verdict online (Engine.Check) and
// offline (verdict.Judge, which `vigil quote verify` runs): a pass, policy
// violations and evidence that does not hold together.
func TestSameVerdictOnlineAndOffline(t *testing.T) {
	a := Agent{ID: "h", BootPolicy: "boot", RuntimePolicy: "runtime", State: StatePending}
	ask := Asked{Nonce: []byte("nonce for the same verdict test"), Selection: Selection(a, nil), WantIMA: true, WantBootLog: true}

	for _, tc := range []struct {
		name string
		// prepare changes the host or its policies before the evidence.
		prepare func(t *testing.T, h *bootedHost)
		// tamper changes the evidence on its way.
		tamper func(ev *wire.Evidence)
		reason Reason
		check  string
	}{
		{name: "pass"},
		{
			name:    "file not in the runtime policy",
			prepare: func(t *testing.T, h *bootedHost) { h.measure(t, "/tmp/cryptominer") },
			reason:  ReasonPolicyViolation, check: "ima_not-in-policy",
		},
		{
			name: "boot loader not in the boot policy",
			prepare: func(t *testing.T, h *bootedHost) {
				b, _ := json.Marshal(h.pol.Boot)
				var strict bootpolicy.Policy
				json.Unmarshal(b, &strict)
				strict.BootDigests = strict.BootDigests[:len(strict.BootDigests)-1]
				b, _ = json.Marshal(&strict)
				p, err := bootpolicy.Parse(b)
				if err != nil {
					t.Fatal(err)
				}
				h.pol.Boot = p
			},
			reason: ReasonPolicyViolation, check: string(bootpolicy.ReasonBootDigest),
		},
		{
			name:   "PCR value that is not the quoted one",
			tamper: func(ev *wire.Evidence) { ev.PCRs[uint16(tpm2.TPMAlgSHA256)][7][0] ^= 1 },
			reason: ReasonInvalidEvidence, check: string(evidence.ReasonPCRDigestMismatch),
		},
		{
			name: "boot log of another boot",
			tamper: func(ev *wire.Evidence) {
				other, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: false})
				if err != nil {
					panic(err)
				}
				ev.BootLog = other.Bytes()
			},
			reason: ReasonInvalidEvidence, check: "boot_log_replay_mismatch",
		},
		{
			name: "IMA list that does not reach the quoted PCR 10",
			tamper: func(ev *wire.Evidence) {
				// The last entry left out: no prefix of the list replays
				// to the PCR 10 the TPM quoted.
				ents, _ := ima.ParseAll(ev.IMA, ima.ParseOptions{})
				ev.IMA = nil
				for _, x := range ents[:len(ents)-1] {
					ev.IMA = ima.AppendBinary(ev.IMA, &x, binary.LittleEndian)
				}
			},
			reason: ReasonInvalidEvidence, check: "ima_pcr10-mismatch",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newBootedHost(t)
			if tc.prepare != nil {
				tc.prepare(t, h)
			}
			ev := h.evidence(t, ask)
			if tc.tamper != nil {
				tc.tamper(&ev)
			}
			on := new(Engine).Check(a, h.key, ask, ev, h.pol, time.Now())
			off := offline(t, h.key, ev, h.pol)
			if on.Refused != nil {
				t.Fatalf("online refused the evidence: %v", on.Refused)
			}
			if tc.check == "" {
				if on.Failure != nil || off.Verdict != nil || on.Agent.State != StateAttesting {
					t.Fatalf("online %v (state %s), offline %v; want both to pass", on.Failure, on.Agent.State, off.Verdict)
				}
				return
			}
			if on.Failure == nil || on.Failure.Reason != tc.reason || on.Failure.Check != tc.check {
				t.Fatalf("online: %v, want %s/%s", on.Failure, tc.reason, tc.check)
			}
			if off.Verdict == nil || !reflect.DeepEqual(off.Verdict, on.Failure) {
				t.Fatalf("offline verdict %v, online %v", off.Verdict, on.Failure)
			}
			if len(off.Failures) == 0 || string(off.Failures[0].Reason) != tc.check {
				t.Fatalf("offline report lists %v first, want %s", off.Failures, tc.check)
			}
		})
	}
}
