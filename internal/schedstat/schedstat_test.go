package schedstat

import (
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte("21900000000 39200000000 263320\n"))
	if err != nil || got != (Thread{Run: 21_900_000_000, Wait: 39_200_000_000}) {
		t.Fatalf("got %+v %v", got, err)
	}
	for _, bad := range []string{"", "12 34", "x 1 2", "1 -2 3"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestReadAndSum(t *testing.T) {
	dir := t.TempDir()
	thread := func(tid, stat string) {
		if err := os.MkdirAll(filepath.Join(dir, tid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, tid, "schedstat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	thread("10", "5000 1000 40\n")
	thread("11", "1000 500 7\n")
	os.MkdirAll(filepath.Join(dir, "12"), 0o755) // exited: no schedstat any more
	seen := map[string]Thread{}
	if err := Read(dir, func(tid string, th Thread) { seen[tid] = th }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen["10"] != (Thread{5000, 1000}) || seen["11"] != (Thread{1000, 500}) {
		t.Fatalf("read %+v", seen)
	}
	if sum, err := Sum(dir); err != nil || sum != (Thread{6000, 1500}) {
		t.Fatalf("sum %+v %v", sum, err)
	}
	thread("11", "not a schedstat")
	if _, err := Sum(dir); err == nil {
		t.Fatal("a malformed line was summed")
	}
	if _, err := Sum(filepath.Join(dir, "none")); err == nil {
		t.Fatal("a missing directory was summed")
	}
}

// This process's threads, on Linux: two goroutines on a thread of their
// own each run 100 ms of CPU (by their thread's own count, however long
// the machine makes them wait), so the process's threads ran 200 ms more.
func TestSumCountsEveryThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("schedstat is Linux's")
	}
	const task = "/proc/self/task"
	before, err := Sum(task)
	if err != nil {
		t.Fatal(err)
	}
	const burn = 100 * time.Millisecond
	threadRun := func() time.Duration {
		b, err := os.ReadFile("/proc/thread-self/schedstat")
		if err != nil {
			t.Error(err)
			return 2 * burn
		}
		th, _ := Parse(b)
		return time.Duration(th.Run)
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
	after, err := Sum(task)
	if err != nil {
		t.Fatal(err)
	}
	if ran := time.Duration(after.Run - before.Run); ran < 2*burn {
		t.Errorf("the threads ran %v more, want at least %v (two threads, %v each)", ran, 2*burn, burn)
	}
	if after.Wait < before.Wait {
		t.Errorf("the wait went back from %d to %d ns", before.Wait, after.Wait)
	}
}
