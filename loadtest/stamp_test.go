//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The receive time is when the bytes reached the socket, not when they
// were read: a read 80 ms after the write reports the write's moment. EOF
// and the read deadline come through as from a plain connection.
func TestStampConnReceiveTime(t *testing.T) {
	c, last, srv := stampPair(t)
	if last.Load() != 0 {
		t.Fatal("a receive time before any read")
	}

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing sent: %v, want the deadline", err)
	}
	c.SetReadDeadline(time.Time{})

	wrote := time.Now()
	if _, err := srv.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(80 * time.Millisecond)
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	read := time.Now()
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	at := time.Unix(0, last.Load())
	if at.Before(wrote.Add(-time.Millisecond)) || read.Sub(at) < 60*time.Millisecond {
		t.Fatalf("receive time %v after the write, %v before the read; want about the write's", at.Sub(wrote), read.Sub(at))
	}

	srv.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want EOF", n, err)
	}
}

// receiveTime skips other control messages and stops at malformed ones.
func TestReceiveTimeParsing(t *testing.T) {
	if got := receiveTime(nil); got != 0 {
		t.Fatalf("no control message: %d", got)
	}
	if got := receiveTime(make([]byte, 8)); got != 0 {
		t.Fatalf("a short one: %d", got)
	}
	bad := make([]byte, 32) // a header claiming more than there is
	bad[0] = 200
	if got := receiveTime(bad); got != 0 {
		t.Fatalf("a header longer than the buffer: %d", got)
	}
}

// cmsg builds one control message as the kernel lays it out (amd64 and
// arm64: a 16-byte header, the data, padding to 8 bytes).
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, 16, 16+len(data)+7)
	binary.NativeEndian.PutUint64(b, uint64(16+len(data)))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	b = append(b, data...)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// timespec is a struct timespec of sec and nsec.
func timespec(sec, nsec int64) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint64(b, uint64(sec))
	binary.NativeEndian.PutUint64(b[8:], uint64(nsec))
	return b
}

// The time is found behind another control message, and not in one of
// another type or level.
func TestReceiveTimeAfterOther(t *testing.T) {
	want := time.Unix(1_800_000_000, 123).UnixNano()
	oob := append(cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, []byte{1, 0, 0, 0}), cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(1_800_000_000, 123))...)
	if got := receiveTime(oob); got != want {
		t.Fatalf("got %d, want %d", got, want)
	}
	if got := receiveTime(cmsg(unix.SOL_IP, unix.SCM_TIMESTAMPNS, timespec(1, 2))); got != 0 {
		t.Fatalf("another level's message read as the time: %d", got)
	}
	if got := receiveTime(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, []byte{1, 2, 3})); got != 0 {
		t.Fatalf("a message too short for a timespec read as the time: %d", got)
	}
}

// FuzzReceiveTime: any bytes the kernel might hand back are read without
// a panic or a read past them.
func FuzzReceiveTime(f *testing.F) {
	f.Add(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(1_800_000_000, 5)))
	f.Add(append(cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, []byte{1, 0, 0, 0}), cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(7, 8))...))
	f.Add([]byte{})
	f.Add(make([]byte, 15))
	f.Fuzz(func(t *testing.T, oob []byte) {
		receiveTime(oob[:len(oob):len(oob)])
	})
}

// A read allocates nothing, as a plain connection's does: it runs for
// every segment every device receives.
func TestStampConnReadAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c, _, srv := stampPair(t)
	buf, one := make([]byte, 64), []byte("x")
	if n := testing.AllocsPerRun(200, func() {
		srv.Write(one)
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%.1f allocations per read, want 0", n)
	}
}

// stampPair connects a device's wrapped connection to a loopback peer;
// the test's cleanup closes both.
func stampPair(t *testing.T) (c net.Conn, last *atomic.Int64, srv net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, last = wrapStamp(raw)
	t.Cleanup(func() { c.Close() })
	if _, ok := c.(*stampConn); !ok || last == nil {
		t.Fatalf("wrapStamp gave %T, want *stampConn", c)
	}
	if srv, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return c, last, srv
}
