package simhost

import (
	"crypto"
	_ "crypto/sha1" // registers crypto.SHA1 for the SHA-1 bank
	_ "crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf16"

	"github.com/google/go-tpm/tpm2"
	"github.com/vigil-attest/vigil/internal/tpmfacts"
)

// EventType is a TCG PC Client event type (PC Client Platform Firmware
// Profile, section 10.4.1). The values are written here from the spec rather
// than taken from an event-log library, so that the tests, which parse the
// log with those libraries, check the numbers independently.
type EventType uint32

// The event types the simulated boot writes.
const (
	EvNoAction                   EventType = 0x00000003
	EvSeparator                  EventType = 0x00000004
	EvSCRTMVersion               EventType = 0x00000008
	EvIPL                        EventType = 0x0000000D
	EvEFIVariableDriverConfig    EventType = 0x80000001
	EvEFIVariableBoot            EventType = 0x80000002
	EvEFIBootServicesApplication EventType = 0x80000003
	EvEFIAction                  EventType = 0x80000007
	EvEFIPlatformFirmwareBlob    EventType = 0x80000008
	EvEFIVariableAuthority       EventType = 0x800000E0
)

func (t EventType) String() string {
	switch t {
	case EvNoAction:
		return "EV_NO_ACTION"
	case EvSeparator:
		return "EV_SEPARATOR"
	case EvSCRTMVersion:
		return "EV_S_CRTM_VERSION"
	case EvIPL:
		return "EV_IPL"
	case EvEFIVariableDriverConfig:
		return "EV_EFI_VARIABLE_DRIVER_CONFIG"
	case EvEFIVariableBoot:
		return "EV_EFI_VARIABLE_BOOT"
	case EvEFIBootServicesApplication:
		return "EV_EFI_BOOT_SERVICES_APPLICATION"
	case EvEFIAction:
		return "EV_EFI_ACTION"
	case EvEFIPlatformFirmwareBlob:
		return "EV_EFI_PLATFORM_FIRMWARE_BLOB"
	case EvEFIVariableAuthority:
		return "EV_EFI_VARIABLE_AUTHORITY"
	}
	return fmt.Sprintf("EV_%#08x", uint32(t))
}

// Bank is a PCR bank the simulated host measures into.
type Bank struct {
	Name string
	Alg  tpm2.TPMAlgID
	Hash crypto.Hash
}

// banks are the PCR banks the simulated firmware and IMA extend, in the
// order the log lists them: SHA-1 and SHA-256, what swtpm is manufactured
// with and what real firmware logs.
var banks = [...]Bank{
	{Name: tpmfacts.BankName(tpm2.TPMAlgSHA1), Alg: tpm2.TPMAlgSHA1, Hash: crypto.SHA1},
	{Name: tpmfacts.BankName(tpm2.TPMAlgSHA256), Alg: tpm2.TPMAlgSHA256, Hash: crypto.SHA256},
}

// Digests are an event's digests, one per bank.
type Digests map[tpm2.TPMAlgID][]byte

// digestsOf hashes what was measured in every bank.
func digestsOf(measured []byte) Digests {
	d := make(Digests, len(banks))
	for _, b := range banks {
		h := b.Hash.New()
		h.Write(measured)
		d[b.Alg] = h.Sum(nil)
	}
	return d
}

// Event is one measurement: what the log records and what was extended.
type Event struct {
	PCR  int
	Type EventType
	// Data is the event data as logged.
	Data []byte
	// Digests are what was extended into PCR in each bank.
	Digests Digests
	// Description says what the event stands for, for people.
	Description string
}

// newEvent makes an event whose digests are the hash of measured in each
// bank (often, but not always, the data itself).
func newEvent(pcr int, typ EventType, data, measured []byte, desc string) Event {
	return Event{PCR: pcr, Type: typ, Data: data, Digests: digestsOf(measured), Description: desc}
}

// specIDEvent is the log's first event, in the SHA-1 TCG_PCR_EVENT format
// every log starts with: EV_NO_ACTION on PCR 0, a zero digest, and a
// TCG_EfiSpecIDEvent announcing the crypto-agile format and its banks.
func specIDEvent() []byte {
	var data []byte
	data = append(data, "Spec ID Event03\x00"...)
	data = binary.LittleEndian.AppendUint32(data, 0) // platformClass: client
	data = append(data,
		0, // specVersionMinor
		2, // specVersionMajor
		0, // specErrata
		2, // uintnSize: UINTN is 64 bits
	)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(banks)))
	for _, b := range banks {
		data = binary.LittleEndian.AppendUint16(data, uint16(b.Alg))
		data = binary.LittleEndian.AppendUint16(data, uint16(b.Hash.Size()))
	}
	data = append(data, 0) // vendorInfoSize

	var out []byte
	out = binary.LittleEndian.AppendUint32(out, 0) // PCR 0
	out = binary.LittleEndian.AppendUint32(out, uint32(EvNoAction))
	out = append(out, make([]byte, 20)...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...)
}

// appendEvent2 appends e as a TCG_PCR_EVENT2: PCR index, type, a
// TPML_DIGEST_VALUES with one digest per bank, the data size and the data.
func appendEvent2(dst []byte, e Event) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(e.PCR))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(e.Type))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(banks)))
	for _, b := range banks {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(b.Alg))
		dst = append(dst, e.Digests[b.Alg]...)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e.Data)))
	return append(dst, e.Data...)
}

// guid is an EFI_GUID in its in-memory layout: the first three fields
// little-endian, the last eight bytes as written.
type guid [16]byte

// mustGUID parses the registry form "8BE4DF61-93CA-11D2-AA0D-00E098032B8C".
// It is only called on constants.
func mustGUID(s string) guid {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("simhost: bad GUID constant " + s)
	}
	var g guid
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g
}

// guidFrom derives a version-4-shaped GUID from bytes (a hash), for the
// simulated host's partition, disk and signature-owner GUIDs.
func guidFrom(b []byte) guid {
	var g guid
	copy(g[:], b)
	g[7] = g[7]&0x0f | 0x40
	g[8] = g[8]&0x3f | 0x80
	return g
}

// GUIDs from the UEFI specification and shim.
var (
	efiGlobalVariable        = mustGUID("8BE4DF61-93CA-11D2-AA0D-00E098032B8C")
	efiImageSecurityDatabase = mustGUID("D719B2CB-3D3A-4596-A3BC-DAD00E67656F")
	efiCertX509              = mustGUID("A5C059A1-94E4-4AA7-87B5-AB155C2BF072")
	efiCertSHA256            = mustGUID("C1C41626-504C-4092-ACA9-41F936934328")
	shimLockGUID             = mustGUID("605DAB50-E046-4300-ABB6-3DD810DD8B23")
)

// ucs2 encodes s as UTF-16LE, the CHAR16 strings of UEFI, without a
// terminator.
func ucs2(s string) []byte {
	u := utf16.Encode([]rune(s))
	out := make([]byte, 0, 2*len(u))
	for _, c := range u {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return out
}

// uefiVariableData is the UEFI_VARIABLE_DATA structure that variable events
// carry: GUID, name length in CHAR16s, data length, the unterminated name,
// the data.
func uefiVariableData(vendor guid, name string, data []byte) []byte {
	n := ucs2(name)
	var out []byte
	out = append(out, vendor[:]...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(n)/2))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	out = append(out, n...)
	return append(out, data...)
}

// signatureData is an EFI_SIGNATURE_DATA: the owner's GUID and the
// signature (a DER certificate or a hash).
func signatureData(owner guid, sig []byte) []byte {
	return append(append([]byte(nil), owner[:]...), sig...)
}

// signatureList is one EFI_SIGNATURE_LIST of equally sized entries of one
// type: type GUID, list size, header size (0 here), entry size, entries.
func signatureList(typ guid, owner guid, sigs ...[]byte) []byte {
	if len(sigs) == 0 {
		return nil
	}
	size := 16 + len(sigs[0])
	var out []byte
	out = append(out, typ[:]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(28+size*len(sigs)))
	out = binary.LittleEndian.AppendUint32(out, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(size))
	for _, s := range sigs {
		out = append(out, signatureData(owner, s)...)
	}
	return out
}

// x509Lists is a signature database of certificates: one
// EFI_SIGNATURE_LIST per certificate, since their sizes differ.
func x509Lists(owner guid, certs ...[]byte) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, signatureList(efiCertX509, owner, c)...)
	}
	return out
}

// Device path nodes (UEFI specification, chapter 10).
const (
	dpMedia        = 0x04
	dpMediaHD      = 0x01
	dpMediaFile    = 0x04
	dpEnd          = 0x7f
	dpEndEntire    = 0xff
	mbrTypeGPT     = 0x02
	sigTypeGUID    = 0x02
	loadOptActive  = 0x00000001
	hdNodeLength   = 42
	endNodeLength  = 4
	fileNodeHeader = 4
)

// hdNode is a hard-drive media node naming a GPT partition.
func hdNode(partition uint32, start, size uint64, part guid) []byte {
	out := []byte{dpMedia, dpMediaHD}
	out = binary.LittleEndian.AppendUint16(out, hdNodeLength)
	out = binary.LittleEndian.AppendUint32(out, partition)
	out = binary.LittleEndian.AppendUint64(out, start)
	out = binary.LittleEndian.AppendUint64(out, size)
	out = append(out, part[:]...)
	return append(out, mbrTypeGPT, sigTypeGUID)
}

// fileNode is a file-path media node: a NUL-terminated CHAR16 path.
func fileNode(path string) []byte {
	p := append(ucs2(path), 0, 0)
	out := []byte{dpMedia, dpMediaFile}
	out = binary.LittleEndian.AppendUint16(out, uint16(fileNodeHeader+len(p)))
	return append(out, p...)
}

// endNode ends a device path.
func endNode() []byte {
	return []byte{dpEnd, dpEndEntire, endNodeLength, 0}
}

// devicePath joins nodes and ends the path.
func devicePath(nodes ...[]byte) []byte {
	var out []byte
	for _, n := range nodes {
		out = append(out, n...)
	}
	return append(out, endNode()...)
}

// imageLoadEvent is a UEFI_IMAGE_LOAD_EVENT: where the image sits in
// memory, its length, its link-time address, and its device path.
func imageLoadEvent(addr, length uint64, path []byte) []byte {
	var out []byte
	out = binary.LittleEndian.AppendUint64(out, addr)
	out = binary.LittleEndian.AppendUint64(out, length)
	out = binary.LittleEndian.AppendUint64(out, 0)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(path)))
	return append(out, path...)
}

// loadOption is an EFI_LOAD_OPTION, the content of a Boot#### variable.
func loadOption(desc string, path []byte) []byte {
	var out []byte
	out = binary.LittleEndian.AppendUint32(out, loadOptActive)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(path)))
	out = append(out, ucs2(desc)...)
	out = append(out, 0, 0)
	return append(out, path...)
}

// firmwareBlob is a UEFI_PLATFORM_FIRMWARE_BLOB: a firmware volume's base
// and length.
func firmwareBlob(base, length uint64) []byte {
	var out []byte
	out = binary.LittleEndian.AppendUint64(out, base)
	return binary.LittleEndian.AppendUint64(out, length)
}
