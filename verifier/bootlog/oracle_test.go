package bootlog_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm/tpm2"

	"github.com/vigil-attest/vigil/internal/testenv"
	"github.com/vigil-attest/vigil/verifier/evidence"
)

// realLog is a log from a real machine and the PCR values an outside
// source says it replays to.
type realLog struct {
	name string
	raw  []byte
	pcrs evidence.PCRValues
	// fromTPM is true when the values were read from the machine's TPM,
	// false when another implementation replayed them.
	fromTPM bool
}

// tpm2ToolsLogs reads the shared test data: real UEFI logs and the values
// tpm2-tools' tpm2_eventlog replays them to.
func tpm2ToolsLogs(t *testing.T) []realLog {
	t.Helper()
	b, err := os.ReadFile(testenv.Data(t, "uefi", "expected-pcrs-by-tpm2_eventlog.json"))
	if err != nil {
		t.Fatal(err)
	}
	var oracle map[string]evidence.PCRValues
	if err := json.Unmarshal(b, &oracle); err != nil {
		t.Fatal(err)
	}
	var out []realLog
	for name, pcrs := range oracle {
		raw, err := os.ReadFile(testenv.Data(t, "uefi", name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, realLog{name: name, raw: raw, pcrs: pcrs})
	}
	if len(out) == 0 {
		t.Fatal("no logs in the tpm2_eventlog oracle")
	}
	return out
}

// goEventlogLogs are go-eventlog's embedded real logs. The PCR values read
// from those machines' TPMs live in go-eventlog's own test file, which is not
// importable; it is read from the module cache with go/parser, so nothing is
// copied. Skips when the module source is not there.
func goEventlogLogs(t *testing.T) []realLog {
	t.Helper()
	raws := map[string][]byte{
		"ArchLinuxWorkstationEventLog":   testdata.ArchLinuxWorkstationEventLog,
		"Debian10EventLog":               testdata.Debian10EventLog,
		"GlinuxAlexEventLog":             testdata.GlinuxAlexEventLog,
		"Rhel8EventLog":                  testdata.Rhel8EventLog,
		"Ubuntu1804AmdSevEventLog":       testdata.Ubuntu1804AmdSevEventLog,
		"Ubuntu2104NoDbxEventLog":        testdata.Ubuntu2104NoDbxEventLog,
		"Ubuntu2104NoSecureBootEventLog": testdata.Ubuntu2104NoSecureBootEventLog,
		"Ubuntu2404AmdSevSnpEventLog":    testdata.Ubuntu2404AmdSevSnpEventLog,
		"Cos85AmdSevEventLog":            testdata.Cos85AmdSevEventLog,
		"Cos93AmdSevEventLog":            testdata.Cos93AmdSevEventLog,
		"Cos101AmdSevEventLog":           testdata.Cos101AmdSevEventLog,
		"Cos121AmdSevEventLog":           testdata.Cos121AmdSevEventLog,
		"GdcHost":                        testdata.GdcHost,
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-eventlog").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		testenv.Missing(t, fmt.Sprintf("go-eventlog module source not found: %v", err))
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "tpmeventlog", "replay_test.go")
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("go-eventlog's replay_test.go: %v", err))
	}
	var logs []realLog
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Values) != 1 {
			return true
		}
		lit, ok := spec.Values[0].(*ast.CompositeLit)
		if !ok || !isIdent(lit.Type, "eventLog") {
			return true
		}
		l := realLog{name: spec.Names[0].Name, pcrs: make(evidence.PCRValues), fromTPM: true}
		for _, elt := range lit.Elts {
			kv, ok := elt.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			switch {
			case isIdent(kv.Key, "RawLog"):
				if sel, ok := kv.Value.(*ast.SelectorExpr); ok {
					l.raw = raws[sel.Sel.Name]
				}
			case isIdent(kv.Key, "Banks"):
				banks, _ := kv.Value.(*ast.CompositeLit)
				if banks == nil {
					continue
				}
				for _, b := range banks.Elts {
					readBank(t, b, l.pcrs)
				}
			}
		}
		if l.raw != nil && len(l.pcrs) > 0 {
			logs = append(logs, l)
		}
		return true
	})
	if len(logs) == 0 {
		testenv.Missing(t, "no logs with expected PCRs found in go-eventlog's replay_test.go")
	}
	return logs
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// readBank reads testutil.MakePCRBank(pb.HashAlgo_SHAx, map[uint32][]byte{i: decodeHex("..."), ...}).
func readBank(t *testing.T, e ast.Expr, into evidence.PCRValues) {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 2 {
		return
	}
	sel, ok := call.Args[0].(*ast.SelectorExpr)
	if !ok {
		return
	}
	alg, err := evidence.ParseBank(strings.TrimPrefix(sel.Sel.Name, "HashAlgo_"))
	if err != nil {
		return
	}
	m, ok := call.Args[1].(*ast.CompositeLit)
	if !ok {
		return
	}
	for _, elt := range m.Elts {
		kv, ok := elt.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		idxLit, ok1 := kv.Key.(*ast.BasicLit)
		dh, ok2 := kv.Value.(*ast.CallExpr)
		if !ok1 || !ok2 || len(dh.Args) != 1 {
			continue
		}
		hexLit, ok := dh.Args[0].(*ast.BasicLit)
		if !ok {
			continue
		}
		idx, err1 := strconv.Atoi(idxLit.Value)
		s, err2 := strconv.Unquote(hexLit.Value)
		v, err3 := hex.DecodeString(s)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("unexpected expected-PCR literal %s: %s", idxLit.Value, hexLit.Value)
		}
		into.Set(alg, idx, v)
	}
}

// bankOrder lists a value set's banks in a fixed order.
func bankOrder(p evidence.PCRValues) []tpm2.TPMAlgID {
	var out []tpm2.TPMAlgID
	for _, a := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384} {
		if _, ok := p[a]; ok {
			out = append(out, a)
		}
	}
	return out
}
