package storage

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// yieldingFS hands the CPU back to the gateway's foreground work after
// each write of a memtable flush or a compaction.
//
// Both are CPU-bound for hundreds of milliseconds at a time (reading,
// merging, encoding and compressing blocks), and Go's scheduler lets a
// goroutine that does not block run for up to 10 ms before it preempts
// it. Every REST handler, commit waiter and session writer that becomes
// runnable meanwhile waits behind it; on a node with few cores that is
// one core in two gone for the whole compaction, and the seconds with
// the worst end-to-end latency were the seconds of flushes and
// compactions (docs/benchmarks.md, session 25).
//
// A flush or compaction writes its table through a 4 KiB buffer, so it
// calls Write every few tens of microseconds of work. runtime.Gosched
// there puts it behind the goroutines waiting for that CPU, which run
// first; it goes on when they have run. It gets every CPU nobody else
// wants, so it keeps up with the writes unless the node is short of
// CPU for long. Then the compaction debt grows until Pebble holds commits
// (a write stall, counted in tether_store_write_stalls_total), and while
// a stall lasts nothing yields: the flush or compaction the commits wait
// for runs at full speed. The WAL and everything else are written as
// before.
type yieldingFS struct {
	vfs.FS
	yield   func()       // runtime.Gosched; a test counts
	stalled *atomic.Bool // set while a write stall holds commits
}

func (fs yieldingFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || !background(category) {
		return f, err
	}
	return yieldingFile{f, fs}, nil
}

// background reports whether category is Pebble's for the tables a flush
// or a compaction writes (pebble.getDiskWriteCategoryForCompaction).
func background(category vfs.DiskWriteCategory) bool {
	return category == "pebble-memtable-flush" || category == "pebble-compaction"
}

type yieldingFile struct {
	vfs.File
	fs yieldingFS
}

func (f yieldingFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	if !f.fs.stalled.Load() {
		f.fs.yield()
	}
	return n, err
}
