package verifier

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/ima"
	"github.com/vigil-attest/vigil/internal/store"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
	"github.com/vigil-attest/vigil/tpmsim/soft"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// fleetAKs serves the AKs of the test hosts.
type fleetAKs struct {
	mu      sync.Mutex
	keys    map[string]*evidence.AK
	fetches map[string]int
}

func (f *fleetAKs) AK(_ context.Context, id string) (*evidence.AK, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fetches == nil {
		f.fetches = map[string]int{}
	}
	f.fetches[id]++
	if k, ok := f.keys[id]; ok {
		return k, nil
	}
	return nil, ErrNotEnrolled
}

// serviceHost is a soft-TPM host that attests through a Service the way the
// agent does: challenge, quote, the IMA entries from the asked offset on.
type serviceHost struct {
	id   string
	tpm  agent.TPM
	ak   agent.AKBlob
	list simhost.IMALog
	// good are files the runtime policy allows, appended in turn.
	good []simhost.IMAEntry
	next int
}

// fleet is a verifier store with a runtime policy "rt" allowing every
// host's boot aggregate and goodFiles files per host.
type fleet struct {
	tb    testing.TB
	db    *store.DB
	st    BoltStore
	aks   *fleetAKs
	hosts []*serviceHost
}

func newFleet(t testing.TB, hosts, goodFiles int) *fleet {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fleet{tb: t, db: db, st: BoltStore{DB: db}, aks: &fleetAKs{keys: map[string]*evidence.AK{}}}
	rp := ima.NewRuntimePolicy()
	for i := range hosts {
		st, err := soft.New(soft.Options{EKAlgs: []tpm2.TPMAlgID{tpm2.TPMAlgECC}})
		if err != nil {
			t.Fatal(err)
		}
		h := &serviceHost{id: fmt.Sprintf("host-%d", i), tpm: agent.NewSoftTPM(st)}
		if h.ak, err = h.tpm.CreateAK(ctx, tpm2.TPMAlgECC, tpm2.TPMAlgECC); err != nil {
			t.Fatal(err)
		}
		pub, _ := h.ak.Public.Contents()
		key, err := evidence.NewAK(*pub)
		if err != nil {
			t.Fatal(err)
		}
		f.aks.keys[h.id] = key
		h.list = simhost.IMALog{Path: filepath.Join(t.TempDir(), "ima")}
		if _, err := h.list.Init(ctx, h.tpm); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(h.list.Path)
		boot, err := ima.ParseAll(data, ima.ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bd, _ := boot[0].Digest()
		rp.Digests["boot_aggregate"] = append(rp.Digests["boot_aggregate"], fmt.Sprintf("%x", bd.Digest))
		for j := range goodFiles {
			sum := sha256.Sum256([]byte(fmt.Sprint(h.id, j)))
			e := simhost.IMAEntry{Path: fmt.Sprintf("/usr/bin/%s-%d", h.id, j), FileDigest: sum[:]}
			rp.Digests[e.Path] = []string{fmt.Sprintf("%x", sum)}
			h.good = append(h.good, e)
		}
		f.hosts = append(f.hosts, h)
	}
	body, err := rp.JSON()
	if err != nil {
		t.Fatal(err)
	}
	svc := f.service(0)
	if _, err := svc.AddPolicy(ctx, CheckPolicy, "rt", PolicyRuntime, body); err != nil {
		t.Fatal(err)
	}
	return f
}

// service is a verifier over the fleet's store, as after a (re)start.
func (f *fleet) service(checkpoint time.Duration, configure ...func(*Config)) *Service {
	return newTestVerifier(f.tb, f.st, f.aks, checkpoint, configure...).Service()
}

func (f *fleet) admitAll(t *testing.T, svc *Service) {
	t.Helper()
	for _, h := range f.hosts {
		if _, err := svc.Admit(context.Background(), AdmitRequest{AgentID: h.id, RuntimePolicy: "rt"}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fleet) stored(t *testing.T, id string) Agent {
	t.Helper()
	a, err := f.st.GetAgent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// appendGood logs n more files the policy allows.
func (h *serviceHost) appendGood(t testing.TB, n int) {
	t.Helper()
	if err := h.list.Append(context.Background(), h.tpm, h.good[h.next:h.next+n]...); err != nil {
		t.Fatal(err)
	}
	h.next += n
}

// appendBad logs a file no policy allows.
func (h *serviceHost) appendBad(t testing.TB) {
	t.Helper()
	sum := sha256.Sum256([]byte("miner"))
	if err := h.list.Append(context.Background(), h.tpm, simhost.IMAEntry{Path: "/tmp/miner", FileDigest: sum[:]}); err != nil {
		t.Fatal(err)
	}
}

// attest runs one round: a challenge (started: as an agent just started),
// then the evidence for it.
func (h *serviceHost) attest(t testing.TB, svc *Service, started bool) (wire.Verdict, error) {
	t.Helper()
	ctx := context.Background()
	ch, err := svc.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id, Started: started})
	if err != nil {
		return wire.Verdict{}, err
	}
	return svc.Evidence(ctx, h.answer(t, ch))
}

// answer is the evidence the agent sends for ch.
func (h *serviceHost) answer(t testing.TB, ch wire.Challenge) wire.Evidence {
	t.Helper()
	ctx := context.Background()
	sel, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
	if err != nil {
		t.Fatal(err)
	}
	q, sig, err := h.tpm.Quote(ctx, h.ak, ch.Nonce, *sel)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := h.tpm.PCRRead(ctx, *sel)
	if err != nil {
		t.Fatal(err)
	}
	ev := wire.Evidence{AgentID: h.id, Nonce: ch.Nonce, Quote: q.Bytes(), Signature: tpm2.Marshal(sig),
		PCRs: map[uint16]map[int][]byte{}, IMAOffset: ch.IMAOffset}
	for bank, v := range pcrs {
		ev.PCRs[uint16(bank)] = v
	}
	data, _ := os.ReadFile(h.list.Path)
	p := ima.NewParser(data, ima.ParseOptions{})
	start, n := 0, uint64(0)
	for p.Next() {
		n++
		if n == ch.IMAOffset {
			start = p.Offset()
		}
	}
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	ev.IMA = data[start:]
	return ev
}

func mustAttest(t testing.TB, svc *Service, h *serviceHost, started bool) wire.Verdict {
	t.Helper()
	v, err := h.attest(t, svc, started)
	if err != nil || v.State != string(StateAttesting) {
		t.Fatalf("%s: verdict %+v, %v", h.id, v, err)
	}
	return v
}

func TestCheckpointDefersOnlyProgress(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 10)
	svc := f.service(time.Hour) // checkpoints only when the test calls one
	f.admitAll(t, svc)
	h := f.hosts[0]

	// pending → attesting is a change of state: stored before the answer.
	mustAttest(t, svc, h, true)
	if a := f.stored(t, h.id); a.State != StateAttesting || a.Attestations != 1 {
		t.Fatalf("stored after the first verdict: %s, %d attestations", a.State, a.Attestations)
	}
	// Progress waits for the checkpoint, but operators see it at once.
	h.appendGood(t, 3)
	mustAttest(t, svc, h, false)
	mustAttest(t, svc, h, false)
	if a := f.stored(t, h.id); a.Attestations != 1 || a.IMAEntries != 1 {
		t.Errorf("stored before the checkpoint: %d attestations, %d IMA entries; want 1, 1", a.Attestations, a.IMAEntries)
	}
	if a, _ := svc.Status(ctx, h.id); a.Attestations != 3 || a.IMAEntries != 4 {
		t.Errorf("status: %d attestations, %d IMA entries; want 3, 4", a.Attestations, a.IMAEntries)
	}
	if list, _ := svc.Agents(ctx); len(list) != 1 || list[0].Attestations != 3 {
		t.Errorf("agent list: %+v", list)
	}
	if n, err := svc.Checkpoint(ctx); err != nil || n != 1 {
		t.Fatalf("checkpoint: %d records, %v", n, err)
	}
	if a := f.stored(t, h.id); a.Attestations != 3 || a.IMAEntries != 4 {
		t.Errorf("stored after the checkpoint: %d attestations, %d IMA entries; want 3, 4", a.Attestations, a.IMAEntries)
	}
	if n, _ := svc.Checkpoint(ctx); n != 0 {
		t.Errorf("a second checkpoint wrote %d records, nothing had changed", n)
	}

	// A failure is stored, with its revocation event, before the answer.
	mustAttest(t, svc, h, false)
	h.appendBad(t)
	v, err := h.attest(t, svc, false)
	if err != nil || v.State != string(StateFailed) {
		t.Fatalf("tampered host: %+v, %v", v, err)
	}
	a := f.stored(t, h.id)
	if a.State != StateFailed || a.Reason != ReasonPolicyViolation || a.Attestations != 4 {
		t.Errorf("stored after the failure: %s %s, %d attestations", a.State, a.Reason, a.Attestations)
	}
	pending, err := f.st.PendingEvents(ctx)
	if err != nil || len(pending) != 1 || pending[0].Event.Data.AgentID != h.id {
		t.Errorf("outbox after the failure: %+v, %v", pending, err)
	}
	if n, _ := svc.Checkpoint(ctx); n != 0 {
		t.Errorf("checkpoint after a stored failure wrote %d records", n)
	}
}

func TestCheckpointDoesNotResurrectRemovedAgent(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 0)
	svc := f.service(time.Hour)
	f.admitAll(t, svc)
	h := f.hosts[0]
	mustAttest(t, svc, h, true)
	mustAttest(t, svc, h, false) // dirty
	if err := svc.Remove(ctx, h.id); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.Checkpoint(ctx); err != nil || n != 0 {
		t.Errorf("checkpoint after removal: %d records, %v", n, err)
	}
	if _, err := f.st.GetAgent(ctx, h.id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed agent in the store: %v", err)
	}
	if _, err := h.attest(t, svc, false); !isRefusal(err, RefusedForbidden) {
		t.Errorf("removed agent's challenge: %v, want 403", err)
	}
	// Admitted again, it starts afresh.
	f.admitAll(t, svc)
	if a, _ := svc.Status(ctx, h.id); a.State != StatePending || a.Attestations != 0 {
		t.Errorf("readmitted under the same ID: %+v", a)
	}
	mustAttest(t, svc, h, true)
}

func isRefusal(err error, kind RefusalKind) bool {
	var r *Refusal
	return errors.As(err, &r) && r.Kind == kind
}

// A crash loses at most the progress since the last checkpoint, and the
// restarted verifier picks up from there: it asks for the IMA list from the
// stored offset and the host passes.
func TestRestartResumesFromLastCheckpoint(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 1, 20)
	before := f.service(time.Hour)
	f.admitAll(t, before)
	h := f.hosts[0]
	mustAttest(t, before, h, true)
	h.appendGood(t, 5)
	mustAttest(t, before, h, false)
	if _, err := before.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	h.appendGood(t, 5)
	mustAttest(t, before, h, false)
	// The verifier dies here: the last verdict was never checkpointed.

	after := f.service(time.Hour)
	if err := after.Load(ctx); err != nil {
		t.Fatal(err)
	}
	ch, err := after.Challenge(ctx, wire.ChallengeRequest{AgentID: h.id})
	if err != nil {
		t.Fatal(err)
	}
	if ch.IMAOffset != 6 {
		t.Errorf("restarted verifier asks from IMA entry %d, want 6 (the last checkpoint)", ch.IMAOffset)
	}
	h.appendGood(t, 5)
	mustAttest(t, after, h, false)
	if a, _ := after.Status(ctx, h.id); a.IMAEntries != 16 || a.Attestations != 3 {
		t.Errorf("after the restart: %d IMA entries, %d attestations; want 16, 3", a.IMAEntries, a.Attestations)
	}
}

func TestLivenessWatchedFromMemory(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2, 0)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	svc := f.service(time.Hour)
	svc.Now, svc.Liveness = clock, time.Second
	f.admitAll(t, svc)
	talker, silent := f.hosts[0], f.hosts[1]

	mustAttest(t, svc, talker, true)
	now = now.Add(800 * time.Millisecond)
	mustAttest(t, svc, talker, false) // only in memory until a checkpoint
	now = now.Add(500 * time.Millisecond)
	n, err := svc.CheckLiveness(ctx)
	if err != nil || n != 1 {
		t.Fatalf("liveness at 1.3 s: failed %d, %v; want the silent host only", n, err)
	}
	if a := f.stored(t, silent.id); a.State != StateFailed || a.Reason != ReasonLivenessTimeout {
		t.Errorf("silent host stored as %s %s", a.State, a.Reason)
	}
	if a, _ := svc.Status(ctx, talker.id); a.State != StateAttesting {
		t.Errorf("host heard 0.5 s ago is %s", a.State)
	}
	now = now.Add(600 * time.Millisecond)
	if n, err := svc.CheckLiveness(ctx); err != nil || n != 1 {
		t.Fatalf("liveness at 1.9 s: failed %d, %v; want the talker, silent for 1.1 s", n, err)
	}
	if a := f.stored(t, talker.id); a.State != StateFailed || a.Attestations != 2 {
		t.Errorf("talker stored as %s after %d attestations; want failed after 2 (its record from memory)", a.State, a.Attestations)
	}
	svc.AutoRecover = RecoverNever
	if _, err := talker.attest(t, svc, false); !isRefusal(err, RefusedForbidden) {
		t.Errorf("failed host's challenge without auto-recovery: %v, want 403", err)
	}

	// A restarted verifier watches agents that never call it.
	if _, err := svc.Readmit(ctx, silent.id); err != nil {
		t.Fatal(err)
	}
	restarted := f.service(time.Hour, func(c *Config) { c.Now, c.Liveness = clock, time.Second })
	if n, err := restarted.CheckLiveness(ctx); err != nil || n != 0 {
		t.Fatalf("liveness at the restart: failed %d, %v", n, err)
	}
	now = now.Add(1100 * time.Millisecond)
	if n, err := restarted.CheckLiveness(ctx); err != nil || n != 1 {
		t.Fatalf("liveness 1.1 s after the restart: failed %d, %v; want the readmitted, silent host", n, err)
	}
}

// Verdicts, failures, removals and checkpoints at once: whatever the
// interleaving, once the last checkpoint is written the store holds every
// agent's newest record, and no checkpoint undid a failure.
func TestCheckpointsRaceVerdicts(t *testing.T) {
	ctx := context.Background()
	const rounds = 15
	f := newFleet(t, 6, rounds)
	svc := f.service(time.Millisecond)
	f.admitAll(t, svc)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(runCtx) }()

	var wg sync.WaitGroup
	for i, h := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustAttest(t, svc, h, true)
			for r := range rounds {
				switch {
				case i == 0 && r == rounds/2:
					h.appendBad(t)
					if v, err := h.attest(t, svc, false); err != nil || v.State != string(StateFailed) {
						t.Errorf("%s: tampered verdict %+v, %v", h.id, v, err)
					}
					return
				case i == 1 && r == rounds/2:
					if err := svc.Remove(ctx, h.id); err != nil {
						t.Error(err)
					}
					return
				}
				h.appendGood(t, 1)
				mustAttest(t, svc, h, false)
			}
		}()
	}
	wg.Wait()
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	for i, h := range f.hosts {
		stored, err := f.st.GetAgent(ctx, h.id)
		switch i {
		case 0:
			if err != nil || stored.State != StateFailed {
				t.Errorf("%s: stored %s, %v; want failed", h.id, stored.State, err)
			}
		case 1:
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: removed, but stored: %v", h.id, err)
			}
		default:
			mem, _ := svc.Status(ctx, h.id)
			if err != nil || stored.Attestations != rounds+1 || stored.Attestations != mem.Attestations || stored.IMAEntries != mem.IMAEntries {
				t.Errorf("%s: stored %d attestations / %d entries, memory %d / %d, want %d attestations (%v)",
					h.id, stored.Attestations, stored.IMAEntries, mem.Attestations, mem.IMAEntries, rounds+1, err)
			}
		}
	}
}

func (f *fleetAKs) fetched(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches[id]
}

// waitFetched waits until every host's AK was fetched once.
func (f *fleet) waitFetched(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, h := range f.hosts {
		for f.aks.fetched(h.id) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: AK not prefetched", h.id)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// AKs are fetched ahead of the first evidence, on admission and for every
// agent a restarted verifier loads, and the evidence then fetches none.
func TestAKsPrefetched(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 3, 0)
	svc := f.service(time.Hour)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(runCtx) }()
	for !svc.running() {
		time.Sleep(time.Millisecond)
	}
	f.admitAll(t, svc)
	f.waitFetched(t)
	for _, h := range f.hosts {
		mustAttest(t, svc, h, true)
		if n := f.aks.fetched(h.id); n != 1 {
			t.Errorf("%s: AK fetched %d times, want once (on admission)", h.id, n)
		}
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}

	f.aks.fetches = nil
	restarted := f.service(time.Hour)
	runCtx, stop = context.WithCancel(ctx)
	defer stop()
	go func() { ran <- restarted.Run(runCtx) }()
	f.waitFetched(t)
	for _, h := range f.hosts {
		mustAttest(t, restarted, h, false)
		if n := f.aks.fetched(h.id); n != 1 {
			t.Errorf("%s: AK fetched %d times after the restart, want once (on load)", h.id, n)
		}
	}
}

func TestMetricsCountStatesFromMemory(t *testing.T) {
	f := newFleet(t, 3, 0)
	svc := f.service(time.Hour)
	m := NewMetrics(svc)
	svc.OnVerdict = m.ObserveVerdict
	f.admitAll(t, svc)
	mustAttest(t, svc, f.hosts[0], true)
	mustAttest(t, svc, f.hosts[1], true)
	f.hosts[1].appendBad(t)
	if v, err := f.hosts[1].attest(t, svc, false); err != nil || v.State != string(StateFailed) {
		t.Fatalf("tampered host: %+v, %v", v, err)
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	seen := map[string]bool{}
	for _, fam := range families {
		seen[fam.GetName()] = true
		for _, mt := range fam.GetMetric() {
			label := ""
			for _, l := range mt.GetLabel() {
				label += l.GetName() + "=" + l.GetValue() + ","
			}
			switch fam.GetName() {
			case "vigil_verifier_agents":
				got["agents:"+label] = mt.GetGauge().GetValue()
			case "vigil_verifier_verdicts_total":
				got["verdicts:"+label] = mt.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"agents:state=pending,":                         1,
		"agents:state=attesting,":                       1,
		"agents:state=failed,":                          1,
		"verdicts:reason=,result=pass,":                 2,
		"verdicts:reason=policy_violation,result=fail,": 1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines"} {
		if !seen[name] {
			t.Errorf("metric %s missing", name)
		}
	}
}
