package ima

import (
	"fmt"
	"strings"
)

// FieldID names one template field as the kernel's ima_template.c does.
type FieldID uint8

// Template fields (Documentation/security/IMA-templates.rst).
const (
	FieldUnknown      FieldID = iota
	FieldD                    // "d": bare digest, 'ima' template only
	FieldN                    // "n": name, 'ima' template only (padded when hashed)
	FieldDNG                  // "d-ng": "<algo>:\0" + digest
	FieldDNGv2                // "d-ngv2": "<type>:<algo>:\0" + digest
	FieldNNG                  // "n-ng": name + NUL
	FieldSig                  // "sig": security.ima signature (may be empty)
	FieldBuf                  // "buf": measured buffer (ima-buf)
	FieldDModsig              // "d-modsig": digest covered by an appended signature
	FieldModsig               // "modsig": appended signature (PKCS#7)
	FieldEvmsig               // "evmsig": portable EVM signature
	FieldIUID                 // "iuid": inode uid (u32)
	FieldIGID                 // "igid": inode gid (u32)
	FieldIMode                // "imode": inode mode (u16)
	FieldXattrNames           // "xattrnames": '|'-separated names
	FieldXattrLengths         // "xattrlengths"
	FieldXattrValues          // "xattrvalues"
)

var fieldNames = [...]string{
	FieldUnknown:      "?",
	FieldD:            "d",
	FieldN:            "n",
	FieldDNG:          "d-ng",
	FieldDNGv2:        "d-ngv2",
	FieldNNG:          "n-ng",
	FieldSig:          "sig",
	FieldBuf:          "buf",
	FieldDModsig:      "d-modsig",
	FieldModsig:       "modsig",
	FieldEvmsig:       "evmsig",
	FieldIUID:         "iuid",
	FieldIGID:         "igid",
	FieldIMode:        "imode",
	FieldXattrNames:   "xattrnames",
	FieldXattrLengths: "xattrlengths",
	FieldXattrValues:  "xattrvalues",
}

func (f FieldID) String() string {
	if int(f) < len(fieldNames) {
		return fieldNames[f]
	}
	return "?"
}

func fieldFromString(s string) FieldID {
	for i, n := range fieldNames {
		if i > 0 && n == s {
			return FieldID(i)
		}
	}
	return FieldUnknown
}

// fieldKind says how the ASCII list renders a field, which is what the
// parser must undo to rebuild the hashed bytes.
type fieldKind uint8

const (
	kindHex        fieldKind = iota // lowercase hex, empty when the field is empty
	kindDigestAlgo                  // "<prefix>:<hex>" for "<prefix>:\0<digest>"
	kindString                      // printed as is; n-ng and n carry a NUL in the data
	kindUint                        // decimal
)

func (f FieldID) kind() fieldKind {
	switch f {
	case FieldDNG, FieldDNGv2, FieldDModsig:
		return kindDigestAlgo
	case FieldN, FieldNNG, FieldXattrNames:
		return kindString
	case FieldIUID, FieldIGID, FieldIMode:
		return kindUint
	}
	return kindHex
}

// Template is a template descriptor: a name and its fields in order.
type Template struct {
	Name   string
	Fields []FieldID
}

// The kernel's built-in templates (security/integrity/ima/ima_template.c).
// These are read-only tables, never modified after initialisation.
var (
	tmplIMA       = &Template{"ima", []FieldID{FieldD, FieldN}}
	tmplIMANG     = &Template{"ima-ng", []FieldID{FieldDNG, FieldNNG}}
	tmplIMANGv2   = &Template{"ima-ngv2", []FieldID{FieldDNGv2, FieldNNG}}
	tmplIMASig    = &Template{"ima-sig", []FieldID{FieldDNG, FieldNNG, FieldSig}}
	tmplIMASigv2  = &Template{"ima-sigv2", []FieldID{FieldDNGv2, FieldNNG, FieldSig}}
	tmplIMABuf    = &Template{"ima-buf", []FieldID{FieldDNG, FieldNNG, FieldBuf}}
	tmplIMAModsig = &Template{"ima-modsig", []FieldID{FieldDNG, FieldNNG, FieldSig, FieldDModsig, FieldModsig}}
	tmplEVMSig    = &Template{"evm-sig", []FieldID{FieldDNG, FieldNNG, FieldEvmsig, FieldXattrNames,
		FieldXattrLengths, FieldXattrValues, FieldIUID, FieldIGID, FieldIMode}}
)

// maxFields is the kernel's IMA_TEMPLATE_NUM_FIELDS_MAX.
const maxFields = 15

// maxTemplateName bounds the template name the parsers accept. The kernel's
// longest (a custom format string) is 70 bytes.
const maxTemplateName = 255

// builtinTemplate looks a template up by name without allocating.
func builtinTemplate(name []byte) *Template {
	switch string(name) {
	case "ima":
		return tmplIMA
	case "ima-ng":
		return tmplIMANG
	case "ima-ngv2":
		return tmplIMANGv2
	case "ima-sig":
		return tmplIMASig
	case "ima-sigv2":
		return tmplIMASigv2
	case "ima-buf":
		return tmplIMABuf
	case "ima-modsig":
		return tmplIMAModsig
	case "evm-sig":
		return tmplEVMSig
	}
	return nil
}

// formatTemplate interprets a custom template: when ima_template_fmt= is
// used, the list names the template by its format string ("d-ng|n-ng|sig").
func formatTemplate(name string) (*Template, error) {
	parts := strings.Split(name, "|")
	if len(parts) > maxFields {
		return nil, fmt.Errorf("template format %q has %d fields, more than %d", name, len(parts), maxFields)
	}
	t := &Template{Name: name, Fields: make([]FieldID, len(parts))}
	for i, p := range parts {
		f := fieldFromString(p)
		if f == FieldUnknown {
			return nil, fmt.Errorf("unknown template %q", name)
		}
		t.Fields[i] = f
	}
	return t, nil
}
