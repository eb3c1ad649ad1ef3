package main

import (
	"math"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The gateway's store histograms, read from its /metrics page each second:
// how long synced commits (a POST's durability) take, and how long the WAL
// fsyncs inside them take. Side by side they tell a slow disk from a node
// waiting for a CPU, on this machine or on a deployment under test.
//
// With them, the Go scheduler's latencies (how long goroutines were
// runnable before they ran) of the gateway, from the same page, and of
// the harness, from its own runtime: on a machine both share, these are
// the waits for a CPU that every latency above includes.
//
// And the gateway's own timing of the POSTs that send messages (its REST
// handler, from reading the request to writing the 202): beside the
// harness's REST latency it splits a POST's time into the gateway's
// handler and what came before and after it (the harness, the kernel,
// the connection's reader).
const (
	metricCommit = `tether_store_commit_seconds`
	metricFsync  = `tether_store_wal_fsync_seconds`
	metricSched  = `go_sched_latencies_seconds`
	metricHTTP   = `tether_http_request_duration_seconds`
	sendRoute    = `route="POST /v1/apps/{app}/messages"`
)

// storeHists are the gateway's histograms the report reads (the store's
// two and its scheduler's), its store's LSM figures, and when a copy of
// them was taken.
type storeHists struct {
	commit, fsync, sched promHist
	send                 promHist // the send route's handler
	lsm                  lsmCounts
	at                   time.Time
}

// harnessSched returns this process's scheduler latencies so far, as a
// cumulative histogram: runtime/metrics counts each bucket
// [Buckets[i], Buckets[i+1]) apart.
func harnessSched() promHist {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return promHist{}
	}
	return fromRuntimeHist(s[0].Value.Float64Histogram())
}

func fromRuntimeHist(h *metrics.Float64Histogram) promHist {
	var out promHist
	var n uint64
	for i, c := range h.Counts {
		n += c
		out.le = append(out.le, h.Buckets[i+1])
		out.cum = append(out.cum, float64(n))
	}
	out.count = float64(n)
	return out
}

// promHist is a cumulative Prometheus histogram: the count at or below each
// bound (the last bound +Inf), the total count and the sum.
type promHist struct {
	le    []float64
	cum   []float64
	count float64
	sum   float64
}

// scrapeHist reads one line of a /metrics page into h if it belongs to
// the histogram name (with the labels sel, e.g. `sync="true"`, among its
// own): _bucket, _count or _sum. It reports whether the line was one.
func scrapeHist(h *promHist, name, sel, line string) bool {
	rest, ok := strings.CutPrefix(line, name+"_")
	if !ok {
		return false
	}
	i := strings.IndexAny(rest, "{ ")
	if i < 0 {
		return false
	}
	kind, rest := rest[:i], rest[i:]
	if kind != "bucket" && kind != "count" && kind != "sum" {
		return false
	}
	labels, val := "", rest
	if rest[0] == '{' {
		j := strings.LastIndexByte(rest, '}') // label values may hold braces: route="POST /v1/apps/{app}/messages"
		if j < 0 {
			return false
		}
		labels, val = rest[1:j], rest[j+1:]
	}
	if sel != "" && !strings.Contains(labels, sel) {
		return false
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
	if err != nil {
		return false
	}
	switch kind {
	case "count":
		h.count = v
	case "sum":
		h.sum = v
	case "bucket":
		_, le, ok := strings.Cut(labels, `le="`)
		if !ok {
			return false
		}
		le, _, _ = strings.Cut(le, `"`)
		b, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return false
		}
		h.le = append(h.le, b)
		h.cum = append(h.cum, v)
	}
	return true
}

// add adds the observations of cur since prev (the same process, an
// earlier scrape) to h; with prev nil or from before a restart (its counts
// higher), all of cur's. Bounds that differ from h's are dropped: the
// same gateway binary always exports the same.
func (h *promHist) add(cur, prev *promHist) {
	if cur == nil || len(cur.le) == 0 {
		return
	}
	if prev != nil && (prev.count > cur.count || !slices.Equal(prev.le, cur.le)) {
		prev = nil // a new process: everything it counted is new
	}
	if len(h.le) == 0 {
		h.le = slices.Clone(cur.le)
		h.cum = make([]float64, len(cur.le))
	}
	if !slices.Equal(h.le, cur.le) {
		return
	}
	for i := range cur.cum {
		d := cur.cum[i]
		if prev != nil {
			d -= prev.cum[i]
		}
		h.cum[i] += d
	}
	if prev != nil {
		h.count += cur.count - prev.count
		h.sum += cur.sum - prev.sum
	} else {
		h.count += cur.count
		h.sum += cur.sum
	}
}

// clone returns a copy of h.
func (h *promHist) clone() promHist {
	return promHist{le: slices.Clone(h.le), cum: slices.Clone(h.cum), count: h.count, sum: h.sum}
}

// minus returns the observations of h not in earlier (a copy of h taken
// before).
func (h *promHist) minus(earlier promHist) promHist {
	out := h.clone()
	if slices.Equal(h.le, earlier.le) {
		for i := range out.cum {
			out.cum[i] -= earlier.cum[i]
		}
		out.count -= earlier.count
		out.sum -= earlier.sum
	}
	return out
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile
// does: linearly within the bucket holding it (the lowest bucket from 0).
// NaN without observations; the highest finite bound when it falls in the
// +Inf bucket.
func (h *promHist) quantile(q float64) float64 {
	if len(h.cum) == 0 || h.cum[len(h.cum)-1] <= 0 {
		return math.NaN()
	}
	rank := q * h.cum[len(h.cum)-1]
	for i, c := range h.cum {
		if c < rank {
			continue
		}
		if math.IsInf(h.le[i], 1) {
			if i == 0 {
				return math.NaN()
			}
			return h.le[i-1]
		}
		lo, below := 0.0, 0.0
		if i > 0 {
			lo, below = h.le[i-1], h.cum[i-1]
		}
		if c == below {
			return h.le[i]
		}
		return lo + (h.le[i]-lo)*(rank-below)/(c-below)
	}
	return h.le[len(h.le)-1]
}

// runtimeCounts are the gateway's bytes allocated and GC cycles, summed
// over its processes (a restart starts them again from zero).
type runtimeCounts struct{ alloc, gcs float64 }

// add adds what cur counted since prev, an earlier scrape of the same
// process (the zero sample for another one); all of cur's when prev has
// none or counted more (the gateway restarted).
func (c *runtimeCounts) add(cur, prev procSample) {
	if !cur.rt {
		return
	}
	if !prev.rt || cur.alloc < prev.alloc || cur.gcs < prev.gcs {
		prev = procSample{}
	}
	c.alloc += cur.alloc - prev.alloc
	c.gcs += cur.gcs - prev.gcs
}

// lsmCounters are the store's LSM counters, indexed by the lsm* kinds
// below: since a gateway process started in a sample, summed over its
// processes in lsmCounts.
type lsmCounters [lsmCounterKinds]float64

const (
	lsmFlushes = iota
	lsmCompactions
	lsmStalls
	lsmStallSecs
	lsmBadSingleDels // never above 0 but for a bug
	lsmWALBytes      // the bytes the store wrote, by kind
	lsmFlushBytes
	lsmCompactBytes
	lsmCounterKinds
)

// minus returns c - o, counter by counter.
func (c lsmCounters) minus(o lsmCounters) lsmCounters {
	for i := range c {
		c[i] -= o[i]
	}
	return c
}

// lsmSample is one reading of the gateway store's LSM figures: counters
// since the process started, and gauges.
type lsmSample struct {
	c              lsmCounters
	debt, l0, disk float64 // gauges: bytes, sublevels, bytes
	ok             bool
}

// lsmCounts are the store's LSM figures over the gateway's processes: the
// counters summed (a restart starts them again from zero), the gauges'
// peaks, and the space on disk as last read.
type lsmCounts struct {
	c                      lsmCounters
	debtPeak, l0Peak, disk float64
	ok                     bool
}

// add adds what cur counted since prev, an earlier scrape of the same
// process (the zero sample for another one), as runtimeCounts.add does.
func (c *lsmCounts) add(cur, prev lsmSample) {
	if !cur.ok {
		return
	}
	d := cur.c.minus(prev.c)
	if !prev.ok || slices.Min(d[:]) < 0 { // a counter went down: another process
		d = cur.c
	}
	for i := range d {
		c.c[i] += d[i]
	}
	c.debtPeak, c.l0Peak, c.disk, c.ok = max(c.debtPeak, cur.debt), max(c.l0Peak, cur.l0), cur.disk, true
}
