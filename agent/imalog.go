package agent

import (
	"fmt"
	"io"
	"os"

	"github.com/vigil-attest/vigil/ima"
)

// imaLog reads an IMA measurement list incrementally. It remembers the
// byte offset where entry N starts, so in steady state each attestation
// reads only what the kernel appended since the last one, never the whole
// list again.
type imaLog struct {
	path string
	// held, when set, is the list kept open (Attester.Hold): an agent that
	// dropped its privileges can no longer open it.
	held    *os.File
	format  ima.Format
	entries uint64 // entries known
	offset  int64  // byte offset just past entry `entries`-1
	// starts holds the byte offset of each entry of the last slice read,
	// from entry sliceFirst on: the verifier commits only the entries its
	// quote covers, and asks again for the rest.
	sliceFirst uint64
	starts     []int64
}

// DefaultIMALog is where the kernel exposes the binary measurement list.
const DefaultIMALog = "/sys/kernel/security/ima/binary_runtime_measurements"

// DefaultBootLog is where the kernel exposes the UEFI event log.
const DefaultBootLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

func newIMALog(path string) (*imaLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("IMA log: %w", err)
	}
	f.Close()
	return &imaLog{path: path}, nil
}

// maxIMASlice bounds one read, keeping evidence under the verifier's limit;
// the rest follows in the next attestations.
const maxIMASlice = 8 << 20

// from returns the raw bytes of the entries from entry number first on, as
// far as they are complete, and how many entries that is.
func (l *imaLog) from(first uint64) ([]byte, uint64, error) {
	switch {
	case first == l.entries && first > 0:
	case first >= l.sliceFirst && first < l.sliceFirst+uint64(len(l.starts)):
		l.entries, l.offset = first, l.starts[first-l.sliceFirst]
	default:
		// Not where we left off (first attestation, agent or verifier
		// restart): find entry `first` from the start of the list.
		l.entries, l.offset = 0, 0
	}
	f := l.held
	if f == nil {
		var err error
		if f, err = os.Open(l.path); err != nil {
			return nil, 0, fmt.Errorf("IMA log: %w", err)
		}
		defer f.Close()
	}
	// A kept file is read again from the offset: securityfs regenerates
	// the list at any position, with what the kernel appended since.
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return nil, 0, fmt.Errorf("IMA log: %w", err)
	}
	// securityfs files report size 0: read to EOF.
	data, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("IMA log: %w", err)
	}
	if len(data) == 0 {
		if first > l.entries {
			return nil, 0, fmt.Errorf("IMA log %s has %d entries, the verifier asks from entry %d", l.path, l.entries, first)
		}
		return nil, 0, nil
	}
	if l.format == ima.FormatAuto {
		fm, err := ima.DetectFormat(data)
		if err != nil {
			return nil, 0, fmt.Errorf("IMA log %s: %w", l.path, err)
		}
		l.format = fm
	}
	p := ima.NewParser(data, ima.ParseOptions{Format: l.format, FirstIndex: l.entries})
	start, end := -1, 0
	n := uint64(0)
	idx := l.entries
	base := l.offset
	l.sliceFirst, l.starts = first, l.starts[:0]
	for p.Next() {
		if idx == first {
			start = end
		}
		if idx >= first {
			l.starts = append(l.starts, base+int64(end))
		}
		idx++
		end = p.Offset()
		if idx > first {
			n++
			if end-max(start, 0) >= maxIMASlice {
				break
			}
		}
	}
	// A parse error after whole entries, or on the first new entry in steady
	// state, is an entry the kernel is still writing: it is sent next time.
	// At the very start of the list it means the file is not an IMA list.
	if err := p.Err(); err != nil && end == 0 && l.entries == 0 {
		return nil, 0, fmt.Errorf("IMA log %s: %w", l.path, err)
	}
	// A trailing entry cut by a concurrent append is read next time.
	if first > idx {
		return nil, 0, fmt.Errorf("IMA log %s has %d entries, the verifier asks from entry %d", l.path, idx, first)
	}
	if start < 0 {
		start = end
	}
	l.entries, l.offset = idx, l.offset+int64(end)
	return data[start:end], n, nil
}
