package ima

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// ExcludeListError is an exclude list that cannot be used: it names the
// file and the line (1-based).
type ExcludeListError struct {
	File string
	Line int
	Msg  string
}

func (e *ExcludeListError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// MaxExcludeLine bounds one line of an exclude list; a longer line is not a
// path pattern but a file given by mistake.
const MaxExcludeLine = 4096

// ParseExcludeList reads an exclude list in the format Keylime's
// `keylime-policy create runtime --excludelist` and `keylime_convert_runtime_policy
// --excludelist` read: one regular expression per line, surrounding white
// space trimmed, empty lines and lines starting with '#' skipped (Keylime's
// converter skips them; its creator would take them as patterns). Each
// pattern must compile as a Go (RE2) regular expression, since that is how
// the verifier will match it (CompilePolicy); the first that does not is an
// *ExcludeListError naming file and line. The patterns are returned in file
// order.
func ParseExcludeList(data []byte, file string) ([]string, error) {
	var out []string
	line := 0
	for len(data) > 0 {
		line++
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		if len(raw) > MaxExcludeLine {
			return nil, &ExcludeListError{File: file, Line: line, Msg: fmt.Sprintf("line is %d bytes, longer than %d: not an exclude list", len(raw), MaxExcludeLine)}
		}
		s := strings.TrimSpace(string(raw))
		if s == "" || s[0] == '#' {
			continue
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, &ExcludeListError{File: file, Line: line, Msg: "holds a NUL byte: not an exclude list"}
		}
		if err := checkExclude(s); err != nil {
			return nil, &ExcludeListError{File: file, Line: line, Msg: err.Error()}
		}
		out = append(out, s)
	}
	return out, nil
}

// checkExclude compiles one pattern the way CompilePolicy will use it.
func checkExclude(s string) error {
	if _, err := regexp.Compile(s); err != nil {
		return fmt.Errorf("%q is not a regular expression Vigil (RE2 syntax) accepts: %v", s, err)
	}
	return nil
}

// compileExcludes joins the patterns into one alternation matched at the
// start of the path, as Keylime does (Python's re.match on "(a)|(b)").
func compileExcludes(list []string) (*regexp.Regexp, error) {
	if len(list) == 0 {
		return nil, nil
	}
	parts := make([]string, len(list))
	for i, ex := range list {
		if err := checkExclude(ex); err != nil {
			return nil, &PolicyError{Key: fmt.Sprintf("excludes[%d]", i), Msg: err.Error()}
		}
		parts[i] = "(?:" + ex + ")"
	}
	re, err := regexp.Compile("^(?:" + strings.Join(parts, "|") + ")")
	if err != nil {
		return nil, &PolicyError{Key: "excludes", Msg: err.Error()}
	}
	return re, nil
}
