package bootlog

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	pb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/evidence"
)

// Reasons the boot-log check gives.
const (
	ReasonBankMissing       evidence.Reason = "boot_log_bank_missing"
	ReasonPCRsNotQuoted     evidence.Reason = "boot_pcrs_not_quoted"
	ReasonReplayMismatch    evidence.Reason = "boot_log_replay_mismatch"
	ReasonEventDataMismatch evidence.Reason = "boot_log_event_data_mismatch"
	ReasonUnusable          evidence.Reason = "boot_log_unusable"
)

// BootPCRs are the PCRs the UEFI log accounts for and a boot check demands
// in the quote: firmware, configuration, option ROMs, boot manager and
// loaders, GPT, Secure Boot policy, and GRUB's commands and files.
var BootPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// mokPCR holds shim's MOK state; it is checked when quoted.
const mokPCR = 14

// Verified is a log that replays to quoted PCR values.
type Verified struct {
	// Banks are the banks replayed and matched, strongest first.
	Banks []tpm2.TPMAlgID
	// PCRs are the matched values: the boot PCRs in each replayed bank.
	PCRs evidence.PCRValues

	log    *Log
	events map[tpm2.TPMAlgID][]tcg.Event
}

// Verify replays every bank that both the log and the quote carry and
// compares PCRs 0-9 (and 14 if quoted) with the quoted values, which must
// come from a verified quote (evidence.Result.PCRs). A PCR with no events
// must still hold its reset value. Each failure is an *evidence.Failure.
func (l *Log) Verify(quoted evidence.PCRValues) (*Verified, error) {
	v := &Verified{PCRs: make(evidence.PCRValues), log: l, events: make(map[tpm2.TPMAlgID][]tcg.Event)}
	var missing []string
	for _, bank := range l.Banks {
		q, ok := quoted[bank]
		if !ok {
			continue
		}
		pcrs := slices.Clone(BootPCRs)
		var notQuoted []int
		for _, i := range BootPCRs {
			if _, ok := q[i]; !ok {
				notQuoted = append(notQuoted, i)
			}
		}
		if len(notQuoted) > 0 {
			missing = append(missing, fmt.Sprintf("%s PCRs %v", evidence.BankName(bank), notQuoted))
			continue
		}
		if _, ok := q[mokPCR]; ok {
			pcrs = append(pcrs, mokPCR)
		}
		replayed, err := l.Replay(bank)
		if err != nil {
			return nil, evidence.Fail(ReasonReplayMismatch, "%v", err)
		}
		_, h, _ := registerHash(bank)
		var mrs []register.PCR
		for _, i := range pcrs {
			got, ok := replayed[i]
			if !ok {
				got = make([]byte, h.Size())
			}
			if !bytes.Equal(got, q[i]) {
				return nil, evidence.Fail(ReasonReplayMismatch, "%s PCR %d: the log replays to %x, the quote has %x", evidence.BankName(bank), i, got, q[i])
			}
			v.PCRs.Set(bank, i, got)
			mrs = append(mrs, register.PCR{Index: i, Digest: got, DigestAlg: h})
		}
		// go-eventlog hands out the events it matched to PCR values; those
		// carry the per-bank digest its extraction checks data against.
		events, err := l.el.Verify(register.PCRBank{TCGHashAlgo: pb.HashAlgo(bank), PCRs: mrs}.MRs())
		if err != nil {
			return nil, evidence.Fail(ReasonReplayMismatch, "%s bank: %v", evidence.BankName(bank), err)
		}
		if err := checkEventData(events, bank); err != nil {
			return nil, err
		}
		v.Banks = append(v.Banks, bank)
		v.events[bank] = events
	}
	if len(v.Banks) == 0 {
		if len(missing) > 0 {
			return nil, evidence.Fail(ReasonPCRsNotQuoted, "the quote does not cover the boot PCRs: %s missing", strings.Join(missing, "; "))
		}
		var qb []string
		for alg := range quoted {
			qb = append(qb, evidence.BankName(alg))
		}
		slices.Sort(qb)
		var lb []string
		for _, b := range l.Banks {
			lb = append(lb, evidence.BankName(b))
		}
		return nil, evidence.Fail(ReasonBankMissing, "the log has banks %v, the quote %v: none in common", lb, qb)
	}
	return v, nil
}

// dataHashed are event types whose digest the TCG PC Client firmware
// profile defines as the hash of the event data, so that data can be
// checked and, once checked, trusted.
// (EV_EFI_VARIABLE_AUTHORITY is not among them: shim measures its MOK and
// vendor certificates with a digest of the certificate alone, so real logs
// break that rule; go-eventlog's extraction parses those events itself.)
var dataHashed = map[tcg.EventType]bool{
	tcg.Separator:               true,
	tcg.EFIAction:               true,
	tcg.EFIVariableDriverConfig: true,
}

// checkEventData refuses events of a data-hashed type whose data does not
// hash to their digest: the digest was replayed, so the data was edited.
func checkEventData(events []tcg.Event, bank tpm2.TPMAlgID) error {
	_, h, _ := registerHash(bank)
	for _, e := range events {
		if !dataHashed[e.Type] {
			continue
		}
		hh := h.New()
		hh.Write(e.Data)
		if bytes.Equal(hh.Sum(nil), e.Digest) {
			continue
		}
		return evidence.Fail(ReasonEventDataMismatch, "event %d (PCR %d, %s): data does not hash to its %s digest", e.Num(), e.Index, e.Type, evidence.BankName(bank))
	}
	return nil
}
