//go:build linux

package agent

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"
)

// DropPrivileges makes the process run as user name, with its primary group
// and its supplementary groups (tss, for the TPM device), for good: root
// is needed only to open the TPM and the securityfs logs, which Hold keeps
// open. Go applies the change to every thread of the process.
func DropPrivileges(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("--user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("--user %s: uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("--user %s: gid %q", name, u.Gid)
	}
	groups := []int{gid}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil && n != gid {
				groups = append(groups, n)
			}
		}
	}
	// Groups first: once the uid is not root, they cannot change.
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("drop privileges to %s: setgroups: %w", name, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("drop privileges to %s: setgid: %w", name, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("drop privileges to %s: setuid: %w", name, err)
	}
	if syscall.Geteuid() != uid || syscall.Setuid(0) == nil {
		return fmt.Errorf("drop privileges to %s: still able to become root", name)
	}
	return nil
}
