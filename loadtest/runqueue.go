package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// The kernel's run queue: how long a process's threads were ready to run
// but waited for a CPU, from /proc/<pid>/task/<tid>/schedstat (Linux).
//
// Why: the Go runtime's scheduler latencies (the runnable waits) count
// only a goroutine's wait for one of its process's Ps. When the harness
// and the gateway share a machine, the kernel also keeps the threads that
// hold those Ps waiting for one of the machine's cores, and a goroutine
// "running" on such a thread waits without the runtime seeing it. This
// is that wait, for every thread of the process, so that a report can say
// how much of a latency tail was the machine's oversubscription: on the
// 18,000-session soak on two cores the gateway's threads waited about as
// long again as they ran (docs/benchmarks.md, session 25).

// runQueue is what a process's threads ran and waited so far.
type runQueue struct {
	run, wait float64 // seconds on a CPU, and ready but waiting for one
	ok        bool
}

// readRunQueue sums the schedstat of every thread of pid. Threads that
// have exited no longer count (Go's seldom exit). Not ok where the kernel
// has no schedstat (other systems, or one built without CONFIG_SCHED_INFO).
func readRunQueue(pid int) runQueue {
	if pid <= 0 {
		return runQueue{}
	}
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return runQueue{}
	}
	var out runQueue
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		run, wait, ok := parseSchedstat(b)
		if !ok {
			return runQueue{}
		}
		out.run += run
		out.wait += wait
		out.ok = true
	}
	return out
}

// parseSchedstat reads a schedstat line: nanoseconds on a CPU,
// nanoseconds waiting on a run queue, and time slices run.
func parseSchedstat(b []byte) (run, wait float64, ok bool) {
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, 0, false
	}
	r, err1 := strconv.ParseUint(string(f[0]), 10, 64)
	w, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return float64(r) / 1e9, float64(w) / 1e9, true
}

// add sums the run queues of several processes; ok if any was read.
func (q runQueue) add(o runQueue) runQueue {
	if !o.ok {
		return q
	}
	return runQueue{run: q.run + o.run, wait: q.wait + o.wait, ok: true}
}
