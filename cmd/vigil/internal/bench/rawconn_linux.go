package bench

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// A host's socket reads and writes are made with raw system calls, on the
// non-blocking socket the runtime's poller already waits on. Through
// net.Conn each read and write is a syscall the Go scheduler is told of
// (entersyscall), and on a process whose Ps are mostly idle — a load
// generator between attestations — each such entry wakes the runtime's
// sysmon thread from its deep sleep, which then polls every 20 µs for a
// millisecond: measured, that thread alone cost the lean generator ~120 µs
// of CPU per attestation at 500 a second. A raw call keeps its P for the
// few microseconds a socket read or a loopback write takes, and waits for
// readiness through the poller exactly as net.Conn does (deadlines
// included).

// rawConn is a TCP connection with raw reads and writes.
type rawConn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// newRawConn wraps c, or returns it as it is if it is not a TCP
// connection.
func newRawConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawConn{TCPConn: tc, rc: rc}
}

func (c *rawConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EAGAIN {
			return false
		}
		if e == syscall.EINTR {
			return false // the poller finds it ready again at once
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, c.opError("read", err)
	}
	if errno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) Write(b []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	for written < len(b) {
		err := c.rc.Write(func(fd uintptr) bool {
			rest := b[written:]
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
			if e == syscall.EAGAIN || e == syscall.EINTR {
				return false
			}
			if e != 0 {
				errno = e
				return true
			}
			written += int(r)
			return true
		})
		if err != nil {
			return written, c.opError("write", err)
		}
		if errno != 0 {
			return written, c.opError("write", os.NewSyscallError("write", errno))
		}
	}
	return written, nil
}

func (c *rawConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
