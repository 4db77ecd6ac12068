package nodeproof

import (
	"bytes"
	"strings"
	"testing"
)

func TestQualifyingDataIsLabelled(t *testing.T) {
	c := bytes.Repeat([]byte{7}, 32)
	q := QualifyingData(c)
	if len(q) != 32 || bytes.Equal(q, c) {
		t.Fatalf("QualifyingData(c) = %x: want a 32-byte hash that is not c", q)
	}
	if bytes.Equal(q, QualifyingData(bytes.Repeat([]byte{8}, 32))) {
		t.Fatal("two challenges give one qualifying data")
	}
}

func TestParseNamesTheField(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"version":1,"challenge":"AAAA"}`, "challenge: 3 bytes"},
		{`{"version":3,"challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, "version 3"},
		{`{"version":1,"challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","x":1}`, "unknown field"},
		{`{"version":1,"challenge":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="} {}`, "trailing data"},
	} {
		if _, err := ParseRequest([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRequest(%s) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"version":1,"agent_id":"../x","attest":"AQ==","signature":"AQ=="}`, "field agent_id"},
		{`{"version":1,"agent_id":"h","signature":"AQ=="}`, "field attest"},
		{`{"version":1,"agent_id":"h","attest":"AQ=="}`, "field signature"},
	} {
		if _, err := ParseProof([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseProof(%s) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}
