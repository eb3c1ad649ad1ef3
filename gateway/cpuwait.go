package gateway

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"tether/internal/schedstat"
)

// cpuWaitCollector exports how long the gateway waited for CPUs it did not
// get, as the kernel counts it (Linux; on other systems it exports
// nothing):
//
//   - tether_process_cpu_wait_seconds_total: the time the process's
//     threads were ready to run but waited on a run queue for a core
//     (/proc/self/task/*/schedstat, summed over the threads; see
//     internal/schedstat);
//   - tether_cgroup_cpu_throttled_seconds_total: the time the process's
//     cgroup was held off the CPUs by its CPU limit (cpu.stat, cgroup v2
//     or v1), which a container's quota causes and node-level figures
//     do not show.
//
// Why: go_sched_latencies_seconds counts a goroutine's wait for one of the
// process's Ps, but not the wait of the thread holding that P for a core:
// a goroutine the runtime counts as running is waiting all the same when
// the node's cores are oversubscribed (other processes, noisy neighbours)
// or the cgroup's quota is spent. On the soak's two shared cores the
// gateway's threads waited nearly twice as long as they ran
// (docs/benchmarks.md, session 25), and that wait, not the gateway's
// work, was the latency tail.
type cpuWaitCollector struct {
	wait, throttled *prometheus.Desc
	cgroupStat      string // cpu.stat of our cgroup, "" if none found
	cgroupV1        bool   // throttled_time in ns, not throttled_usec

	mu      sync.Mutex
	threads map[string]uint64 // each live thread's wait last read, ns
	total   uint64            // ns, of every thread read so far, exited ones included
}

func newCPUWaitCollector() *cpuWaitCollector {
	c := &cpuWaitCollector{
		wait: prometheus.NewDesc("tether_process_cpu_wait_seconds_total",
			"Time the gateway's threads were ready to run but waited for a CPU (the kernel's run queue, summed over threads). Its rate is the number of threads waiting on average; near the cores' count, latency is the node's oversubscription.", nil, nil),
		throttled: prometheus.NewDesc("tether_cgroup_cpu_throttled_seconds_total",
			"Time the gateway's cgroup was held off the CPUs by its CPU limit (a container's quota).", nil, nil),
		threads: map[string]uint64{},
	}
	if cg, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		c.cgroupStat, c.cgroupV1 = cgroupCPUStat("/sys/fs/cgroup", cg)
	}
	return c
}

func (c *cpuWaitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.wait
	ch <- c.throttled
}

func (c *cpuWaitCollector) Collect(ch chan<- prometheus.Metric) {
	if w, ok := c.readWait("/proc/self/task"); ok {
		ch <- prometheus.MustNewConstMetric(c.wait, prometheus.CounterValue, w)
	}
	if c.cgroupStat != "" {
		if b, err := os.ReadFile(c.cgroupStat); err == nil {
			if t, ok := throttledSeconds(b, c.cgroupV1); ok {
				ch <- prometheus.MustNewConstMetric(c.throttled, prometheus.CounterValue, t)
			}
		}
	}
}

// readWait adds up what each thread under dir waited since it was last
// read, so that the total never goes back when a thread exits.
func (c *cpuWaitCollector) readWait(dir string) (seconds float64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]uint64, len(c.threads)+4)
	total := c.total
	err := schedstat.Read(dir, func(tid string, t schedstat.Thread) {
		if prev, ok := c.threads[tid]; ok && t.Wait >= prev {
			total += t.Wait - prev
		} else {
			total += t.Wait // a new thread, or a new one given an exited one's id
		}
		seen[tid] = t.Wait
	})
	if err != nil {
		return 0, false
	}
	c.threads, c.total = seen, total
	return float64(c.total) / 1e9, true
}

// cgroupCPUStat finds the cpu.stat of the cgroup that /proc/self/cgroup
// (its content, cg) names, under root: cgroup v2's unified hierarchy, or
// v1's cpu controller. A container whose cgroup paths are the host's sees
// its own cgroup at the root of each mount, tried last. "" when there is
// none with a throttled time.
func cgroupCPUStat(root string, cg []byte) (path string, v1 bool) {
	type candidate struct {
		dir string
		v1  bool // throttled_time, not v2's throttled_usec
	}
	var v2s, v1s []candidate
	sc := bufio.NewScanner(bytes.NewReader(cg))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			for _, dir := range []string{filepath.Join(root, parts[2]), filepath.Join(root, "unified", parts[2]), root} {
				v2s = append(v2s, candidate{dir, false})
			}
		case slices.Contains(strings.Split(parts[1], ","), "cpu"):
			for _, dir := range []string{filepath.Join(root, parts[1], parts[2]), filepath.Join(root, parts[1])} {
				v1s = append(v1s, candidate{dir, true})
			}
		}
	}
	// v2 first. A v2 cgroup has throttling figures only where the cpu
	// controller is enabled; usage alone is there always.
	for _, c := range append(v2s, v1s...) {
		key := "throttled_usec"
		if c.v1 {
			key = "throttled_time"
		}
		p := filepath.Join(c.dir, "cpu.stat")
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(key)) {
			return p, c.v1
		}
	}
	return "", false
}

// throttledSeconds reads the throttled time from a cpu.stat: v2's
// throttled_usec, v1's throttled_time (ns).
func throttledSeconds(stat []byte, v1 bool) (float64, bool) {
	key, unit := "throttled_usec", 1e6
	if v1 {
		key, unit = "throttled_time", 1e9
	}
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false
		}
		return float64(n) / unit, true
	}
	return 0, false
}
