//go:build !linux

package main

import (
	"net"
	"sync/atomic"
)

// wrapStamp returns c: kernel receive times are read on Linux only
// (stamp_linux.go), and the report then has no "at the socket" figure.
func wrapStamp(c net.Conn) (net.Conn, *atomic.Int64) { return c, nil }
