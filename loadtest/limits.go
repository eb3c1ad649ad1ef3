package main

import (
	"fmt"
	"syscall"
)

// File descriptors: each device session is one socket in the process that
// holds it, and one in the gateway. These machines allow 20,000 open files
// per process, so one process holds at most about 19,000 sessions.

// Reserves of descriptors besides the sessions.
const (
	parentReserve  = 1024 // REST connections, the fakes, pipes, the gateway's log, /proc reads
	workerReserve  = 256  // a worker: pipes, DNS, the runtime
	gatewayReserve = 1024 // the gateway: listeners, REST connections, Pebble's files, provider connections
)

// raiseFileLimit raises RLIMIT_NOFILE's soft limit to the hard limit (as
// far as the process may) and returns the soft limit in effect.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			lim = want
		}
	}
	return lim.Cur
}

// procPlan is how the sessions are split over processes.
type procPlan struct {
	limit     uint64 // this process's open-file limit after raising it
	inProcess bool   // the parent holds every session itself
	workers   int    // worker processes (0 when inProcess)
	perWorker int    // most sessions per worker
	gateway   int    // open files the gateway needs (its ulimit -n)
}

// planProcs decides where the sessions go: in the parent when it may open
// enough files and no worker count is forced, else over just enough worker
// processes (or the forced count).
func planProcs(sessions, forceWorkers, forcePer int, limit uint64) (procPlan, error) {
	p := procPlan{limit: limit, gateway: sessions + gatewayReserve}
	if forceWorkers == 0 && forcePer == 0 && uint64(sessions+parentReserve) <= limit {
		p.inProcess = true
		return p, nil
	}
	capacity := int(limit) - workerReserve
	if capacity < 1 {
		return p, fmt.Errorf("open-file limit %d is too low to hold sessions (raise ulimit -n)", limit)
	}
	per := capacity
	if forcePer > 0 {
		per = min(forcePer, capacity)
	}
	n := (sessions + per - 1) / per
	if forceWorkers > 0 {
		if forceWorkers < n {
			return p, fmt.Errorf("-workers %d cannot hold %d sessions with %d open files each (need %d workers)", forceWorkers, sessions, limit, n)
		}
		n = forceWorkers
	}
	p.workers = n
	p.perWorker = (sessions + n - 1) / n
	return p, nil
}

// describe says how the sessions are split and what the gateway needs.
func (p procPlan) describe(sessions int) string {
	where := fmt.Sprintf("all %d sessions in this process", sessions)
	if !p.inProcess {
		where = fmt.Sprintf("%d sessions over %d worker processes (at most %d each)", sessions, p.workers, p.perWorker)
	}
	return fmt.Sprintf("open-file limit %d per process: %s; the gateway needs ulimit -n >= %d", p.limit, where, p.gateway)
}
