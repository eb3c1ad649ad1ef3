package main

import (
	"os"
	"runtime"
	"testing"
)

// The harness's own threads are read on Linux (internal/schedstat tests
// the counts); no process, no reading.
func TestReadRunQueue(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("schedstat is Linux's")
	}
	if q := readRunQueue(os.Getpid()); !q.ok || q.run <= 0 {
		t.Fatalf("this process: %+v", q)
	}
	if q := readRunQueue(-1); q.ok {
		t.Error("a run queue read for no process")
	}
	sum := runQueue{run: 1, wait: 2, ok: true}.add(runQueue{run: 3, wait: 4, ok: true}).add(runQueue{run: 9, wait: 9})
	if sum != (runQueue{run: 4, wait: 6, ok: true}) {
		t.Errorf("two processes and an unread one added up to %+v", sum)
	}
}
