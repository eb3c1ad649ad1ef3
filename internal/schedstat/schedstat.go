// Package schedstat reads how long a process's threads ran and how long
// they were ready to run but waited for a CPU, as the Linux kernel counts
// them in /proc/<pid>/task/<tid>/schedstat. The gateway exports its own
// waits as a metric and the soak harness reports the gateway's and its
// own; both read through here. It imports nothing of Tether's.
//
// Why: Go's scheduler latencies count a goroutine's wait for one of its
// process's Ps, but not the wait of the thread holding that P for a core.
// When a machine's cores are oversubscribed, a goroutine the runtime counts
// as running waits all the same, and only the kernel sees it.
package schedstat

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
)

// Thread is one thread's counts so far, in nanoseconds.
type Thread struct {
	Run  uint64 // on a CPU
	Wait uint64 // ready to run, waiting on a run queue
}

// ErrFormat is returned for a schedstat line this package does not know.
var ErrFormat = errors.New("schedstat: unknown format")

// Parse reads a schedstat line: nanoseconds on a CPU, nanoseconds waiting
// on a run queue, and time slices run.
func Parse(b []byte) (Thread, error) {
	f := bytes.Fields(b)
	if len(f) < 3 {
		return Thread{}, ErrFormat
	}
	run, err1 := strconv.ParseUint(string(f[0]), 10, 64)
	wait, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return Thread{}, ErrFormat
	}
	return Thread{Run: run, Wait: wait}, nil
}

// Read calls f with the counts of every thread under taskDir
// (/proc/<pid>/task, or /proc/self/task), by thread id. A thread that
// exits meanwhile is left out. It fails where the directory cannot be
// read (not Linux, no such process) or a thread's line is not understood
// (a kernel without CONFIG_SCHED_INFO).
func Read(taskDir string, f func(tid string, t Thread)) error {
	ents, err := os.ReadDir(taskDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(taskDir, e.Name(), "schedstat"))
		if err != nil {
			continue // exited meanwhile
		}
		t, err := Parse(b)
		if err != nil {
			return err
		}
		f(e.Name(), t)
	}
	return nil
}

// Sum returns the counts of every thread under taskDir added up.
func Sum(taskDir string) (Thread, error) {
	var sum Thread
	err := Read(taskDir, func(_ string, t Thread) {
		sum.Run += t.Run
		sum.Wait += t.Wait
	})
	return sum, err
}
