//go:build linux

package main

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// The receive time is when the bytes reached the socket, not when they
// were read: a read 80 ms after the write reports the write's moment. EOF
// and the read deadline come through as from a plain connection.
func TestStampConnReceiveTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, last := wrapStamp(raw)
	defer c.Close()
	if _, ok := c.(*stampConn); !ok || last == nil {
		t.Fatalf("wrapStamp gave %T, want *stampConn", c)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
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
