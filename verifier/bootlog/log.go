package bootlog

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// MaxSize bounds an event log. Real ones are tens of kilobytes; the bound
// only stops a hostile agent from making the verifier parse megabytes.
const MaxSize = 4 << 20

// Log is a parsed, not yet trusted, event log.
type Log struct {
	el *tcg.EventLog
	// Banks are the digest algorithms the log carries, strongest first.
	Banks []tpm2.TPMAlgID
	// Agile is true for the crypto-agile format (a Spec ID event first),
	// false for the SHA-1-only format.
	Agile bool
}

// specIDSignature opens the data of the first event of a crypto-agile log.
var specIDSignature = []byte("Spec ID Event03\x00")

// Parse reads a binary event log, or its base64 encoding.
func Parse(b []byte) (*Log, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("event log: %d bytes, more than the %d allowed", len(b), MaxSize)
	}
	what := "event log"
	if dec, ok := decodeBase64(b); ok {
		b, what = dec, "event log (base64-decoded)"
	}
	// The first event is always in the SHA-1 format: PCR index, type, a
	// 20-byte digest, data size (32 bytes of header).
	if len(b) < 32 {
		return nil, fmt.Errorf("%s: %d bytes, shorter than one event header (32)", what, len(b))
	}
	el, err := tcg.ParseEventLog(b, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	l := &Log{el: el}
	typ := binary.LittleEndian.Uint32(b[4:])
	size := binary.LittleEndian.Uint32(b[28:])
	l.Agile = typ == uint32(tcg.NoAction) && size >= uint32(len(specIDSignature)) && len(b) >= 32+len(specIDSignature) &&
		bytes.Equal(b[32:32+len(specIDSignature)], specIDSignature)
	for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA1} {
		for _, a := range el.Algs {
			if uint16(a.GoTPMAlg()) == uint16(alg) {
				l.Banks = append(l.Banks, alg)
			}
		}
	}
	if len(l.Banks) == 0 {
		return nil, fmt.Errorf("%s: no SHA-1, SHA-256 or SHA-384 digests", what)
	}
	return l, nil
}

// decodeBase64 recognises a base64-encoded log. A binary log starts with a
// little-endian PCR index (zero bytes), which base64 never contains.
func decodeBase64(b []byte) ([]byte, bool) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, false
	}
	for _, c := range t {
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '+' || c == '/' || c == '=' || c == '\n' || c == '\r'
		if !ok {
			return nil, false
		}
	}
	t = bytes.ReplaceAll(bytes.ReplaceAll(t, []byte("\n"), nil), []byte("\r"), nil)
	dec := make([]byte, base64.StdEncoding.DecodedLen(len(t)))
	n, err := base64.StdEncoding.Decode(dec, t)
	if err != nil {
		return nil, false
	}
	return dec[:n], true
}

// HasBank reports whether the log carries digests of that algorithm.
func (l *Log) HasBank(alg tpm2.TPMAlgID) bool {
	for _, b := range l.Banks {
		if b == alg {
			return true
		}
	}
	return false
}

func registerHash(alg tpm2.TPMAlgID) (register.HashAlg, crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return register.HashSHA1, crypto.SHA1, nil
	case tpm2.TPMAlgSHA256:
		return register.HashSHA256, crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return register.HashSHA384, crypto.SHA384, nil
	}
	return 0, 0, fmt.Errorf("PCR bank %s is not supported for event logs", evidence.BankName(alg))
}

// Event is one log entry as seen in one bank. Nothing in it is trusted
// before the log has been replayed against quoted PCRs.
type Event struct {
	// Num is the event's position in the log; the Spec ID event of a
	// crypto-agile log is number 0 and is not listed.
	Num  int    `json:"num"`
	PCR  int    `json:"pcr"`
	Type string `json:"type"`
	// Digest is the digest this bank extended, hex; empty when the event
	// has none for this bank.
	Digest string `json:"digest"`
	// Data is the event data, hex.
	Data string `json:"data"`
	// Text is a readable rendering of the data where there is one (GRUB
	// commands, EFI actions, firmware version strings).
	Text string `json:"text,omitempty"`

	typ    tcg.EventType
	raw    []byte
	digest []byte
}

// Events lists the log's events with their digests in one bank.
func (l *Log) Events(bank tpm2.TPMAlgID) ([]Event, error) {
	rh, _, err := registerHash(bank)
	if err != nil {
		return nil, err
	}
	raw := l.el.Events(rh)
	out := make([]Event, len(raw))
	first := 0
	if l.Agile {
		first = 1
	}
	for i, e := range raw {
		out[i] = Event{
			Num: first + i, PCR: e.Index, Type: e.Type.String(),
			Digest: hex.EncodeToString(e.Digest), Data: hex.EncodeToString(e.Data),
			Text: printable(e.Type, e.Data),
			typ:  e.Type, raw: e.Data, digest: e.Digest,
		}
	}
	return out, nil
}

// printable renders event data that is text by definition.
func printable(t tcg.EventType, data []byte) string {
	switch t {
	case tcg.Ipl, tcg.EFIAction, tcg.SCRTMVersion, tcg.Action, tcg.PostCode, tcg.CompactHash, tcg.EFIPlatformFirmwareBlob:
	default:
		return ""
	}
	s := string(bytes.TrimRight(data, "\x00"))
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\n' || r == 0xfffd {
			return ""
		}
	}
	return s
}

// startupLocality is the EV_NO_ACTION event that says from which locality
// TPM2_Startup ran, which is PCR 0's initial value.
var startupLocality = []byte("StartupLocality\x00")

// Replay computes the value each PCR with events reaches in one bank. Every
// extending event must carry a digest for the bank.
func (l *Log) Replay(bank tpm2.TPMAlgID) (map[int][]byte, error) {
	events, err := l.Events(bank)
	if err != nil {
		return nil, err
	}
	_, h, _ := registerHash(bank)
	pcrs := make(map[int][]byte)
	for _, e := range events {
		if e.typ == tcg.NoAction {
			if e.PCR == 0 && len(e.raw) == len(startupLocality)+1 && bytes.HasPrefix(e.raw, startupLocality) {
				if _, seen := pcrs[0]; !seen {
					v := make([]byte, h.Size())
					v[h.Size()-1] = e.raw[len(startupLocality)]
					pcrs[0] = v
				}
			}
			continue
		}
		if len(e.digest) != h.Size() {
			return nil, fmt.Errorf("event %d (PCR %d, %s) has no %s digest", e.Num, e.PCR, e.Type, evidence.BankName(bank))
		}
		cur, ok := pcrs[e.PCR]
		if e.typ == tcg.EFIHCRTMEvent {
			// An H-CRTM event starts its PCR from ...04 instead of zero and
			// must come first.
			if ok && !bytes.Equal(cur, make([]byte, h.Size())) {
				return nil, fmt.Errorf("event %d: H-CRTM event after other PCR %d events", e.Num, e.PCR)
			}
			cur = make([]byte, h.Size())
			cur[h.Size()-1] = 4
		} else if !ok {
			cur = make([]byte, h.Size())
		}
		hh := h.New()
		hh.Write(cur)
		hh.Write(e.digest)
		pcrs[e.PCR] = hh.Sum(nil)
	}
	return pcrs, nil
}
