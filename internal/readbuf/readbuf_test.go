package readbuf

import (
	"bytes"
	"testing"
)

// TestBuffer: bytes survive compaction and growth, growth stops at the
// limit, and an empty buffer goes back to the pool.
func TestBuffer(t *testing.T) {
	p := NewPool(4)
	var b Buffer
	if !b.MakeRoom(p, 16) || len(b.Buf) != 4 || b.bp == nil {
		t.Fatalf("first room: %d bytes, pooled %v", len(b.Buf), b.bp != nil)
	}
	b.W = copy(b.Buf, "abcd")
	b.R = 1
	if !b.MakeRoom(p, 16) || string(b.Pending()) != "bcd" || len(b.Buf) != 4 {
		t.Fatalf("compacted: %q in %d", b.Pending(), len(b.Buf))
	}
	b.W += copy(b.Buf[b.W:], "e")
	if !b.MakeRoom(p, 16) || string(b.Pending()) != "bcde" || len(b.Buf) != 8 || b.bp != nil {
		t.Fatalf("grown: %q in %d", b.Pending(), len(b.Buf))
	}
	b.W += copy(b.Buf[b.W:], "fghi")
	b.MakeRoom(p, 16)
	b.W += copy(b.Buf[b.W:], bytes.Repeat([]byte("x"), 8))
	if b.MakeRoom(p, 16) {
		t.Fatal("room past the limit")
	}
	b.R = b.W
	b.Release(p)
	if b.Buf != nil {
		t.Fatal("released buffer kept")
	}
	b.Take(p)
	if len(b.Buf) != 4 {
		t.Fatalf("taken %d bytes, want the pool's 4", len(b.Buf))
	}
}
