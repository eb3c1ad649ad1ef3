package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// page is part of a gateway /metrics page, with the counts scaled by k.
func page(k float64) string {
	var b strings.Builder
	for _, l := range []struct {
		line string
		v    float64
	}{
		{`tether_store_commit_seconds_bucket{sync="false",le="0.001"}`, 900},
		{`tether_store_commit_seconds_bucket{sync="false",le="+Inf"}`, 1000},
		{`tether_store_commit_seconds_count{sync="false"}`, 1000},
		{`tether_store_commit_seconds_bucket{sync="true",le="0.001"}`, 10},
		{`tether_store_commit_seconds_bucket{sync="true",le="0.01"}`, 50},
		{`tether_store_commit_seconds_bucket{sync="true",le="0.1"}`, 100},
		{`tether_store_commit_seconds_bucket{sync="true",le="+Inf"}`, 100},
		{`tether_store_commit_seconds_sum{sync="true"}`, 2},
		{`tether_store_commit_seconds_count{sync="true"}`, 100},
		{`tether_store_fsyncs_total`, 20},
		{`tether_store_wal_fsync_seconds_bucket{le="0.0005"}`, 10},
		{`tether_store_wal_fsync_seconds_bucket{le="0.009299119756734196"}`, 20},
		{`tether_store_wal_fsync_seconds_bucket{le="+Inf"}`, 20},
		{`tether_store_wal_fsync_seconds_sum`, 0.05},
		{`tether_store_wal_fsync_seconds_count`, 20},
	} {
		b.WriteString(l.line + " " + strconv.FormatFloat(l.v*k, 'g', -1, 64) + "\n")
	}
	return b.String()
}

func parsePage(t *testing.T, s string) (commit, fsync promHist) {
	t.Helper()
	for _, line := range strings.Split(s, "\n") {
		_ = scrapeHist(&commit, metricCommit, `sync="true"`, line) || scrapeHist(&fsync, metricFsync, "", line)
	}
	return commit, fsync
}

func TestStoreHistScrape(t *testing.T) {
	c, f := parsePage(t, page(1))
	require.Equal(t, []float64{0.001, 0.01, 0.1, math.Inf(1)}, c.le, "the synced commits only")
	require.Equal(t, []float64{10, 50, 100, 100}, c.cum)
	require.Equal(t, 100.0, c.count)
	require.Equal(t, 2.0, c.sum)
	require.Equal(t, []float64{0.0005, 0.009299119756734196, math.Inf(1)}, f.le)
	require.Equal(t, 20.0, f.count)
	require.Equal(t, 0.05, f.sum)

	// histogram_quantile: p50 is the 50th of 100, the top of the 0.01
	// bucket; p99 is 98 % of the way into the 0.01–0.1 bucket.
	require.InDelta(t, 0.01, c.quantile(0.5), 1e-12)
	require.InDelta(t, 0.01+0.09*(99-50)/50.0, c.quantile(0.99), 1e-12)
	require.InDelta(t, 0.0005*5/10, f.quantile(0.25), 1e-12, "the lowest bucket from 0")
	require.True(t, math.IsNaN((&promHist{}).quantile(0.5)))
}

// Deltas from scrapes of one process, then a restart (its counts start
// again from 0): every observation is counted once, and a copy taken at
// the start of traffic leaves only what came after.
func TestStoreHistAccumulates(t *testing.T) {
	var acc promHist
	s1, _ := parsePage(t, page(1))
	s2, _ := parsePage(t, page(3))
	acc.add(&s1, nil)
	start := acc.clone()
	acc.add(&s2, &s1)                // +2x within the process
	r1, _ := parsePage(t, page(0.5)) // a restarted process, fewer counts
	acc.add(&r1, &s2)                // taken whole: prev is from the old process
	require.Equal(t, 100*3.5, acc.count)
	require.Equal(t, []float64{35, 175, 350, 350}, acc.cum)
	d := acc.minus(start)
	require.Equal(t, 250.0, d.count)
	require.Equal(t, []float64{25, 125, 250, 250}, d.cum)
	require.InDelta(t, 5.0, d.sum, 1e-9)
	acc.add(nil, &r1) // a failed scrape adds nothing
	require.Equal(t, 350.0, acc.count)

	st := storeSummary(storeHists{commit: start}, storeHists{commit: acc})
	require.NotNil(t, st)
	require.Equal(t, 250.0, st.SyncedCommits)
	require.Zero(t, st.Fsyncs, "no fsync histogram: no fsync figures")
	require.Nil(t, storeSummary(storeHists{commit: acc}, storeHists{commit: acc}), "nothing during traffic")
}

// The gateway's runtime counters are read off its /metrics page (served
// here by a real HTTP server) and summed over its processes: deltas
// within one, all of a restarted one's, nothing from a failed scrape.
func TestRuntimeCountsAccumulate(t *testing.T) {
	body := "# HELP go_memstats_alloc_bytes_total x\ngo_memstats_alloc_bytes_total 1.5e+06\ngo_gc_duration_seconds_count 3\n" +
		"tether_process_cpu_wait_seconds_total 12.5\n" +
		// The send route's handler; braces inside a label value, and another route that must not count.
		"tether_http_request_duration_seconds_bucket{route=\"POST /v1/apps/{app}/messages\",le=\"0.005\"} 7\n" +
		"tether_http_request_duration_seconds_bucket{route=\"POST /v1/apps/{app}/messages\",le=\"+Inf\"} 8\n" +
		"tether_http_request_duration_seconds_count{route=\"POST /v1/apps/{app}/messages\"} 8\n" +
		"tether_http_request_duration_seconds_bucket{route=\"GET /v1/apps/{app}/events\",le=\"0.005\"} 1\n" +
		"tether_http_request_duration_seconds_bucket{route=\"GET /v1/apps/{app}/events\",le=\"+Inf\"} 30\n" +
		"tether_http_request_duration_seconds_count{route=\"GET /v1/apps/{app}/events\"} 30\n" +
		"go_sched_latencies_seconds_bucket{le=\"6.4e-08\"} 4\ngo_sched_latencies_seconds_bucket{le=\"0.001\"} 9\n" +
		"go_sched_latencies_seconds_bucket{le=\"+Inf\"} 10\ngo_sched_latencies_seconds_sum 0.1\ngo_sched_latencies_seconds_count 10\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) }))
	defer srv.Close()
	s1 := scrapeMetrics(context.Background(), srv.Client(), srv.URL)
	require.True(t, s1.rt)
	require.Equal(t, 1.5e6, s1.alloc)
	require.Equal(t, 3.0, s1.gcs)
	require.NotNil(t, s1.sched, "the scheduler's latencies are read from the same page")
	require.Equal(t, []float64{6.4e-08, 0.001, math.Inf(1)}, s1.sched.le)
	require.Equal(t, []float64{4, 9, 10}, s1.sched.cum)
	require.Equal(t, runQueue{wait: 12.5, ok: true}, s1.runq, "a remote gateway's waits for a CPU")
	require.NotNil(t, s1.send, "the send route's handler")
	require.Equal(t, []float64{0.005, math.Inf(1)}, s1.send.le)
	require.Equal(t, []float64{7, 8}, s1.send.cum)
	require.Equal(t, 8.0, s1.send.count)
	body = "go_memstats_alloc_bytes_total 1.5e+06\n" // no GC count: not a runtime sample
	s0 := scrapeMetrics(context.Background(), srv.Client(), srv.URL)
	require.False(t, s0.rt)
	require.False(t, s0.runq.ok, "no wait counter on the page")
	require.Nil(t, s0.send, "no handler histogram on the page")

	var c runtimeCounts
	c.add(s1, procSample{})
	s2 := procSample{alloc: 4e6, gcs: 5, rt: true}
	c.add(s2, s1) // +2.5 MB, +2 cycles
	restarted := procSample{alloc: 1e6, gcs: 1, rt: true}
	c.add(restarted, s2) // lower counts: a new process, all of it
	// Another pid: the sampler passes no earlier scrape, all of it.
	c.add(procSample{alloc: 2e6, gcs: 2, rt: true}, procSample{})
	c.add(procSample{}, restarted) // a failed scrape
	require.Equal(t, runtimeCounts{alloc: 4e6 + 1e6 + 2e6, gcs: 5 + 1 + 2}, c)
}

// The harness's own scheduler latencies come from runtime/metrics, whose
// buckets count apart: they become a cumulative histogram, and the
// quantiles of a real one are ordered.
func TestHarnessSched(t *testing.T) {
	h := fromRuntimeHist(&metrics.Float64Histogram{Buckets: []float64{0, 1e-6, 1e-3, math.Inf(1)}, Counts: []uint64{5, 3, 2}})
	require.Equal(t, []float64{1e-6, 1e-3, math.Inf(1)}, h.le)
	require.Equal(t, []float64{5, 8, 10}, h.cum)
	require.Equal(t, 10.0, h.count)
	w := waitsOf(h)
	require.InDelta(t, 1e-3, w.RunnableP50Ms, 1e-12, "the 5th of 10 is the top of the first bucket, in ms")
	require.InDelta(t, 1.0, w.RunnableP99Ms, 1e-12, "in the +Inf bucket: the highest finite bound")
	require.Zero(t, w.RunnableOverMs, "no finite bound at or above 10 ms")
	w = waitsOf(promHist{le: []float64{0.001, 0.0105, 0.117, math.Inf(1)}, cum: []float64{90, 97, 100, 100}, count: 100})
	require.Equal(t, 10.5, w.RunnableOverMs)
	require.InDelta(t, 0.03, w.RunnableOverShare, 1e-12, "3 of 100 above the 10.5 ms bound")
	require.Equal(t, "p50 0.56ms p99 81.5ms, 3.00% over 10.5ms", w.String())

	before := harnessSched()
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(runtime.Gosched)
	}
	wg.Wait()
	after := harnessSched()
	d := after.minus(before)
	require.Positive(t, d.count, "goroutines were scheduled")
	w = waitsOf(d)
	require.LessOrEqual(t, w.RunnableP50Ms, w.RunnableP99Ms)
	require.Equal(t, runnableWaits{}, waitsOf(promHist{}), "no observations")
}

// The store's LSM figures are read off the gateway's /metrics page (a
// real HTTP server here) and summed over its processes like the runtime's;
// the report gives what happened during traffic, and names write stalls.
func TestLSMCountsAccumulate(t *testing.T) {
	const mib = 1 << 20
	lines := func(flushes, compactions, stalls, stallSecs, debt, l0, disk, badSingleDels, wal, flushed, compacted float64) string {
		return fmt.Sprintf("# HELP tether_store_flushes_total x\ntether_store_flushes_total %g\ntether_store_compactions_total %g\n"+
			"tether_store_write_stalls_total %g\ntether_store_write_stall_seconds_total %g\ntether_store_compaction_debt_bytes %g\n"+
			"tether_store_l0_sublevels %g\ntether_store_disk_bytes %g\ntether_store_written_bytes_total{kind=\"wal\"} %g\n"+
			"tether_store_written_bytes_total{kind=\"flush\"} %g\ntether_store_written_bytes_total{kind=\"compaction\"} %g\n"+
			"tether_store_bad_single_deletes_total %g\n",
			flushes, compactions, stalls, stallSecs, debt, l0, disk, wal, flushed, compacted, badSingleDels)
	}
	var mu sync.Mutex
	body := lines(2, 3, 0, 0, 1<<20, 1, 100<<20, 0, 0, 0, 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	scrape := func(b string) lsmSample {
		mu.Lock()
		body = b
		mu.Unlock()
		return scrapeMetrics(context.Background(), srv.Client(), srv.URL).lsm
	}
	s1 := scrape(lines(2, 3, 0, 0, 1<<20, 1, 100<<20, 0, 100*mib, 10*mib, 20*mib))
	require.True(t, s1.ok)
	require.Equal(t, lsmSample{c: lsmCounters{lsmFlushes: 2, lsmCompactions: 3, lsmWALBytes: 100 * mib, lsmFlushBytes: 10 * mib, lsmCompactBytes: 20 * mib}, debt: 1 << 20, l0: 1, disk: 100 << 20, ok: true}, s1)
	require.False(t, scrape("go_goroutines 5\n").ok, "a page without them")

	var acc lsmCounts
	acc.add(s1, lsmSample{})
	start := storeHists{lsm: acc}
	s2 := scrape(lines(7, 9, 1, 0.5, 64<<20, 6, 120<<20, 1, 300*mib, 40*mib, 100*mib))
	acc.add(s2, s1)                                                               // +5 flushes, +6 compactions, a stall of 0.5 s, a bad single delete
	r1 := scrape(lines(1, 1, 1, 0.25, 2<<20, 2, 90<<20, 0, 50*mib, 5*mib, 5*mib)) // restarted: its counts from zero
	acc.add(r1, s2)
	acc.add(lsmSample{}, r1) // a failed scrape adds nothing
	require.Equal(t, lsmCounts{c: lsmCounters{lsmFlushes: 8, lsmCompactions: 10, lsmStalls: 2, lsmStallSecs: 0.75, lsmBadSingleDels: 1,
		lsmWALBytes: 350 * mib, lsmFlushBytes: 45 * mib, lsmCompactBytes: 105 * mib}, debtPeak: 64 << 20, l0Peak: 6, disk: 90 << 20, ok: true}, acc)

	commits := promHist{le: []float64{0.01, math.Inf(1)}, cum: []float64{1, 1}, count: 1}
	st := storeSummary(storeHists{commit: promHist{le: commits.le, cum: []float64{0, 0}}, lsm: start.lsm}, storeHists{commit: commits, lsm: acc})
	require.NotNil(t, st)
	require.Equal(t, &lsmReport{Flushes: 6, Compactions: 7, WriteStalls: 2, WriteStallS: 0.75, DebtPeakMiB: 64, L0SublevelsPeak: 6, DiskMiB: 90, BadSingleDels: 1,
		WALMiB: 250, FlushMiB: 35, CompactionMiB: 85}, st.LSM)
	require.Contains(t, st.LSM.String(), "wrote 250 MiB of WAL, 35 MiB in flushes, 85 MiB in compactions (write amplification 0.48)")
	require.Contains(t, st.LSM.String(), "2 WRITE STALLS holding commits 0.8s")
	require.Contains(t, st.LSM.String(), "; 1 BAD SINGLE DELETES")
	st.LSM.WriteStalls, st.LSM.BadSingleDels = 0, 0
	require.Contains(t, st.LSM.String(), "no write stalls")
	require.NotContains(t, st.LSM.String(), "SINGLE DELETES")
	require.Nil(t, storeSummary(storeHists{commit: commits}, storeHists{commit: commits, lsm: acc}), "nothing during traffic")
}
