package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/agent"
	"github.com/vigil-attest/vigil/cmd/vigil/internal/loopback"
	"github.com/vigil-attest/vigil/internal/tlsutil"
	"github.com/vigil-attest/vigil/internal/wire"
	"github.com/vigil-attest/vigil/tpmsim/simhost"
)

// TestLeanEvidenceIsTheAgents: for the same host (TPM, AK, IMA list, boot
// log) and the same challenge, the lean generator's request carries the
// evidence the agent's own Attester.Collect makes — every field equal but
// the quote's clock and the signature over it, which verifies with the AK
// — posted to the agent's path with the nonce in the agent's header.
func TestLeanEvidenceIsTheAgents(t *testing.T) {
	for _, akAlg := range []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgRSA} {
		t.Run(map[tpm2.TPMAlgID]string{tpm2.TPMAlgECC: "ecc", tpm2.TPMAlgRSA: "rsa"}[akAlg], func(t *testing.T) {
			testLeanEvidence(t, akAlg)
		})
	}
}

func testLeanEvidence(t *testing.T, akAlg tpm2.TPMAlgID) {
	ctx := context.Background()
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lb, err := loopback.Start(dir, "Test Manufacturer", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	boot, err := simhost.NewBootLog(simhost.BootConfig{SecureBoot: true})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := makePool(filepath.Join(dir, "pool"))
	if err != nil {
		t.Fatal(err)
	}
	table, err := simhost.NewIMATable(simhost.FormatBinary, pool)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHost(ctx, dir, "eq-", 7, lb.Manufacturer, nil, boot, table)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := tlsutil.ClientConfig(filepath.Join(lb.TLSDir, tlsutil.CACert), "", "")
	if err != nil {
		t.Fatal(err)
	}
	e := &agent.Enroller{Open: h.open, DataDir: filepath.Join(h.dir, "agent"), RegistrarURL: lb.RegistrarURL,
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}, AgentID: h.id,
		EKAlg: tpm2.TPMAlgECC, AKAlg: akAlg, Log: quiet}
	if _, err := e.Enroll(ctx); err != nil {
		t.Fatal(err)
	}
	fleet := &leanFleet{table: table, url: "https://127.0.0.1:1", tls: clientTLS, bootLog: boot.Bytes(), entries: 20, hosts: 1}
	if err := h.prepareLean(fleet); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := h.measureLean(ctx, fleet); err != nil {
			t.Fatal(err)
		}
	}
	// The agent reads the same list and boot log from files.
	imaPath, bootPath := filepath.Join(dir, "ima"), filepath.Join(dir, "boot")
	if err := os.WriteFile(imaPath, h.mem.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootPath, boot.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	att := &agent.Attester{Open: h.open, DataDir: filepath.Join(h.dir, "agent"), VerifierURLs: []string{fleet.url},
		BootLogPath: bootPath, IMALogPath: imaPath, Log: quiet}
	if err := att.Prepare(); err != nil {
		t.Fatal(err)
	}
	pub, err := h.ak.Public.Contents()
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []wire.Challenge{
		// Steady state: PCRs 0-10 of sha256, the entries from 21 on.
		{AgentID: h.id, PCRSelection: tpm2.Marshal(selection(tpm2.TPMAlgSHA256, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)), IMAOffset: 21, WantIMA: true},
		// Everything: the list from 0, the boot log, two banks.
		{AgentID: h.id, PCRSelection: tpm2.Marshal(tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0xff, 0x04, 0}}, {Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0x07, 0}}}}),
			WantIMA: true, WantBootLog: true},
		// Nothing new in the list; no runtime policy.
		{AgentID: h.id, PCRSelection: tpm2.Marshal(selection(tpm2.TPMAlgSHA256, 10)), IMAOffset: uint64(h.mem.Len()), WantIMA: true},
		{AgentID: h.id, PCRSelection: tpm2.Marshal(selection(tpm2.TPMAlgSHA256, 7)), IMAOffset: 3},
	} {
		ch.Nonce = make([]byte, 32)
		rand.Read(ch.Nonce)
		want, err := att.Collect(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		h.lean.setChallenge(viewOf(&ch))
		if err := h.collectLean(ctx, fleet); err != nil {
			t.Fatal(err)
		}
		// The request is the agent's: its path, its nonce header, the body.
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(h.lean.req)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(req.Body)
		if req.Method != http.MethodPost || req.URL.Path != wire.EvidencePath(h.id) || req.Header.Get(wire.NonceHeader) != hex.EncodeToString(ch.Nonce) ||
			req.Header.Get("Content-Type") != wire.ContentType || req.ContentLength != int64(len(body)) || !bytes.Equal(body, h.lean.body) {
			t.Fatalf("request %s %s %v, %d bytes", req.Method, req.URL, req.Header, len(body))
		}
		var got wire.Evidence
		if err := wire.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got.AgentID != want.AgentID || !bytes.Equal(got.Nonce, want.Nonce) || got.IMAOffset != want.IMAOffset ||
			!bytes.Equal(got.IMA, want.IMA) || !bytes.Equal(got.BootLog, want.BootLog) || !reflect.DeepEqual(got.PCRs, want.PCRs) {
			t.Fatalf("challenge %+v:\nlean  %+v\nagent %+v", ch, got, want)
		}
		// The agent's evidence, encoded, is the lean one but for the quote
		// and signature.
		want.Quote, want.Signature = got.Quote, got.Signature
		if enc, _ := wire.Marshal(want); !bytes.Equal(enc, body) {
			t.Errorf("the agent's evidence encodes to\n%x\nthe lean generator's is\n%x", enc, body)
		}
		checkQuote(t, pub, got, want.PCRs, ch.Nonce)
	}
}

func selection(alg tpm2.TPMAlgID, pcrs ...int) tpm2.TPMLPCRSelection {
	b := make([]byte, 3)
	for _, p := range pcrs {
		b[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: b}}}
}

// checkQuote checks what the verifier's signature and digest checks do:
// the AK's signature over the quote, the nonce in it, the PCR digest of
// the values sent.
func checkQuote(t *testing.T, pub *tpm2.TPMTPublic, ev wire.Evidence, pcrs map[uint16]map[int][]byte, nonce []byte) {
	t.Helper()
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(ev.Quote)
	switch k := key.(type) {
	case *rsa.PublicKey:
		s, err := sig.Signature.RSASSA()
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], s.Sig.Buffer); err != nil {
			t.Fatalf("signature: %v", err)
		}
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			t.Fatal(err)
		}
		der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)})
		if !ecdsa.VerifyASN1(k, digest[:], der) {
			t.Fatal("signature does not verify")
		}
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Quote)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(attest.ExtraData.Buffer, nonce) {
		t.Errorf("quote nonce %x, want %x", attest.ExtraData.Buffer, nonce)
	}
	q, err := attest.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, s := range q.PCRSelect.PCRSelections {
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					h.Write(pcrs[uint16(s.Hash)][i*8+bit])
				}
			}
		}
	}
	if !bytes.Equal(h.Sum(nil), q.PCRDigest.Buffer) {
		t.Error("the PCR values do not hash to the quote's digest")
	}
}

// TestRunAgentGenerator is a short bench with the agent's own code
// attesting, as replicas run it: every agent ends attesting, with no
// error.
func TestRunAgentGenerator(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	sum, err := Run(context.Background(), Options{
		Agents: 3, Duration: 2 * time.Second, Interval: time.Second, IMAEntries: 5,
		AKAlg: tpm2.TPMAlgECC, Dir: t.TempDir(), LoadGenerator: "agent",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Errors) != 0 || sum.Attesting != 3 || sum.Verdicts == 0 || sum.LoadGenerator != "agent" {
		t.Errorf("errors %v, %d attesting, %d verdicts, generator %q", sum.Errors, sum.Attesting, sum.Verdicts, sum.LoadGenerator)
	}
}

// TestRunRates is a short run with two rates: each step is measured and
// judged, and the run summed up.
func TestRunRates(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet for a few seconds")
	}
	var progress strings.Builder
	sum, err := Run(context.Background(), Options{
		Agents: 4, Duration: time.Second, Rates: []float64{4, 8}, IMAEntries: 3,
		AKAlg: tpm2.TPMAlgECC, Dir: t.TempDir(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Errors) != 0 || sum.Attesting != 4 {
		t.Errorf("errors %v, %d attesting", sum.Errors, sum.Attesting)
	}
	if len(sum.Steps) != 2 || sum.Saturation == nil {
		t.Fatalf("steps %+v, saturation %+v", sum.Steps, sum.Saturation)
	}
	// Admitted with the slowest step's interval (4 hosts at 4/s: 1 s).
	if sum.IntervalMS != 1000 {
		t.Errorf("admitted every %d ms, want 1000", sum.IntervalMS)
	}
	for i, st := range sum.Steps {
		if st.OfferedPerSec != []float64{4, 8}[i] || st.IntervalMS != []float64{1000, 500}[i] || st.Verdicts == 0 || st.Attestations < st.Verdicts || st.Limit == "" || st.LimitReason == "" {
			t.Errorf("step %d: %+v", i, st)
		}
	}
	if last := sum.Steps[1]; sum.Verdicts != last.Verdicts || sum.OfferedPerSec != last.OfferedPerSec || sum.Limit != last.Limit {
		t.Errorf("the summary is not the last step's: %+v", sum)
	}
	if !strings.Contains(progress.String(), "step 2: offered 8/s") {
		t.Errorf("no step in the progress:\n%s", progress.String())
	}
}

func TestOptionsRatesRefused(t *testing.T) {
	for _, o := range []Options{
		{Rates: []float64{100}, Interval: time.Second},
		{Rates: []float64{0}},
		{Agents: 10, Rates: []float64{10000}},
		{LoadGenerator: "fast"},
		{LoadGenerator: "agent", Rates: []float64{10, 20}},
		{LoadGenerator: "agent", Sweep: true},
		{LoadGenerator: "agent", Agents: 10, Rates: []float64{1000}},
		{Rates: []float64{10, 20}, CPUProfile: "p", VerifierExe: "vigil"},
		{Sweep: true, CPUProfile: "p", VerifierExe: "vigil"},
		{LoadGenerator: "lean", Replicas: 2, Store: "postgres://x", VerifierExe: "vigil"},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}
