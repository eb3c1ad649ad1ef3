package storage

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
)

// Pebble's stall events count stalls and the time they held commits,
// the stall in progress up to the moment it is read.
func TestStallsCounted(t *testing.T) {
	s := &stalls{}
	if n, d := s.read(time.Now()); n != 0 || d != 0 {
		t.Fatalf("no stall yet: %d, %v", n, d)
	}
	l := eventListener(zap.NewNop(), s, new(atomic.Uint64))
	l.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "memtable count limit reached"})
	if !s.on.Load() {
		t.Fatal("during a stall: not marked as one (flushes and compactions would still yield)")
	}
	time.Sleep(20 * time.Millisecond)
	if n, d := s.read(time.Now()); n != 1 || d < 20*time.Millisecond {
		t.Fatalf("during a stall of 20 ms: %d stalls, %v held", n, d)
	}
	l.WriteStallEnd()
	if s.on.Load() {
		t.Fatal("after the stall: still marked as one")
	}
	n, d := s.read(time.Now())
	time.Sleep(5 * time.Millisecond)
	if n2, d2 := s.read(time.Now()); n != 1 || d < 20*time.Millisecond || d2 != d || n2 != 1 {
		t.Fatalf("after the stall: %d stalls, %v held, then %d, %v", n, d, n2, d2)
	}
	t0 := time.Now()
	s.begin(t0)
	s.end(t0.Add(time.Second))
	s.end(t0.Add(time.Hour)) // an end without a beginning adds nothing
	if n, d2 := s.read(t0.Add(time.Hour)); n != 2 || d2 != d+time.Second {
		t.Fatalf("a second stall of 1 s: %d stalls, %v held (want %v)", n, d2, d+time.Second)
	}
}
