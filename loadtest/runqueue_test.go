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

// A gateway's wait since the last sample: a local restart counts all of the
// new process's, a failed reading (a scrape that timed out) neither adds
// the whole count after it nor a wait it does not know.
func TestGatewayWait(t *testing.T) {
	q := func(w float64) runQueue { return runQueue{wait: w, ok: true} }
	failed := runQueue{}
	for _, c := range []struct {
		name         string
		cur, prev    runQueue
		pid, prevPid int
		local        bool
		want         float64
		wantOK       bool
	}{
		{"the same process", q(101.5), q(100), 7, 7, true, 1.5, true},
		{"a local restart", q(0.3), q(100), 8, 7, true, 0.3, true},
		{"a remote restart: the count went back", q(0.3), q(100), 0, 0, false, 0, true},
		{"a remote reading after a failed scrape", q(160), failed, 0, 0, false, 0, false},
		{"a local reading after a failed one", q(160), failed, 7, 7, true, 0, false},
		{"a failed reading", failed, q(100), 7, 7, true, 0, false},
	} {
		if got, ok := gatewayWait(c.cur, c.prev, c.pid, c.prevPid, c.local); got != c.want || ok != c.wantOK {
			t.Errorf("%s: %v %v, want %v %v", c.name, got, ok, c.want, c.wantOK)
		}
	}
}
