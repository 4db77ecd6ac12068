package wire

import (
	"encoding/binary"
	"math"
)

// A verdict (with the next challenge) is encoded once per attestation, and
// the reflective encoder costs more than the bytes it writes. Marshal
// writes Verdict and Challenge by hand instead (and Evidence,
// evidenceenc.go): the same deterministic CBOR (map keys in the core
// deterministic order — bytewise by their encodings, which for short text
// keys is shorter first, then bytewise — shortest heads, nil byte slices
// as null), byte for byte, which a randomized test holds it to for every
// field of both types.

// appendHead appends a CBOR head with the shortest argument encoding.
func appendHead(dst []byte, major byte, arg uint64) []byte {
	m := major << 5
	switch {
	case arg < 24:
		return append(dst, m|byte(arg))
	case arg <= math.MaxUint8:
		return append(dst, m|24, byte(arg))
	case arg <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(arg))
	case arg <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(arg))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), arg)
}

func appendText(dst []byte, s string) []byte {
	return append(appendHead(dst, 3, uint64(len(s))), s...)
}

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, cborNull)
	}
	return append(appendHead(dst, 2, uint64(len(b))), b...)
}

func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendHead(dst, 1, uint64(-(v + 1)))
	}
	return appendHead(dst, 0, uint64(v))
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, 0xf5)
	}
	return append(dst, 0xf4)
}

// appendVerdict encodes v as Marshal does.
func appendVerdict(dst []byte, v *Verdict) []byte {
	n := 2
	if v.Next != nil {
		n++
	}
	if v.Detail != "" {
		n++
	}
	if v.Reason != "" {
		n++
	}
	dst = appendHead(dst, 5, uint64(n))
	if v.Next != nil {
		dst = appendText(dst, "next")
		dst = appendChallenge(dst, v.Next)
	}
	dst = appendText(appendText(dst, "state"), v.State)
	if v.Detail != "" {
		dst = appendText(appendText(dst, "detail"), v.Detail)
	}
	if v.Reason != "" {
		dst = appendText(appendText(dst, "reason"), v.Reason)
	}
	return appendText(appendText(dst, "agent_id"), v.AgentID)
}

// appendChallenge encodes c as Marshal does.
func appendChallenge(dst []byte, c *Challenge) []byte {
	dst = appendHead(dst, 5, 8)
	dst = appendBytes(appendText(dst, "nonce"), c.Nonce)
	dst = appendText(appendText(dst, "agent_id"), c.AgentID)
	dst = appendBool(appendText(dst, "want_ima"), c.WantIMA)
	dst = appendHead(appendText(dst, "ima_offset"), 0, c.IMAOffset)
	dst = appendInt(appendText(dst, "interval_ms"), c.IntervalMS)
	dst = appendInt(appendText(dst, "expires_in_ms"), c.ExpiresInMS)
	dst = appendBytes(appendText(dst, "pcr_selection"), c.PCRSelection)
	return appendBool(appendText(dst, "want_boot_log"), c.WantBootLog)
}
