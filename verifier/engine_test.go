package verifier

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// engineHost is a soft-TPM host with an IMA list and an AK, and a runtime
// policy made from that list: what the engine needs to decide.
type engineHost struct {
	st    *soft.TPM
	tpm   agent.TPM
	ak    agent.AKBlob
	key   *evidence.AK
	list  simhost.IMALog
	agent Agent
}

func newEngineHost(t *testing.T, svc *Service) *engineHost {
	t.Helper()
	ctx := context.Background()
	st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
	if err != nil {
		t.Fatal(err)
	}
	h := &engineHost{st: st, tpm: agent.NewSoftTPM(st)}
	if h.ak, err = h.tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC); err != nil {
		t.Fatal(err)
	}
	pub, _ := h.ak.Public.Contents()
	if h.key, err = evidence.NewAK(*pub); err != nil {
		t.Fatal(err)
	}
	h.list = simhost.IMALog{Path: filepath.Join(t.TempDir(), "ima")}
	if _, err := h.list.Init(ctx, h.tpm); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(h.list.Path)
	rp, err := ima.PolicyFromLog(data, ima.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := rp.JSON()
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, body); err != nil {
		t.Fatal(err)
	}
	h.agent = Agent{ID: "h", RuntimePolicy: "rt", State: StatePending}
	return h
}

// answer builds the evidence an honest agent sends for asked.
func (h *engineHost) answer(t *testing.T, asked Asked) wire.Evidence {
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
	ev := wire.Evidence{AgentID: h.agent.ID, Nonce: asked.Nonce, Quote: q.Bytes(), Signature: tpm2.Marshal(sig),
		PCRs: map[uint16]map[int][]byte{}, IMAOffset: asked.IMAOffset}
	for bank, v := range pcrs {
		ev.PCRs[uint16(bank)] = v
	}
	data, _ := os.ReadFile(h.list.Path)
	ents, err := ima.ParseAll(data, ima.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Re-encode entries from the offset on: the agent sends exactly those.
	for _, e := range ents[asked.IMAOffset:] {
		ev.IMA = ima.AppendBinary(ev.IMA, &e, binary.LittleEndian)
	}
	return ev
}

func asked(a Agent, nonce string) Asked {
	return Asked{Nonce: []byte(nonce), Selection: Selection(a, nil), IMAOffset: a.IMAEntries, WantIMA: a.RuntimePolicy != ""}
}

func TestEngineDecides(t *testing.T) {
	svc, _ := newTestService(t)
	now := time.Now()
	h := newEngineHost(t, svc)
	// The policies are resolved at each check, as the service does: a
	// host created later stores a new version of "rt".
	var engine Engine
	check := func(a Agent, key *evidence.AK, ask Asked, ev wire.Evidence) Outcome {
		return engine.Check(a, key, ask, ev, svc.policies.resolve(context.Background(), svc.Store, a), now)
	}

	// An honest first attestation.
	out := check(h.agent, h.key, asked(h.agent, "n1"), h.answer(t, asked(h.agent, "n1")))
	if out.Failure != nil || out.Agent.State != StateAttesting || out.Agent.IMAEntries != 1 || out.Agent.Clock == nil {
		t.Fatalf("honest evidence: %+v, %v", out.Agent, out.Failure)
	}
	good := out.Agent

	other := newEngineHost(t, svc)
	for _, tc := range []struct {
		name   string
		agent  Agent
		key    *evidence.AK
		tamper func(*wire.Evidence)
		reason Reason
		check  string
	}{
		// Evidence that does not prove it is the agent's TPM answering this
		// challenge is refused: anyone could have sent it.
		{"answers another challenge", good, h.key, func(ev *wire.Evidence) { ev.Nonce = []byte("other") }, "", "nonce_mismatch"},
		{"signed by another AK", good, other.key, nil, "", "bad_signature"},
		{"garbage quote", good, h.key, func(ev *wire.Evidence) { ev.Quote = []byte("garbage") }, "", "malformed_quote"},
		{"altered PCR value", good, h.key, func(ev *wire.Evidence) { ev.PCRs[uint16(tpm2.TPMAlgSHA256)][10][0] ^= 1 }, ReasonInvalidEvidence, "pcr_digest_mismatch"},
		{"IMA from the wrong entry", good, h.key, func(ev *wire.Evidence) { ev.IMAOffset = 0 }, ReasonInvalidEvidence, "ima_offset_mismatch"},
		{"reset count rolled back", func() Agent {
			a := good
			c := *a.Clock
			c.ResetCount += 5
			a.Clock = &c
			return a
		}(), h.key, nil, ReasonInvalidEvidence, "reset_count_rollback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ask := asked(tc.agent, "n2")
			ev := h.answer(t, ask)
			if tc.tamper != nil {
				tc.tamper(&ev)
			}
			out := check(tc.agent, tc.key, ask, ev)
			if tc.reason == "" {
				if out.Refused == nil || out.Refused.Check != tc.check || out.Failure != nil {
					t.Fatalf("got refusal %v, failure %v; want refused %s", out.Refused, out.Failure, tc.check)
				}
				if out.Agent.State != tc.agent.State || out.Agent.Attestations != tc.agent.Attestations {
					t.Errorf("a refusal changed the record: %+v", out.Agent)
				}
				return
			}
			if out.Failure == nil || out.Failure.Reason != tc.reason || out.Failure.Check != tc.check {
				t.Fatalf("got %v, want %s/%s", out.Failure, tc.reason, tc.check)
			}
			if out.Agent.State != StateFailed {
				t.Errorf("state %s after a failure", out.Agent.State)
			}
		})
	}

	t.Run("quote over other PCRs than asked", func(t *testing.T) {
		ask := asked(good, "n3")
		wrong := ask
		wrong.Selection = evidence.Selection([]int{0}, Bank)
		ev := h.answer(t, wrong)
		out := check(good, h.key, ask, ev)
		if out.Failure == nil || out.Failure.Check != "pcr_selection_mismatch" {
			t.Fatalf("got %v", out.Failure)
		}
	})

	t.Run("reboot without fresh evidence asks for it", func(t *testing.T) {
		if err := h.st.Reboot(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := h.list.Init(context.Background(), h.tpm); err != nil {
			t.Fatal(err)
		}
		ask := asked(good, "n4") // resumes at entry 1: the agent did not restart
		out := check(good, h.key, ask, h.answer(t, ask))
		if out.Failure != nil || !out.Reboot || out.Agent.Attestations != good.Attestations {
			t.Fatalf("reboot: %+v reboot=%v failure=%v", out.Agent, out.Reboot, out.Failure)
		}
		full := ask
		full.IMAOffset = 0
		out = check(good, h.key, full, h.answer(t, full))
		if out.Failure != nil || out.Reboot || out.Agent.IMAEntries != 1 || out.Agent.Clock.ResetCount != good.Clock.ResetCount+1 {
			t.Fatalf("fresh evidence after the reboot: %+v %v", out.Agent, out.Failure)
		}
	})
}

func TestMarshalSelectionIsTPMLPCRSelection(t *testing.T) {
	for _, a := range []Agent{{RuntimePolicy: "r"}, {BootPolicy: "b"}, {RuntimePolicy: "r", BootPolicy: "b"}} {
		sel := Selection(a, nil)
		if got, want := marshalSelection(sel), tpm2.Marshal(sel); !bytes.Equal(got, want) {
			t.Errorf("%+v: marshalSelection %x, tpm2.Marshal %x", a, got, want)
		}
		back, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](marshalSelection(sel))
		if err != nil || !sameSelection(*back, sel) {
			t.Errorf("%+v: round trip %v", a, err)
		}
	}
}
