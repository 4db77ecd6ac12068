//go:build !linux

package agent

import "errors"

// DropPrivileges is Linux only.
func DropPrivileges(name string) error {
	return errors.New("--user: dropping privileges is supported on Linux only")
}
