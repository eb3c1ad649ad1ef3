package storage

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// The tables of memtable flushes and compactions are written through
// files that yield after each write, except during a write stall; the
// WAL is not. Pebble names the categories it creates files with; were
// they renamed, the flush and the compaction would not yield and this
// fails.
func TestFlushesAndCompactionsYield(t *testing.T) {
	var mu sync.Mutex
	yields := 0
	var stalled atomic.Bool
	fs := yieldingFS{vfs.NewMem(), func() { mu.Lock(); yields++; mu.Unlock() }, &stalled}
	count := func() int { mu.Lock(); defer mu.Unlock(); return yields }
	// No automatic compactions: one could merge the two tables (and
	// yield) before the test counts, leaving the compaction it asks for
	// nothing to rewrite.
	pdb, err := pebble.Open("", &pebble.Options{FS: fs, FormatMajorVersion: pebble.FormatNewest, Logger: pebbleLogger{zap.NewNop().Sugar()},
		DisableAutomaticCompactions: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pdb.Close()

	val := []byte(strings.Repeat("v", 200))
	write := func(round int) {
		for i := range 2000 {
			b := pdb.NewBatch()
			b.Set(fmt.Appendf(nil, "k%06d", i), append(val, byte(round)), nil)
			if err := b.Commit(pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0)
	if n := count(); n != 0 {
		t.Fatalf("2,000 synced commits (the WAL's writes) yielded %d times, want 0", n)
	}
	if err := pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	afterFlush := count()
	if afterFlush == 0 {
		t.Fatal("a flush of 400 KB of keys never yielded")
	}
	write(1)
	stalled.Store(true) // as during a write stall: the flush goes at full speed
	if err := pdb.Flush(); err != nil {
		t.Fatal(err)
	}
	stalled.Store(false)
	if n := count(); n != afterFlush {
		t.Fatalf("a flush during a write stall yielded %d times, want 0", n-afterFlush)
	}
	beforeCompact := count()
	if err := pdb.Compact(t.Context(), []byte("k"), []byte("l"), true); err != nil {
		t.Fatal(err)
	}
	if count() == beforeCompact {
		t.Fatal("a compaction of two tables never yielded")
	}
	for i := range 2000 { // the data is whole after the compaction
		v, c, err := pdb.Get(fmt.Appendf(nil, "k%06d", i))
		if err != nil || len(v) != 201 || v[200] != 1 {
			t.Fatalf("key %d after the compaction: %d bytes, %v", i, len(v), err)
		}
		c.Close()
	}
}
