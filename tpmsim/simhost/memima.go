package simhost

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// IMARecord is an IMA entry made ready to be logged many times: its bytes
// in one list format, and the digests it extends PCR 10 with. Making one
// hashes the template data; logging it afterwards hashes nothing but the
// PCR extends. Records are read-only once made, so many lists (a simulated
// fleet) can share them.
type IMARecord struct {
	Entry   IMAEntry
	Format  Format // FormatBinary or FormatASCII
	Bytes   []byte
	Digests Digests
	// bankDigests are Digests in the order of banks, for a
	// PCREventsExtender.
	bankDigests [len(banks)][]byte
}

// PCREventsExtender is a TPM that extends one PCR with a sequence of
// events in one call: event i's digest for banks[b] is
// digests[i*len(banks)+b], each event's banks in that order, as many
// PCRExtend calls would. MemIMALog uses it when the TPM has it (the soft
// TPM does), so that a fleet's new IMA entries cost no map each.
type PCREventsExtender interface {
	PCRExtendEvents(ctx context.Context, pcr int, banks []tpm2.TPMAlgID, digests [][]byte) error
}

// bankAlgs are the algorithms of banks, in order.
var bankAlgs = func() []tpm2.TPMAlgID {
	var a []tpm2.TPMAlgID
	for _, b := range banks {
		a = append(a, b.Alg)
	}
	return a
}()

// NewIMARecord makes the record of e in format f (FormatAuto is binary).
func NewIMARecord(e IMAEntry, f Format) (IMARecord, error) {
	if f == FormatAuto {
		f = FormatBinary
	}
	if f != FormatBinary && f != FormatASCII {
		return IMARecord{}, fmt.Errorf("measurement list format %d", f)
	}
	if f == FormatASCII && strings.ContainsAny(e.Path, "\n") {
		return IMARecord{}, inputErrorf("%q: a line break in the path would break the ASCII list", e.Path)
	}
	r := IMARecord{Entry: e, Format: f, Bytes: e.append(nil, f), Digests: e.Digests()}
	for i, b := range banks {
		r.bankDigests[i] = r.Digests[b.Alg]
	}
	return r, nil
}

// IMATable is a numbered set of records that in-memory lists log by
// number: a fleet of simulated hosts that run the same files shares one
// table, and each host's list holds four bytes per entry.
type IMATable struct {
	format Format
	recs   []IMARecord
}

// NewIMATable makes the records of entries, numbered from 0, in format f
// (FormatAuto is binary).
func NewIMATable(f Format, entries []IMAEntry) (*IMATable, error) {
	if f == FormatAuto {
		f = FormatBinary
	}
	t := &IMATable{format: f, recs: make([]IMARecord, len(entries))}
	for i, e := range entries {
		r, err := NewIMARecord(e, f)
		if err != nil {
			return nil, err
		}
		t.recs[i] = r
	}
	return t, nil
}

// Len is the number of records in the table.
func (t *IMATable) Len() int { return len(t.recs) }

// Format is the list format the records are in.
func (t *IMATable) Format() Format { return t.format }

// Record returns record i.
func (t *IMATable) Record(i int) *IMARecord { return &t.recs[i] }

// MemIMALog is a simulated kernel's measurement list kept in memory instead
// of a file: what IMALog does, for a fleet of simulated hosts that would
// otherwise pay a file append and a file read per attestation. Init and
// Append behave as IMALog's do (the boot_aggregate from PCRs 0-9; each
// entry in the list before PCR 10 is extended with it, so the list may run
// ahead of a quote, never behind), and AppendFrom gives the bytes an agent
// reads from binary_runtime_measurements (or ascii_runtime_measurements)
// from an entry on.
//
// Entries are kept as numbers: those of the table it was made with, and
// the entries appended by value (boot_aggregate among them) after the
// table's. Whole lists are never stored as bytes, so a list whose verifier
// asks for it from entry 0 again (a restart) costs nothing to keep.
//
// A MemIMALog is safe for concurrent use: a reader sees whole entries,
// and concurrent appenders extend PCR 10 in their list order.
type MemIMALog struct {
	table  *IMATable
	format Format
	// extendMu keeps the order of entries in the list and of their
	// extends the same between concurrent appenders, as IMALog's flock
	// does; mu guards the list alone, so readers do not wait for extends.
	extendMu sync.Mutex
	mu       sync.Mutex
	// own are the records appended by value; entry numbers past the
	// table's refer to them.
	own []IMARecord
	ids []uint32
	// digests is scratch space for a PCREventsExtender, under extendMu.
	digests [][]byte
}

// NewMemIMALog returns an empty list (Init starts it) whose entries may be
// logged from table by number. table may be nil; its format is the list's,
// else format's (FormatAuto is binary).
func NewMemIMALog(table *IMATable, format Format) (*MemIMALog, error) {
	if table != nil {
		if format != FormatAuto && format != table.format {
			return nil, inputErrorf("a %s list cannot log the records of a %s table", format, table.format)
		}
		format = table.format
	}
	if format == FormatAuto {
		format = FormatBinary
	}
	return &MemIMALog{table: table, format: format}, nil
}

// Format is the format of the list.
func (l *MemIMALog) Format() Format { return l.format }

func (l *MemIMALog) tableLen() int {
	if l.table == nil {
		return 0
	}
	return len(l.table.recs)
}

// record returns entry number id's record; the caller holds l.mu.
func (l *MemIMALog) record(id uint32) *IMARecord {
	n := l.tableLen()
	if int(id) < n {
		return &l.table.recs[id]
	}
	return &l.own[int(id)-n]
}

// Init starts a new list, as the kernel does at boot and as IMALog.Init
// does: PCR 10 must be at its reset value (else ErrPCRsExtended), and the
// list then holds only the boot_aggregate of PCRs 0-9, which PCR 10 is
// extended with.
func (l *MemIMALog) Init(ctx context.Context, t TPM) (IMAEntry, error) {
	l.extendMu.Lock()
	defer l.extendMu.Unlock()
	if err := requireReset(ctx, t, IMAPCR); err != nil {
		return IMAEntry{}, err
	}
	pcrs, err := ReadPCRs(ctx, t, bootPCRs[:]...)
	if err != nil {
		return IMAEntry{}, err
	}
	e, err := BootAggregate(pcrs[tpm2.TPMAlgSHA256])
	if err != nil {
		return IMAEntry{}, err
	}
	r, err := NewIMARecord(e, l.format)
	if err != nil {
		return IMAEntry{}, err
	}
	l.mu.Lock()
	l.own = append(l.own[:0], r)
	l.ids = append(l.ids[:0], uint32(l.tableLen()))
	l.mu.Unlock()
	if err := t.PCRExtend(ctx, IMAPCR, r.Digests); err != nil {
		return IMAEntry{}, fmt.Errorf("extend PCR %d with boot_aggregate: %w", IMAPCR, err)
	}
	return e, nil
}

// Append adds entries to the list and extends PCR 10 with each, in order,
// as IMALog.Append does. The list must have been started (Init).
func (l *MemIMALog) Append(ctx context.Context, t PCRExtender, entries ...IMAEntry) error {
	recs := make([]IMARecord, len(entries))
	for i, e := range entries {
		r, err := NewIMARecord(e, l.format)
		if err != nil {
			return err
		}
		recs[i] = r
	}
	l.extendMu.Lock()
	defer l.extendMu.Unlock()
	l.mu.Lock()
	if len(l.ids) == 0 {
		l.mu.Unlock()
		return inputErrorf("the in-memory measurement list was never started (Init)")
	}
	first := len(l.own)
	for _, r := range recs {
		l.ids = append(l.ids, uint32(l.tableLen()+len(l.own)))
		l.own = append(l.own, r)
	}
	own := l.own[first:]
	l.mu.Unlock()
	return l.extendAll(ctx, t, len(entries), func(i int) *IMARecord { return &own[i] })
}

// AppendTable adds the table's records ids to the list and extends PCR 10
// with each, in order: Append for entries the table holds, without
// allocating or hashing anything but the extends.
func (l *MemIMALog) AppendTable(ctx context.Context, t PCRExtender, ids ...int) error {
	n := l.tableLen()
	for _, id := range ids {
		if id < 0 || id >= n {
			return fmt.Errorf("IMA table record %d: the table has %d", id, n)
		}
	}
	l.extendMu.Lock()
	defer l.extendMu.Unlock()
	l.mu.Lock()
	if len(l.ids) == 0 {
		l.mu.Unlock()
		return inputErrorf("the in-memory measurement list was never started (Init)")
	}
	for _, id := range ids {
		l.ids = append(l.ids, uint32(id))
	}
	l.mu.Unlock()
	return l.extendAll(ctx, t, len(ids), func(i int) *IMARecord { return &l.table.recs[ids[i]] })
}

// extendAll extends PCR 10 with n records in order; the caller holds
// l.extendMu.
func (l *MemIMALog) extendAll(ctx context.Context, t PCRExtender, n int, rec func(int) *IMARecord) error {
	if pe, ok := t.(PCREventsExtender); ok && n > 0 {
		l.digests = l.digests[:0]
		for i := range n {
			l.digests = append(l.digests, rec(i).bankDigests[:]...)
		}
		if err := pe.PCRExtendEvents(ctx, IMAPCR, bankAlgs, l.digests); err != nil {
			return fmt.Errorf("extend PCR %d for %d entries (all appended, none extended): %w", IMAPCR, n, err)
		}
		return nil
	}
	for i := range n {
		r := rec(i)
		if err := t.PCRExtend(ctx, IMAPCR, r.Digests); err != nil {
			return fmt.Errorf("extend PCR %d for %s (all %d entries appended, %d extended): %w", IMAPCR, r.Entry.Path, n, i, err)
		}
	}
	return nil
}

// Len is the number of entries in the list.
func (l *MemIMALog) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

// AppendFrom appends to dst the list's bytes from entry first (0-based) on,
// as a reader of the list file from that entry's offset would read them,
// and returns them with how many entries they are. With limit > 0 it stops
// after the entry that brings the bytes to limit or more, as the agent
// bounds one read. first may be the list's length (nothing new), not more.
func (l *MemIMALog) AppendFrom(dst []byte, first uint64, limit int) ([]byte, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first > uint64(len(l.ids)) {
		return dst, 0, fmt.Errorf("the measurement list has %d entries, asked from entry %d", len(l.ids), first)
	}
	start := len(dst)
	n := 0
	for _, id := range l.ids[first:] {
		dst = append(dst, l.record(id).Bytes...)
		n++
		if limit > 0 && len(dst)-start >= limit {
			break
		}
	}
	return dst, n, nil
}

// SizeFrom is the length of what AppendFrom(nil, first, limit) returns.
func (l *MemIMALog) SizeFrom(first uint64, limit int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first > uint64(len(l.ids)) {
		return 0, fmt.Errorf("the measurement list has %d entries, asked from entry %d", len(l.ids), first)
	}
	size := 0
	for _, id := range l.ids[first:] {
		size += len(l.record(id).Bytes)
		if limit > 0 && size >= limit {
			break
		}
	}
	return size, nil
}

// Bytes is the whole list, as the file would hold it.
func (l *MemIMALog) Bytes() []byte {
	b, _, _ := l.AppendFrom(nil, 0, 0)
	return b
}
