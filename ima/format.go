package ima

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// AppendASCII appends e as the kernel prints it in
// ascii_runtime_measurements, newline included.
func AppendASCII(dst []byte, e *Entry) []byte {
	if e.PCR < 10 {
		dst = append(dst, ' ')
	}
	dst = strconv.AppendUint(dst, uint64(e.PCR), 10)
	dst = append(dst, ' ')
	dst = hex.AppendEncode(dst, e.TemplateHash)
	dst = append(dst, ' ')
	dst = append(dst, e.TemplateName...)
	for _, f := range e.Fields {
		dst = append(dst, ' ')
		if len(f.Data) == 0 {
			continue
		}
		switch f.ID.kind() {
		case kindDigestAlgo:
			if i := bytes.IndexByte(f.Data, 0); i >= 0 {
				dst = append(dst, f.Data[:i]...)
				dst = hex.AppendEncode(dst, f.Data[i+1:])
			} else {
				dst = hex.AppendEncode(dst, f.Data)
			}
		case kindString:
			s := f.Data
			if i := bytes.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			dst = append(dst, s...)
		case kindUint:
			// ASCII lists are little-endian in every case Vigil parses
			// without BigEndianHost; render the value the bytes hold.
			var v uint64
			switch len(f.Data) {
			case 1:
				v = uint64(f.Data[0])
			case 2:
				v = uint64(binary.LittleEndian.Uint16(f.Data))
			case 4:
				v = uint64(binary.LittleEndian.Uint32(f.Data))
			case 8:
				v = binary.LittleEndian.Uint64(f.Data)
			}
			dst = strconv.AppendUint(dst, v, 10)
		default:
			dst = hex.AppendEncode(dst, f.Data)
		}
	}
	return append(dst, '\n')
}

// AppendBinary appends e in the binary list format with the given byte
// order (binary.LittleEndian for the canonical form). The template digest
// is written as logged.
func AppendBinary(dst []byte, e *Entry, order binary.AppendByteOrder) []byte {
	dst = order.AppendUint32(dst, e.PCR)
	dst = append(dst, e.TemplateHash...)
	dst = order.AppendUint32(dst, uint32(len(e.TemplateName)))
	dst = append(dst, e.TemplateName...)
	if e.Template == tmplIMA && len(e.Fields) == 2 {
		dst = append(dst, e.Fields[0].Data...)
		dst = order.AppendUint32(dst, uint32(len(e.Fields[1].Data)))
		return append(dst, e.Fields[1].Data...)
	}
	if e.Fields == nil {
		// An unknown template whose fields could not be cut: keep the data.
		dst = order.AppendUint32(dst, uint32(len(e.TemplateData)))
		return append(dst, e.TemplateData...)
	}
	total := 0
	for _, f := range e.Fields {
		total += 4 + len(f.Data)
	}
	dst = order.AppendUint32(dst, uint32(total))
	for _, f := range e.Fields {
		dst = order.AppendUint32(dst, uint32(len(f.Data)))
		dst = append(dst, f.Data...)
	}
	return dst
}
