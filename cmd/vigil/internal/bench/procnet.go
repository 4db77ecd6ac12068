package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tcpListen is the st value of a listening socket in /proc/net/tcp{,6}.
const tcpListen = "0A"

// parseListenInodes returns the socket inodes that /proc/net/tcp (or tcp6)
// lists as listening on port. Each line after the header is
// "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...",
// with the local address as HEXIP:HEXPORT.
func parseListenInodes(table []byte, port int) ([]uint64, error) {
	var inodes []uint64
	for n, line := range bytes.Split(table, []byte("\n")) {
		if n == 0 {
			continue // header
		}
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 10", n+1, len(f))
		}
		if f[3] != tcpListen {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			return nil, fmt.Errorf("line %d: local address %q has no port", n+1, f[1])
		}
		p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil {
			return nil, fmt.Errorf("line %d: local port %q: %v", n+1, f[1][i+1:], err)
		}
		if int(p) != port {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: inode %q: %v", n+1, f[9], err)
		}
		if inode != 0 {
			inodes = append(inodes, inode)
		}
	}
	return inodes, nil
}

// findListener returns the process that listens on TCP port on this
// machine, by its socket's inode in /proc/net/tcp{,6} and the process
// holding that socket among /proc/*/fd. It finds only processes whose fd
// directory this process may read (the same user, or root), and refuses to
// guess when several processes hold listening sockets on the port.
func findListener(port int) (int, error) {
	want := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		inodes, err := parseListenInodes(b, port)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", table, err)
		}
		for _, in := range inodes {
			want[fmt.Sprintf("socket:[%d]", in)] = true
		}
	}
	if len(want) == 0 {
		return 0, fmt.Errorf("no socket listens on port %d here", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	found := map[int]bool{}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to look at
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && want[target] {
				found[pid] = true
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("port %d is listened on, but by no process whose file descriptors this user can read", port)
	case 1:
		for pid := range found {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%d processes hold listening sockets on port %d", len(found), port)
}

// isThisMachine reports whether host (a name or an address from a URL)
// is this machine: a loopback address, localhost, or one of its
// interfaces' addresses.
func isThisMachine(host string) bool {
	if host == "localhost" {
		return true
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		addrs, err := net.LookupIP(host)
		if err != nil {
			return false
		}
		ips = addrs
	}
	ifAddrs, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() {
			continue
		}
		local := false
		for _, a := range ifAddrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				local = true
			}
		}
		if !local {
			return false
		}
	}
	return true
}

// processCommand is the command line of pid, for saying whose CPU was read.
func processCommand(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
