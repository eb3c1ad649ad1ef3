package session

import (
	"testing"
	"unsafe"
)

// Every connection holds a Session, parked or not, so its size is part of
// the memory per session (docs/benchmarks.md). A change to it must be
// deliberate: update the figure here with the reason.
func TestSessionSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the figure is for 64-bit platforms")
	}
	// 536: the pooled buffers of queued message frames (outBufs, 24 B)
	// were added to 512 to spare an allocation per delivery.
	const want = 536
	if got := unsafe.Sizeof(Session{}); got != want {
		t.Fatalf("Session is %d bytes, pinned at %d: if the growth is meant, update the figure and say why", got, want)
	}
}
