package bootlog_test

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/verifier/bootlog"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// span locates one event of a crypto-agile log in its bytes.
type span struct {
	start, end int
	pcr, typ   uint32
	digests    map[uint16][2]int // alg -> [offset, length]
	data       [2]int
}

// spans walks a crypto-agile log independently of the code under test.
func spans(t *testing.T, b []byte) []span {
	t.Helper()
	le := binary.LittleEndian
	size := int(le.Uint32(b[28:]))
	spec := b[32 : 32+size]
	sizes := map[uint16]int{}
	for i := range int(le.Uint32(spec[24:])) {
		sizes[le.Uint16(spec[28+4*i:])] = int(le.Uint16(spec[30+4*i:]))
	}
	var out []span
	for off := 32 + size; off < len(b); {
		s := span{start: off, pcr: le.Uint32(b[off:]), typ: le.Uint32(b[off+4:]), digests: map[uint16][2]int{}}
		n := int(le.Uint32(b[off+8:]))
		off += 12
		for range n {
			alg := le.Uint16(b[off:])
			s.digests[alg] = [2]int{off + 2, sizes[alg]}
			off += 2 + sizes[alg]
		}
		dl := int(le.Uint32(b[off:]))
		s.data = [2]int{off + 4, dl}
		off += 4 + dl
		s.end = off
		out = append(out, s)
	}
	return out
}

// genuine returns a real log and the PCR values its replay gives (checked
// against TPM readings in TestReplayMatchesTPMReadings), as a quote would.
func genuine(t *testing.T) ([]byte, evidence.PCRValues) {
	raw := testdata.Rhel8EventLog
	log, err := bootlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := make(evidence.PCRValues)
	for _, bank := range log.Banks {
		r, err := log.Replay(bank)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := evidence.HashOf(bank)
		for _, i := range append(bootlog.BootPCRs, 14) {
			v, ok := r[i]
			if !ok {
				v = make([]byte, h.Size())
			}
			pcrs.Set(bank, i, v)
		}
	}
	return raw, pcrs
}

func TestForgedLogs(t *testing.T) {
	raw, pcrs := genuine(t)
	if _, err := mustParse(t, raw).Verify(pcrs); err != nil {
		t.Fatalf("genuine log refused: %v", err)
	}
	ev := spans(t, raw)
	pick := func(pcr, typ uint32) span {
		for _, s := range ev {
			if s.pcr == pcr && (typ == 0 || s.typ == typ) {
				return s
			}
		}
		t.Fatalf("no event for PCR %d type %#x", pcr, typ)
		return span{}
	}
	const evEFIVariableDriverConfig, evEFIBootServicesApplication = 0x80000001, 0x80000003
	app := pick(4, evEFIBootServicesApplication)
	sbVar := pick(7, evEFIVariableDriverConfig)
	var pcr7 []span
	for _, s := range ev {
		if s.pcr == 7 {
			pcr7 = append(pcr7, s)
		}
	}

	editDigest := bytes.Clone(raw)
	d := app.digests[uint16(tpm2.TPMAlgSHA256)]
	editDigest[d[0]] ^= 0x80

	dropped := slices.Concat(raw[:app.start], raw[app.end:])

	a, b := pcr7[0], pcr7[1]
	reordered := slices.Concat(raw[:a.start], raw[b.start:b.end], raw[a.start:a.end], raw[b.end:])
	if a.end != b.start {
		t.Fatal("first two PCR 7 events are not adjacent")
	}

	editData := bytes.Clone(raw)
	editData[sbVar.data[0]+sbVar.data[1]-1] ^= 0x01

	// Swapping adjacent events of different PCRs changes no PCR: the TPM
	// cannot tell, and neither can the verifier. It is not a forgery.
	var crossA, crossB span
	for i := 1; i < len(ev); i++ {
		if ev[i-1].pcr != ev[i].pcr && ev[i-1].typ != 3 && ev[i].typ != 3 {
			crossA, crossB = ev[i-1], ev[i]
			break
		}
	}
	crossPCR := slices.Concat(raw[:crossA.start], raw[crossB.start:crossB.end], raw[crossA.start:crossA.end], raw[crossB.end:])

	noPCR9 := make(evidence.PCRValues)
	for alg, vals := range pcrs {
		for i, v := range vals {
			if i != 9 {
				noPCR9.Set(alg, i, v)
			}
		}
	}
	onlySHA512 := evidence.PCRValues{tpm2.TPMAlgSHA512: {0: make([]byte, 64)}}

	tests := []struct {
		name string
		log  []byte
		pcrs evidence.PCRValues
		want evidence.Reason
	}{
		{"edited digest", editDigest, pcrs, bootlog.ReasonReplayMismatch},
		{"dropped event", dropped, pcrs, bootlog.ReasonReplayMismatch},
		{"reordered events", reordered, pcrs, bootlog.ReasonReplayMismatch},
		{"edited Secure Boot variable data", editData, pcrs, bootlog.ReasonEventDataMismatch},
		{"events of two PCRs swapped", crossPCR, pcrs, ""},
		{"PCR 9 not quoted", raw, noPCR9, bootlog.ReasonPCRsNotQuoted},
		{"no common bank", raw, onlySHA512, bootlog.ReasonBankMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mustParse(t, tc.log).Verify(tc.pcrs)
			if got := evidence.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func mustParse(t *testing.T, b []byte) *bootlog.Log {
	t.Helper()
	l, err := bootlog.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// FuzzLog runs any bytes through parsing, replay, verification and state
// extraction: errors are fine, panics are not.
func FuzzLog(f *testing.F) {
	f.Add(testdata.Rhel8EventLog)
	f.Add(testdata.Debian10EventLog)
	f.Add(testdata.Ubuntu2104NoSecureBootEventLog[:2000])
	f.Add([]byte("bogus\ninvalid\nevent\nlog\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := bootlog.Parse(b)
		if err != nil {
			return
		}
		pcrs := make(evidence.PCRValues)
		for _, bank := range l.Banks {
			if _, err := l.Events(bank); err != nil {
				t.Fatalf("events of a bank the log has: %v", err)
			}
			r, err := l.Replay(bank)
			if err != nil {
				continue
			}
			h, _ := evidence.HashOf(bank)
			for _, i := range append(bootlog.BootPCRs, 14) {
				v, ok := r[i]
				if !ok {
					v = make([]byte, h.Size())
				}
				pcrs.Set(bank, i, v)
			}
		}
		v, err := l.Verify(pcrs)
		if err != nil {
			return
		}
		for _, bank := range v.Banks {
			if _, err := v.State(bank); err != nil && evidence.ReasonOf(err) == "" {
				t.Fatalf("state: %v", err)
			}
		}
	})
}
