package gateway

import "runtime"

// startProcs is GOMAXPROCS as the runtime chose it when the process
// started, before any gateway changed it: the spare P is added to this
// however many gateways a process opens (tests open many).
var startProcs = runtime.GOMAXPROCS(0)

// procs returns the GOMAXPROCS a gateway sets for Config.Procs, or 0 to
// leave the runtime's setting alone. envSet tells whether the GOMAXPROCS
// environment variable is set.
func procs(want int, envSet bool) int {
	return procsFor(want, envSet, startProcs, runtime.NumCPU())
}

// procsFor is procs with the runtime's choice at start and the CPUs the
// process may run on given.
func procsFor(want int, envSet bool, start, cpus int) int {
	switch {
	case want > 0:
		return want
	case want < 0 || envSet:
		return 0
	case start < cpus:
		return 0 // a CPU quota (cgroup) set the runtime's choice
	}
	return start + 1
}
