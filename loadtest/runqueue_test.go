package main

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestParseSchedstat(t *testing.T) {
	run, wait, ok := parseSchedstat([]byte("21900000000 39200000000 263320\n"))
	if !ok || run != 21.9 || wait != 39.2 {
		t.Fatalf("got %v %v %v, want 21.9 s run, 39.2 s waited", run, wait, ok)
	}
	for _, bad := range []string{"", "12 34", "x 1 2", "1 -2 3"} {
		if _, _, ok := parseSchedstat([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// The run time read for this process grows by the CPU time its threads
// burn, on every thread: two goroutines on a thread of their own each
// run 100 ms of CPU (by their thread's own count, however long the
// machine makes them wait), so the process's threads ran 200 ms more.
func TestReadRunQueueCountsEveryThread(t *testing.T) {
	before := readRunQueue(os.Getpid())
	if !before.ok {
		if _, err := os.Stat("/proc/self/task"); err != nil {
			t.Skip("no /proc here")
		}
		t.Fatal("no schedstat read for this process")
	}
	const burn = 0.1 // seconds of CPU per thread
	threadRun := func() float64 {
		b, err := os.ReadFile("/proc/thread-self/schedstat")
		if err != nil {
			t.Error(err)
			return burn * 2
		}
		run, _, _ := parseSchedstat(b)
		return run
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			start, giveUp := threadRun(), time.Now().Add(10*time.Second)
			for threadRun()-start < burn && time.Now().Before(giveUp) {
				for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
				}
			}
		})
	}
	wg.Wait()
	after := readRunQueue(os.Getpid())
	if ran := after.run - before.run; ran < 2*burn {
		t.Errorf("the threads ran %.3f s more, want at least %.3f (two threads, %.3f each)", ran, 2*burn, burn)
	}
	if after.wait < before.wait {
		t.Errorf("the wait went back from %.3f to %.3f s", before.wait, after.wait)
	}
	if q := readRunQueue(-1); q.ok {
		t.Error("a run queue read for no process")
	}
}
