package main

import (
	"fmt"

	"tether/internal/schedstat"
)

// The kernel's run queue: how long a process's threads were ready to run
// but waited for a CPU (internal/schedstat, Linux). The report gives it
// for the gateway and the harness so that a reader can tell how much of a
// latency tail was the machine's oversubscription: on the 18,000-session
// soak on two cores the gateway's threads waited nearly twice as long as
// they ran (docs/benchmarks.md, session 25).

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
	sum, err := schedstat.Sum(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return runQueue{}
	}
	return runQueue{run: float64(sum.Run) / 1e9, wait: float64(sum.Wait) / 1e9, ok: true}
}

// add sums the run queues of several processes; ok if any was read.
func (q runQueue) add(o runQueue) runQueue {
	if !o.ok {
		return q
	}
	return runQueue{run: q.run + o.run, wait: q.wait + o.wait, ok: true}
}

// gatewayWait returns what the gateway's threads waited since the last
// sample, from the cumulative readings cur and prev (of processes pid and
// prevPid), and whether that is known. A local gateway's new process
// waited all of its count since then. A reading after a failed one (a
// scrape that timed out) is not a new process: its count covers more than
// the sample, so it only starts the count again, as the CPU's does.
func gatewayWait(cur, prev runQueue, pid, prevPid int, local bool) (float64, bool) {
	switch {
	case cur.ok && prev.ok && pid == prevPid:
		return max(cur.wait-prev.wait, 0), true
	case cur.ok && local && pid != prevPid:
		return cur.wait, true
	}
	return 0, false
}
