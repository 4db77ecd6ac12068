package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
	"github.com/vigil-attest/vigil/internal/wire"
)

// Attester is the agent's continuous-attestation loop: it asks the verifier
// for a challenge, answers it with a quote and the logs asked for, and
// repeats at the interval the verifier sets. It holds no TPM connection
// between attestations.
type Attester struct {
	Open    Opener
	DataDir string
	// VerifierURLs are the verifier replicas this agent may attest to. It
	// uses one until it cannot reach it (or it answers 503), then the
	// next: replicas share one store, so a challenge from one is answered
	// at any.
	VerifierURLs []string
	// HTTP must trust the deployment CA; keep-alive connections are reused.
	HTTP *http.Client
	// BootLogPath and IMALogPath are the logs to send; empty means the
	// kernel's defaults.
	BootLogPath string
	IMALogPath  string
	Log         *slog.Logger
	// MaxBackoff caps the wait between retries after errors.
	MaxBackoff time.Duration
	// OnVerdict, if set, sees every verdict (tests, the demo).
	OnVerdict func(wire.Verdict)

	ak      AKBlob
	agentID string
	ima     *imaLog
	// bootLog, once Hold read it, is the boot log sent when asked: it does
	// not change until the host reboots, and the agent restarts with it.
	bootLog []byte
	// cur is the index of the verifier in use; hops counts the verifiers
	// failed over from since the last success.
	cur, hops int
	// tpmMu keeps the attestation loop and node proofs (ServeProofs) from
	// opening the TPM at once: swtpm serves one connection at a time.
	tpmMu sync.Mutex
}

// verifier is the URL of the verifier in use.
func (a *Attester) verifier() string { return a.VerifierURLs[a.cur%len(a.VerifierURLs)] }

// failover moves to the next verifier when err says this one cannot be
// reached or cannot serve now; a refusal of the request itself is not the
// verifier's fault, and another replica would refuse it too.
//
// It reports whether the next verifier should be tried at once: while not
// every verifier has failed in a row, another one may well answer, and a
// backoff grown against a dead replica must not outlast the liveness
// window at the live one that took the host over.
func (a *Attester) failover(err error) (tryNow bool) {
	if len(a.VerifierURLs) < 2 || err == nil {
		return false
	}
	var ref *RefusedError
	if errors.As(err, &ref) && ref.Status != http.StatusServiceUnavailable {
		return false
	}
	from := a.verifier()
	a.cur = (a.cur + 1) % len(a.VerifierURLs)
	a.hops++
	a.log().Warn("verifier unavailable; trying the next", "from", from, "to", a.verifier(), "err", err)
	return a.hops < len(a.VerifierURLs)
}

// retry waits before the next try after err: briefly when another
// verifier is to be tried at once, else the next backoff step.
func (a *Attester) retry(ctx context.Context, backoff, maxBackoff time.Duration, err error) time.Duration {
	if a.failover(err) {
		sleep(ctx, jittered(failoverPause))
		return backoff
	}
	a.hops = 0
	return a.wait(ctx, backoff, maxBackoff, err)
}

// failoverPause is the wait before trying the next verifier.
const failoverPause = 100 * time.Millisecond

// CheckLogs checks that the boot log and IMA log can be read.
func (a *Attester) CheckLogs() error {
	if a.IMALogPath == "" {
		a.IMALogPath = DefaultIMALog
	}
	if a.BootLogPath == "" {
		a.BootLogPath = DefaultBootLog
	}
	for _, p := range []struct{ what, path string }{{"IMA log", a.IMALogPath}, {"boot log", a.BootLogPath}} {
		f, err := os.Open(p.path)
		if err != nil {
			return fmt.Errorf("%s: %w", p.what, err)
		}
		f.Close()
	}
	return nil
}

// Prepare loads the enrolled AK and checks the logs exist, so a
// misconfigured agent fails at start with a clear error.
func (a *Attester) Prepare() error {
	st, err := loadAK(a.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no AK in %s: run `vigil agent enroll` first", a.DataDir)
	}
	if err != nil {
		return err
	}
	if st.AgentID == "" || !st.Active {
		return fmt.Errorf("the AK in %s was never activated: run `vigil agent enroll`", a.DataDir)
	}
	blob, err := st.blob()
	if err != nil {
		return err
	}
	a.ak, a.agentID = blob, st.AgentID
	if err := a.CheckLogs(); err != nil {
		return err
	}
	a.ima, err = newIMALog(a.IMALogPath)
	return err
}

// Hold opens what the agent reads for as long as it runs — the TPM (through
// Open, whose device connection is kept), the IMA list, the boot log — so
// that it can then drop its privileges (DropPrivileges) and go on reading
// them. Call it after Prepare.
func (a *Attester) Hold(ctx context.Context) error {
	tpm, err := a.Open(ctx)
	if err != nil {
		return fmt.Errorf("open TPM: %w", err)
	}
	tpm.Close()
	f, err := os.Open(a.IMALogPath)
	if err != nil {
		return fmt.Errorf("IMA log: %w", err)
	}
	a.ima.held = f
	if a.bootLog, err = os.ReadFile(a.BootLogPath); err != nil {
		return fmt.Errorf("boot log: %w", err)
	}
	return nil
}

// AgentID is the ID the registrar enrolled this agent under.
func (a *Attester) AgentID() string { return a.agentID }

func (a *Attester) log() *slog.Logger {
	l := a.Log
	if l == nil {
		l = slog.Default()
	}
	return l.With("agent_id", a.agentID)
}

// Run attests until ctx ends. Errors (network, verifier refusals, TPM) are
// logged and retried with capped, jittered exponential backoff.
func (a *Attester) Run(ctx context.Context) error {
	if len(a.VerifierURLs) == 0 {
		return errors.New("no verifier URL")
	}
	if a.ima == nil {
		if err := a.Prepare(); err != nil {
			return err
		}
	}
	maxBackoff := a.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = time.Minute
	}
	backoff := time.Duration(0)
	started := true
	var next *wire.Challenge
	for ctx.Err() == nil {
		if next == nil {
			ch, err := a.challenge(ctx, started)
			if err != nil {
				backoff = a.retry(ctx, backoff, maxBackoff, err)
				continue
			}
			next = &ch
		}
		v, err := a.attestOnce(ctx, *next)
		next = nil
		if err != nil {
			backoff = a.retry(ctx, backoff, maxBackoff, err)
			continue
		}
		started, backoff, a.hops = false, 0, 0
		if a.OnVerdict != nil {
			a.OnVerdict(v)
		}
		if v.Next == nil {
			a.log().Warn("verifier reports a failed attestation", "state", v.State, "reason", v.Reason, "detail", v.Detail)
			backoff = a.wait(ctx, backoff, maxBackoff, fmt.Errorf("attestation %s: %s", v.State, v.Reason))
			continue
		}
		next = v.Next
		sleep(ctx, jittered(time.Duration(next.IntervalMS)*time.Millisecond))
	}
	return nil
}

// jittered shortens an interval by up to a tenth, at random. Agents that
// fell into step (a verifier restart or a network outage has them all
// reconnect at once) would otherwise stay in step for good, and the
// verifier would see the whole fleet in one burst each interval; with
// jitter the burst spreads out over a few intervals. Only shorter: a
// longer wait would eat into the liveness window.
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - time.Duration(rand.Int64N(int64(d/10)+1))
}

// wait sleeps for the next backoff step and returns it. A verifier that
// says when to come back (Retry-After) is believed, up to the cap: a failed
// agent is told to ask again every interval, so that it is attesting again
// within about one interval of an operator's readmission instead of asleep
// in a long backoff.
func (a *Attester) wait(ctx context.Context, cur, limit time.Duration, err error) time.Duration {
	next := nextBackoff(cur, limit, err)
	// Full jitter in [next/2, next): a fleet that lost the verifier at once
	// does not come back at once.
	d := next/2 + time.Duration(rand.Int64N(int64(next/2)+1))
	if ctx.Err() == nil {
		a.log().Warn("attestation error; retrying", "err", err, "retry_in", d.Round(time.Millisecond).String())
	}
	sleep(ctx, d)
	return next
}

// nextBackoff is the backoff step after cur: doubling from half a second up
// to limit, or what the server's Retry-After says, up to limit.
func nextBackoff(cur, limit time.Duration, err error) time.Duration {
	var ref *RefusedError
	if errors.As(err, &ref) && ref.RetryAfter > 0 {
		return min(ref.RetryAfter, limit)
	}
	return min(max(2*cur, 500*time.Millisecond), limit)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (a *Attester) challenge(ctx context.Context, started bool) (wire.Challenge, error) {
	var ch wire.Challenge
	served, err := post(ctx, a.HTTP, a.verifier()+wire.PathChallenge, nil, wire.ChallengeRequest{AgentID: a.agentID, Started: started}, &ch)
	a.follow(served)
	return ch, err
}

// Collect builds the evidence that answers ch: quote, PCR values, the boot
// log and the IMA entries it asks for.
func (a *Attester) Collect(ctx context.Context, ch wire.Challenge) (wire.Evidence, error) {
	sel, err := tpm2.Unmarshal[tpm2.TPMLPCRSelection](ch.PCRSelection)
	if err != nil {
		return wire.Evidence{}, fmt.Errorf("challenge PCR selection: %w", err)
	}
	ev := wire.Evidence{AgentID: a.agentID, Nonce: ch.Nonce, IMAOffset: ch.IMAOffset}
	a.tpmMu.Lock()
	tpm, err := a.Open(ctx)
	if err != nil {
		a.tpmMu.Unlock()
		return wire.Evidence{}, fmt.Errorf("open TPM: %w", err)
	}
	quote, sig, pcrs, err := quoteConsistent(ctx, tpm, a.ak, ch.Nonce, *sel)
	tpm.Close()
	a.tpmMu.Unlock()
	if err != nil {
		return wire.Evidence{}, err
	}
	ev.Quote, ev.Signature = quote.Bytes(), tpm2.Marshal(sig)
	ev.PCRs = make(map[uint16]map[int][]byte, len(pcrs))
	for bank, values := range pcrs {
		ev.PCRs[uint16(bank)] = values
	}
	// The logs are read after the quote: entries the kernel appends in
	// between make the log run ahead of the quoted PCR 10, which the
	// verifier handles (it commits the prefix the quote covers and asks for
	// the rest next time); a log behind the quote could not be verified.
	if ch.WantIMA {
		if ev.IMA, _, err = a.ima.from(ch.IMAOffset); err != nil {
			return wire.Evidence{}, err
		}
	}
	if ch.WantBootLog {
		if a.bootLog != nil {
			ev.BootLog = a.bootLog
		} else if ev.BootLog, err = os.ReadFile(a.BootLogPath); err != nil {
			return wire.Evidence{}, fmt.Errorf("boot log: %w", err)
		}
	}
	return ev, nil
}

// quoteConsistent reads the selected PCRs and quotes them, retrying when a
// PCR was extended in between (the quote's digest then does not match the
// values read), so the verifier gets values that hash to the quote.
//
// The selection may name banks the TPM has not allocated (a PCR policy
// naming sha384, on a TPM with sha1 and sha256): those are left out of the
// quote, which then shows the verifier what the TPM lacks, and the
// verifier fails the host naming the bank, rather than the agent retrying
// forever and the host failing for silence.
func quoteConsistent(ctx context.Context, tpm TPM, ak AKBlob, nonce []byte, sel tpm2.TPMLPCRSelection) (tpm2.TPM2BAttest, tpm2.TPMTSignature, map[tpm2.TPMAlgID]map[int][]byte, error) {
	for attempt := 0; ; attempt++ {
		pcrs, err := tpm.PCRRead(ctx, sel)
		if errors.Is(err, ErrBankNotAllocated) {
			if sel, err = allocatedOnly(ctx, tpm, sel); err == nil {
				pcrs, err = tpm.PCRRead(ctx, sel)
			}
		}
		if err != nil {
			return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, nil, err
		}
		quote, sig, err := tpm.Quote(ctx, ak, nonce, sel)
		if err != nil {
			return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, nil, err
		}
		attest, err := quote.Contents()
		if err != nil {
			return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, nil, fmt.Errorf("quote: %w", err)
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, nil, fmt.Errorf("quote: %w", err)
		}
		h := sha256.New()
		for _, s := range sel.PCRSelections {
			for i, b := range s.PCRSelect {
				for bit := range 8 {
					if b&(1<<bit) != 0 {
						h.Write(pcrs[s.Hash][i*8+bit])
					}
				}
			}
		}
		if bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			return quote, sig, pcrs, nil
		}
		if attempt == 4 {
			return tpm2.TPM2BAttest{}, tpm2.TPMTSignature{}, nil, errors.New("PCRs kept changing between reading and quoting them")
		}
	}
}

// allocatedOnly is sel without the banks the TPM has not allocated, found
// by reading each bank's selection alone.
func allocatedOnly(ctx context.Context, tpm TPM, sel tpm2.TPMLPCRSelection) (tpm2.TPMLPCRSelection, error) {
	var out tpm2.TPMLPCRSelection
	for _, s := range sel.PCRSelections {
		_, err := tpm.PCRRead(ctx, tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{s}})
		switch {
		case errors.Is(err, ErrBankNotAllocated):
			slog.Warn("the verifier asks for PCRs of a bank this TPM has not allocated; quoting the others, and the verifier will say so",
				"bank", tpmfacts.BankName(s.Hash))
		case err != nil:
			return out, err
		default:
			out.PCRSelections = append(out.PCRSelections, s)
		}
	}
	return out, nil
}

func (a *Attester) attestOnce(ctx context.Context, ch wire.Challenge) (wire.Verdict, error) {
	ev, err := a.Collect(ctx, ch)
	if err != nil {
		return wire.Verdict{}, err
	}
	var v wire.Verdict
	served, err := post(ctx, a.HTTP, a.verifier()+wire.EvidencePath(ev.AgentID), evidenceHeader(ev), ev, &v)
	a.follow(served)
	return v, err
}

// follow makes the verifier that served a redirected request the one in
// use: replicas redirect an agent to the replica that holds it, and going
// there directly saves a round trip per attestation.
func (a *Attester) follow(served string) {
	if served == "" || served == a.verifier() {
		return
	}
	for i, u := range a.VerifierURLs {
		if strings.TrimRight(u, "/") == served {
			a.cur = i
			return
		}
	}
	a.VerifierURLs = append(a.VerifierURLs, served)
	a.cur = len(a.VerifierURLs) - 1
}

func evidenceHeader(ev wire.Evidence) http.Header {
	return http.Header{wire.NonceHeader: []string{hex.EncodeToString(ev.Nonce)}}
}

// PostEvidence posts evidence to the verifier at baseURL: to the agent's
// own path, with the nonce in a header, so that the verifier can refuse a
// body it did not ask for before reading it.
func PostEvidence(ctx context.Context, client *http.Client, baseURL string, ev wire.Evidence) (wire.Verdict, error) {
	var v wire.Verdict
	_, err := post(ctx, client, baseURL+wire.EvidencePath(ev.AgentID), evidenceHeader(ev), ev, &v)
	return v, err
}

// PostCBOR sends an agent message and decodes the answer: a CBOR body, a
// CBOR answer, and a non-200 answer as a *RefusedError with the server's
// reason.
func PostCBOR(ctx context.Context, client *http.Client, url string, req, rsp any) error {
	_, err := post(ctx, client, url, nil, req, rsp)
	return err
}

// post sends req and decodes the answer into rsp. served is the scheme and
// host that answered, which is not the one asked when it redirected.
func post(ctx context.Context, client *http.Client, url string, hdr http.Header, req, rsp any) (served string, err error) {
	body, err := wire.Marshal(req)
	if err != nil {
		return "", err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	for k, v := range hdr {
		hreq.Header[k] = v
	}
	hreq.Header.Set("Content-Type", wire.ContentType)
	hrsp, err := client.Do(hreq)
	if err != nil {
		return "", err
	}
	defer hrsp.Body.Close()
	if u := hrsp.Request.URL; u != nil {
		served = u.Scheme + "://" + u.Host
	}
	if hrsp.StatusCode != http.StatusOK {
		ref := &RefusedError{Status: hrsp.StatusCode, Msg: hrsp.Status}
		if secs, err := strconv.Atoi(hrsp.Header.Get("Retry-After")); err == nil && secs > 0 {
			ref.RetryAfter = time.Duration(secs) * time.Second
		}
		var werr wire.Error
		if err := wire.Read(hrsp.Body, wire.MaxMessage, &werr); err == nil && werr.Error != "" {
			ref.Msg = werr.Error
		}
		return served, ref
	}
	return served, wire.Read(hrsp.Body, wire.MaxMessage, rsp)
}
