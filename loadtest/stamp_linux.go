package main

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stampConn reads a device's TCP connection with recvmsg and keeps the
// kernel's receive time (SO_TIMESTAMPNS) of the newest segment each read
// returned: when the message's bytes reached the device's socket, before
// the harness's reader was scheduled to read them. On loopback that is
// the moment the gateway's write reached the kernel. The figure it gives
// (the report's "at the socket" latency) leaves out the harness's own wait
// for a CPU on the receiving side, which a device on another machine does
// not add to the gateway's latency.
//
// A read that returns several segments keeps the newest one's time, so a
// message that came in an earlier segment is counted late, never early.
type stampConn struct {
	net.Conn // reads go through rc instead
	rc       syscall.RawConn
	last     atomic.Int64 // unix ns of the newest segment read; 0: none yet

	// One read at a time: its header, result and control messages live
	// here and recv is bound once, so that a read allocates nothing (a
	// closure per read and unix.Recvmsg's own were four allocations).
	msg    unix.Msghdr
	iov    unix.Iovec
	n      int
	errno  syscall.Errno
	recvFn func(fd uintptr) bool
	oob    [64]byte
}

// wrapStamp returns c reading through recvmsg with receive times, and
// where the newest receive time is kept (unix ns, 0 until the first read);
// or c itself and nil when c is not TCP or the kernel refuses the option.
func wrapStamp(c net.Conn) (net.Conn, *atomic.Int64) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return c, nil
	}
	s := &stampConn{Conn: c, rc: rc}
	s.msg.Iov, s.msg.Iovlen = &s.iov, 1
	s.msg.Control = &s.oob[0]
	s.recvFn = s.recv
	return s, &s.last
}

// recv is one recvmsg with c.msg, for rc.Read: false to wait for input.
func (c *stampConn) recv(fd uintptr) bool {
	c.msg.SetControllen(len(c.oob))
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
	c.n, c.errno = int(r), e
	return e != unix.EAGAIN
}

func (c *stampConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.iov.Base = &p[0]
	c.iov.SetLen(len(p))
	err := c.rc.Read(c.recvFn)
	c.iov.Base = nil // p is the caller's
	switch {
	case err != nil: // closed, or the read deadline
		return 0, err
	case c.errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("recvmsg", c.errno)}
	case c.n == 0:
		return 0, io.EOF
	}
	// A read without a time (the kernel had none for the segment) leaves
	// none: an older one would count the message early.
	c.last.Store(receiveTime(c.oob[:min(int(c.msg.Controllen), len(c.oob))]))
	return c.n, nil
}

// receiveTime finds the SCM_TIMESTAMPNS control message in oob and returns
// its time in unix ns, 0 if there is none.
func receiveTime(oob []byte) int64 {
	const hdr = unix.SizeofCmsghdr
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= hdr+int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hdr]))
			return ts.Nano()
		}
		next := cmsgAlign(l)
		if next >= len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

// cmsgAlign rounds n up to the alignment of control messages.
func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}
