package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// report is everything a run produced: report.json holds it whole;
// report.txt and report.html are made from it.
type report struct {
	RunID     string    `json:"run_id"`
	App       string    `json:"app"`
	Started   time.Time `json:"started"`
	DurationS float64   `json:"duration_s"`
	Command   string    `json:"command"`
	Pass      bool      `json:"pass"`
	Failures  []string  `json:"failures"`
	Aborted   string    `json:"aborted,omitempty"`
	Warnings  []string  `json:"warnings"`

	Config   map[string]string `json:"config"`
	Plan     planReport        `json:"processes"`
	Gateway  gatewayReport     `json:"gateway"`
	Sessions sessionReport     `json:"sessions"`
	Messages messageReport     `json:"messages"`
	Latency  latencyReport     `json:"latency_ms"`
	Checks   *checks           `json:"checks"`
	Inbound  inboundReport     `json:"inbound"`
	Harness  harnessReport     `json:"harness"`
	Series   seriesReport      `json:"series"`
	Marks    []markReport      `json:"marks"`
	// Steps are the -rate-steps steps; Capacity is the highest offered
	// rate of a step that kept up and met -slo-p99 (0: none).
	Steps    []stepReport  `json:"steps,omitempty"`
	Capacity float64       `json:"capacity_per_s,omitempty"`
	StepSLO  time.Duration `json:"-"` // -slo-p99, for the steps' table
	// Windows are the traffic's figures per -window (windows.go).
	Windows []span `json:"windows,omitempty"`
}

type planReport struct {
	FileLimit      uint64 `json:"file_limit"`
	InProcess      bool   `json:"in_process"`
	Workers        int    `json:"workers"`
	PerWorker      int    `json:"per_worker"`
	GatewayNeedsFD int    `json:"gateway_needs_ulimit_n"`
}

type gatewayReport struct {
	Local      bool      `json:"local"`
	Measured   bool      `json:"measured"` // RSS, CPU and goroutines read (local, or -metrics-url)
	Kills      int       `json:"kills"`
	DowntimesS []float64 `json:"downtimes_s"`
	// RestartPhases splits each downtime (restartPhases).
	RestartPhases     []restartPhases `json:"restart_phases,omitempty"`
	RSSBaseMiB        float64         `json:"rss_base_mib"`
	RSSAfterRampMiB   float64         `json:"rss_after_ramp_mib"`
	RSSPeakMiB        float64         `json:"rss_peak_mib"`
	RSSPerSessionKiB  float64         `json:"rss_per_session_kib"`
	CPUSecondsTraffic float64         `json:"cpu_s_during_traffic"`
	CPUPerMessageUs   float64         `json:"cpu_us_per_delivered_message"`
	MaxOpenFiles      int             `json:"max_open_files"`
	GoroutinesBase    int             `json:"goroutines_before_sessions"`
	GoroutinesPeak    int             `json:"goroutines_peak"`
	GoroutinesAfter   int             `json:"goroutines_after_sessions"`
	GoroutinesPooled  int             `json:"goroutines_after_in_pools"` // of GoroutinesAfter: idle workers and outbound connections
	Store             *storeReport    `json:"store,omitempty"`
	// What the gateway's Go runtime allocated, and its GC cycles, during
	// the traffic over the messages accepted (the collector's cost follows
	// the allocation rate; docs/benchmarks.md, session 18).
	AllocKBPerMessage float64 `json:"alloc_kb_per_accepted_message,omitempty"`
	GCsPer10kMessages float64 `json:"gc_cycles_per_10k_accepted_messages,omitempty"`
	// How long its goroutines were runnable before they ran, during the
	// traffic (go_sched_latencies_seconds): the waits for a CPU.
	runnableWaits
	// How long its threads waited for a CPU, during the traffic.
	runQueueWaits
}

// runQueueWaits are the seconds a process's threads spent ready to run
// but waiting for one of the machine's CPUs (the kernel's run queue,
// runqueue.go) during the traffic, and that over the traffic's seconds:
// how many of its threads were waiting at any moment, on average. A
// remote gateway's come from its tether_process_cpu_wait_seconds_total.
type runQueueWaits struct {
	RunQueueWaitS   float64 `json:"run_queue_wait_s_during_traffic,omitempty"`
	RunQueueWaiting float64 `json:"run_queue_threads_waiting,omitempty"`
}

func runQueueOf(wait, trafficS float64) runQueueWaits {
	if wait <= 0 || trafficS <= 0 {
		return runQueueWaits{}
	}
	return runQueueWaits{RunQueueWaitS: wait, RunQueueWaiting: wait / trafficS}
}

// runnableWaits sums up a scheduler latency histogram: its median and p99
// (interpolated within a bucket: the gateway's are 11 times apart), and
// the share of waits longer than the first bucket bound at or above
// 10 ms, which is exact.
type runnableWaits struct {
	RunnableP50Ms     float64 `json:"runnable_wait_p50_ms,omitempty"`
	RunnableP99Ms     float64 `json:"runnable_wait_p99_ms,omitempty"`
	RunnableOverMs    float64 `json:"runnable_wait_bound_ms,omitempty"`
	RunnableOverShare float64 `json:"runnable_wait_share_over_bound,omitempty"`
}

// waitsOf sums up h (seconds); zero without observations.
func waitsOf(h promHist) runnableWaits {
	if h.count <= 0 || len(h.cum) == 0 {
		return runnableWaits{}
	}
	w := runnableWaits{RunnableP50Ms: h.quantile(0.5) * 1e3, RunnableP99Ms: h.quantile(0.99) * 1e3}
	if i := slices.IndexFunc(h.le, func(b float64) bool { return b >= 0.01 }); i >= 0 && !math.IsInf(h.le[i], 1) {
		w.RunnableOverMs = h.le[i] * 1e3
		w.RunnableOverShare = 1 - h.cum[i]/h.cum[len(h.cum)-1]
	}
	return w
}

func (w runnableWaits) String() string {
	s := fmt.Sprintf("p50 %.2fms p99 %.1fms", w.RunnableP50Ms, w.RunnableP99Ms)
	if w.RunnableOverMs > 0 {
		s += fmt.Sprintf(", %.2f%% over %.1fms", w.RunnableOverShare*100, w.RunnableOverMs)
	}
	return s
}

// storeReport is the gateway's store during traffic, from its histograms
// (storehist.go): synced commits, which a POST waits for, and the WAL
// fsyncs inside them. Quantiles are interpolated within the buckets.
type storeReport struct {
	SyncedCommits   float64 `json:"synced_commits"`
	CommitP50Ms     float64 `json:"synced_commit_p50_ms"`
	CommitP99Ms     float64 `json:"synced_commit_p99_ms"`
	Fsyncs          float64 `json:"wal_fsyncs,omitempty"`
	CommitsPerFsync float64 `json:"commits_per_fsync,omitempty"`
	FsyncP50Ms      float64 `json:"wal_fsync_p50_ms,omitempty"`
	FsyncP99Ms      float64 `json:"wal_fsync_p99_ms,omitempty"`
	FsyncBusy       float64 `json:"wal_fsync_busy_share,omitempty"` // fsync seconds over the seconds between the two copies
	// The LSM during traffic (tether_store_*): whether flushes and
	// compactions kept up. The peaks run from the start to the end of the
	// traffic; the disk is as read at its end.
	LSM *lsmReport `json:"lsm,omitempty"`
}

type lsmReport struct {
	Flushes         float64 `json:"flushes"`
	Compactions     float64 `json:"compactions"`
	WriteStalls     float64 `json:"write_stalls"`
	WriteStallS     float64 `json:"write_stall_s"`
	DebtPeakMiB     float64 `json:"compaction_debt_peak_mib"`
	L0SublevelsPeak float64 `json:"l0_sublevels_peak"`
	DiskMiB         float64 `json:"disk_mib"`
	// The bytes the store wrote (tether_store_written_bytes_total): its
	// WAL, memtable flushes and compactions. Compactions rewrite what
	// flushes wrote, more often the more the keys are spread over the
	// key space; compaction bytes are CPU the gateway spends.
	WALMiB        float64 `json:"wal_mib"`
	FlushMiB      float64 `json:"flush_mib"`
	CompactionMiB float64 `json:"compaction_mib"`
	// BadSingleDels are the store's single deletes that met a key written
	// more than once (tether_store_bad_single_deletes_total): a bug.
	BadSingleDels float64 `json:"bad_single_deletes"`
}

// String is the report's LSM line.
func (l *lsmReport) String() string {
	stalls := "no write stalls"
	if l.WriteStalls > 0 {
		stalls = fmt.Sprintf("%.0f WRITE STALLS holding commits %.1fs", l.WriteStalls, l.WriteStallS)
	}
	bad := ""
	if l.BadSingleDels > 0 {
		bad = fmt.Sprintf("; %.0f BAD SINGLE DELETES", l.BadSingleDels)
	}
	wrote := ""
	if l.WALMiB > 0 {
		wrote = fmt.Sprintf("; wrote %.0f MiB of WAL, %.0f MiB in flushes, %.0f MiB in compactions (write amplification %.2f)",
			l.WALMiB, l.FlushMiB, l.CompactionMiB, (l.FlushMiB+l.CompactionMiB)/l.WALMiB)
	}
	return fmt.Sprintf("LSM during traffic: %.0f flushes, %.0f compactions, %s; compaction debt peak %.0f MiB, L0 sublevels peak %.0f; %.0f MiB on disk%s%s",
		l.Flushes, l.Compactions, stalls, l.DebtPeakMiB, l.L0SublevelsPeak, l.DiskMiB, wrote, bad)
}

// storeSummary returns the store's report between the copies s0 and s1
// (the traffic phase), or nil when the gateway's page has no store
// histograms.
func storeSummary(s0, s1 storeHists) *storeReport {
	c := s1.commit.minus(s0.commit)
	if c.count <= 0 {
		return nil
	}
	st := &storeReport{SyncedCommits: c.count, CommitP50Ms: c.quantile(0.5) * 1e3, CommitP99Ms: c.quantile(0.99) * 1e3}
	if l1 := s1.lsm; l1.ok {
		d := l1.c.minus(s0.lsm.c)
		const mib = 1 << 20
		st.LSM = &lsmReport{Flushes: d[lsmFlushes], Compactions: d[lsmCompactions],
			WriteStalls: d[lsmStalls], WriteStallS: d[lsmStallSecs], BadSingleDels: d[lsmBadSingleDels],
			DebtPeakMiB: l1.debtPeak / mib, L0SublevelsPeak: l1.l0Peak, DiskMiB: l1.disk / mib,
			WALMiB: d[lsmWALBytes] / mib, FlushMiB: d[lsmFlushBytes] / mib, CompactionMiB: d[lsmCompactBytes] / mib}
	}
	if f := s1.fsync.minus(s0.fsync); f.count > 0 {
		st.Fsyncs, st.CommitsPerFsync = f.count, c.count/f.count
		st.FsyncP50Ms, st.FsyncP99Ms = f.quantile(0.5)*1e3, f.quantile(0.99)*1e3
		if d := s1.at.Sub(s0.at); d > 0 {
			st.FsyncBusy = f.sum / d.Seconds()
		}
	}
	return st
}

type sessionReport struct {
	Target          int     `json:"target"`
	OnlineShare     int     `json:"online_devices"`
	OfflineShare    int     `json:"offline_devices"`
	ByTransport     []int   `json:"by_transport"` // tls, starttls, websocket
	RampS           float64 `json:"ramp_s"`
	LoginsPerS      float64 `json:"logins_per_s"`
	AfterRamp       int     `json:"online_after_ramp"`
	Peak            int     `json:"peak_online"`
	Logins          uint64  `json:"logins"`
	LoginFailures   uint64  `json:"login_failures"`
	ChurnResume     uint64  `json:"churn_drops_resuming"`
	ChurnFresh      uint64  `json:"churn_drops_fresh"`
	Resumed         uint64  `json:"reconnects_resumed"`
	Rebound         uint64  `json:"reconnects_bound_afresh"`
	WakeConnects    uint64  `json:"wake_connects"`
	WakeIgnored     uint64  `json:"wakes_while_connecting_or_up"`
	Rewakes         uint64  `json:"wakes_while_closing"`
	SweepDevices    int     `json:"sweep_devices"`
	SDKReconnects   uint64  `json:"sdk_reconnects"`
	SDKResumes      uint64  `json:"sdk_resumes"`
	SDKResumeFailed uint64  `json:"sdk_resume_failures"`
}

type messageReport struct {
	Offered         uint64  `json:"offered"`
	Skipped         uint64  `json:"skipped_generator_behind"`
	Posts           int     `json:"posts"`
	PostsAccepted   int     `json:"posts_accepted"`
	PostsFailed     int     `json:"posts_failed"`
	Attempts        uint64  `json:"post_attempts"`
	Retries         uint64  `json:"post_retries"`
	Refused4xx      uint64  `json:"posts_refused_4xx"`
	Accepted        int     `json:"accepted"`
	AcceptedPerS    float64 `json:"accepted_per_s"`
	DeliveredPerS   float64 `json:"delivered_per_s_during_traffic"`
	SweptDeliveries uint64  `json:"delivered_by_sweep"`
	Drain           string  `json:"drain"`
}

type latencyReport struct {
	Count      uint64  `json:"count"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	P999       float64 `json:"p999"`
	Max        float64 `json:"max"`
	Offline    uint64  `json:"offline_count"`
	OfflineP50 float64 `json:"offline_p50"`
	OfflineP99 float64 `json:"offline_p99"`
	OfflineMax float64 `json:"offline_max"`
	// POST is the REST side alone: from a POST's first attempt to its 202
	// (retries included), which the gateway writes after the fsync.
	POST quantiles `json:"post"`
	// POSTGateway is the same POSTs as the gateway timed them, during the
	// traffic: its handler, from its headers read to its 202 written
	// (tether_http_request_duration_seconds of the send route; quantiles
	// interpolated within its buckets). Absent when not read.
	POSTGateway *handlerLatency `json:"post_gateway_handler,omitempty"`
	// Socket is the online e2e latency up to the kernel's receive time at
	// the device's socket rather than the device's read: without the
	// harness's own wait to run its reader. Absent when no receive time
	// was known (not Linux).
	Socket *quantiles `json:"socket,omitempty"`
}

type handlerLatency struct {
	Count float64 `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
}

// quantiles are a latency histogram's count and quantiles, in ms.
type quantiles struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

type harnessReport struct {
	PeakRSSMiB        float64 `json:"peak_rss_mib"` // the harness's processes together
	CPUSeconds        float64 `json:"cpu_s"`
	CPUSecondsTraffic float64 `json:"cpu_s_during_traffic"`
	CPUPerMessageUs   float64 `json:"cpu_us_per_delivered_message"` // during traffic, over every delivery, as for the gateway
	// As for the gateway: the main process's goroutines, runnable before
	// they ran, during the traffic (runtime/metrics).
	runnableWaits
	// The threads of all its processes, waiting for a CPU.
	runQueueWaits
}

type inboundReport struct {
	Confirmed uint64 `json:"confirmed"`
	Failed    uint64 `json:"not_confirmed"`
}

type markReport struct {
	Name string  `json:"name"`
	T    float64 `json:"t"` // seconds since the series' origin
}

// nf is a float that encodes NaN as null.
type nf float64

func (f nf) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, math.Round(float64(f)*1000)/1000, 'f', -1, 64), nil
}

// seriesReport has one value per second since the ramp started.
type seriesReport struct {
	T            []int `json:"t"`
	Accepted     []int `json:"accepted"`
	PostsFailed  []int `json:"posts_failed"`
	Delivered    []int `json:"delivered"`
	Redelivered  []int `json:"redelivered"`
	P50          []nf  `json:"p50_ms"`
	P99          []nf  `json:"p99_ms"`
	P999         []nf  `json:"p999_ms"`
	Online       []nf  `json:"sessions"`
	GwSessions   []nf  `json:"gateway_sessions"`
	RSSMiB       []nf  `json:"gateway_rss_mib"`
	CPU          []nf  `json:"gateway_cpu_pct"`
	HarnessCPU   []nf  `json:"harness_cpu_pct"`
	Goroutines   []nf  `json:"gateway_goroutines"`
	Wakes        []int `json:"wakes"`
	WakesOffline []int `json:"wakes_offline_devices"`
	Inbound      []nf  `json:"inbound_per_s"`
	// Threads waiting for a CPU on the kernel's run queue (runqueue.go).
	GwWaiting      []nf `json:"gateway_threads_waiting_for_cpu"`
	HarnessWaiting []nf `json:"harness_threads_waiting_for_cpu"`
}

// report assembles the report from the run and its checks.
func (r *runner) report(ch *checks) *report {
	cfg := r.cfg
	rep := &report{RunID: r.runID, App: r.app, Started: r.startedAt, DurationS: time.Since(r.startedAt).Seconds(),
		Command: "go run ./loadtest " + strings.Join(redactArgs(os.Args[1:]), " "), Pass: ch.Pass, Failures: ch.Failures,
		Aborted: r.aborted, Checks: ch, Warnings: ch.Warnings}
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	if rep.Warnings == nil {
		rep.Warnings = []string{}
	}
	rep.Config = configMap(cfg)
	rep.Plan = planReport{FileLimit: r.plan.limit, InProcess: r.plan.inProcess, Workers: r.plan.workers, PerWorker: r.plan.perWorker, GatewayNeedsFD: r.plan.gateway}

	r.mu.Lock()
	g := gatewayReport{Local: r.tgt != nil && r.tgt.local != nil, Measured: r.tgt != nil && (r.tgt.local != nil || cfg.metricsURL != ""), Kills: len(r.downtimes), RSSBaseMiB: r.rss0 / (1 << 20),
		RSSAfterRampMiB: r.rss1 / (1 << 20), RSSPeakMiB: r.gwPeak.rss / (1 << 20), MaxOpenFiles: r.gwMaxFDs,
		GoroutinesBase: r.gor0, GoroutinesPeak: r.gwPeak.gor, GoroutinesAfter: r.gor2, GoroutinesPooled: r.gorPooled}
	for _, d := range r.downtimes {
		g.DowntimesS = append(g.DowntimesS, d.Seconds())
	}
	g.RestartPhases = r.restarts
	if r.online1 > 0 && r.rss1 > 0 && r.rss0 > 0 {
		g.RSSPerSessionKiB = (r.rss1 - r.rss0) / float64(r.online1) / 1024
	}
	if r.gwCPU1 > r.gwCPU0 {
		g.CPUSecondsTraffic = r.gwCPU1 - r.gwCPU0
	}
	g.Store = storeSummary(r.store0, r.store1)
	var postGateway *handlerLatency
	if h := r.store1.send.minus(r.store0.send); h.count > 0 {
		postGateway = &handlerLatency{Count: h.count, P50: h.quantile(0.5) * 1e3, P99: h.quantile(0.99) * 1e3}
	}
	g.runnableWaits = waitsOf(r.store1.sched.minus(r.store0.sched))
	trafficS := r.trafficEnd.Sub(r.trafficStart).Seconds()
	if g.Measured {
		g.runQueueWaits = runQueueOf(r.gwRunq1-r.gwRunq0, trafficS)
	}
	var sdk workerStats
	for _, s := range r.wstats {
		if s != nil {
			sdk.Reconnects += s.Reconnects
			sdk.Resumes += s.Resumes
			sdk.ResumeFailures += s.ResumeFailures
		}
	}
	peak := r.peakOnline
	rep.Harness = harnessReport{PeakRSSMiB: r.harnessPeak.rss / (1 << 20), CPUSeconds: r.harnessPeak.cpu}
	if r.hCPU1 > r.hCPU0 {
		rep.Harness.CPUSecondsTraffic = r.hCPU1 - r.hCPU0
	}
	rep.Harness.runnableWaits = waitsOf(r.hSched1.minus(r.hSched0))
	rep.Harness.runQueueWaits = runQueueOf(r.hRunq1-r.hRunq0, trafficS)
	r.mu.Unlock()
	tot := r.workerTotals()

	s := sessionReport{Target: cfg.sessions, ByTransport: make([]int, 3), RampS: r.rampSecs, AfterRamp: r.online1, Peak: peak,
		Logins: tot.Logins, LoginFailures: tot.LoginFails, ChurnResume: tot.ChurnResume, ChurnFresh: tot.ChurnFresh,
		Resumed: tot.Resumed, Rebound: tot.Rebound, WakeConnects: tot.WakeConns, WakeIgnored: tot.WakeIgnored, Rewakes: tot.Rewakes,
		SweepDevices: r.sweepDevices, SDKReconnects: sdk.Reconnects, SDKResumes: sdk.Resumes, SDKResumeFailed: sdk.ResumeFailures}
	if r.f != nil {
		for k := range r.f.N {
			if r.f.isOffline(k) {
				s.OfflineShare++
			} else {
				s.OnlineShare++
			}
			s.ByTransport[int(r.f.transport(k))]++
		}
	}
	if r.rampSecs > 0 {
		s.LoginsPerS = float64(tot.Ramped) / r.rampSecs
	}
	rep.Sessions = s
	rep.Inbound = inboundReport{Confirmed: tot.InboundOK, Failed: tot.InboundFail}

	m := messageReport{Drain: r.drainResult}
	if gen := r.gen; gen != nil {
		m.Offered, m.Skipped, m.Attempts, m.Retries, m.Refused4xx = gen.offered.Load(), gen.skipped.Load(), gen.attempts.Load(), gen.retries.Load(), gen.status4xx.Load()
	}
	if c := r.col; c != nil {
		c.mu.Lock()
		m.Posts = len(c.posts)
		for _, p := range c.posts {
			switch p.status {
			case postOK:
				m.PostsAccepted++
			case postFailed:
				m.PostsFailed++
			}
		}
		m.Accepted = len(c.msgs)
		m.SweptDeliveries = c.sweptDeliveries
		rep.Latency = latencyReport{Count: c.latOnline.n, P50: ms(c.latOnline.quantile(0.5)), P99: ms(c.latOnline.quantile(0.99)),
			P999: ms(c.latOnline.quantile(0.999)), Max: ms(c.latOnline.quantile(1)),
			Offline: c.latOffline.n, OfflineP50: ms(c.latOffline.quantile(0.5)), OfflineP99: ms(c.latOffline.quantile(0.99)), OfflineMax: ms(c.latOffline.quantile(1)),
			POST: c.latPost.quantiles(), POSTGateway: postGateway}
		if c.latSocket.n > 0 {
			q := c.latSocket.quantiles()
			rep.Latency.Socket = &q
		}
		rep.Series, rep.Marks = c.seriesLocked()
		rep.Steps, rep.Capacity = c.stepsLocked(cfg.rateSteps, r.trafficEnd, cfg.sloP99)
		rep.StepSLO = cfg.sloP99
		rep.Windows = c.windowsLocked(r.trafficStart, r.trafficEnd, cfg.window)
		var delivTraffic int
		if !r.trafficStart.IsZero() {
			a := int(r.trafficStart.Sub(c.t0) / time.Second)
			b := int(r.trafficEnd.Sub(c.t0) / time.Second)
			for i := max(a, 0); i < min(b, len(c.series)); i++ {
				delivTraffic += c.series[i].delivered
			}
		}
		c.mu.Unlock()
		if d := r.trafficEnd.Sub(r.trafficStart).Seconds(); d > 0 {
			m.AcceptedPerS = float64(m.Accepted) / d
			m.DeliveredPerS = float64(delivTraffic) / d
		}
		if ch.Delivered > 0 {
			g.CPUPerMessageUs = g.CPUSecondsTraffic / float64(ch.Delivered) * 1e6
			rep.Harness.CPUPerMessageUs = rep.Harness.CPUSecondsTraffic / float64(ch.Delivered) * 1e6
		}
		if rt := (runtimeCounts{r.gwRt1.alloc - r.gwRt0.alloc, r.gwRt1.gcs - r.gwRt0.gcs}); rt.alloc > 0 && m.Accepted > 0 {
			g.AllocKBPerMessage = rt.alloc / float64(m.Accepted) / 1e3
			g.GCsPer10kMessages = rt.gcs / float64(m.Accepted) * 1e4
		}
	}
	rep.Gateway = g
	rep.Messages = m
	return rep
}

// seriesLocked turns the per-second rows into the report's arrays; mu is
// held.
func (c *collector) seriesLocked() (seriesReport, []markReport) {
	var s seriesReport
	nan := nf(math.NaN())
	for i, row := range c.series {
		s.T = append(s.T, i)
		s.Accepted = append(s.Accepted, row.accepted)
		s.PostsFailed = append(s.PostsFailed, row.postsFail)
		s.Delivered = append(s.Delivered, row.delivered)
		s.Redelivered = append(s.Redelivered, row.redelivered)
		s.Wakes = append(s.Wakes, row.wakes)
		s.WakesOffline = append(s.WakesOffline, row.wakesOffline)
		if row.lat != nil && row.lat.n > 0 {
			s.P50 = append(s.P50, nf(ms(row.lat.quantile(0.5))))
			s.P99 = append(s.P99, nf(ms(row.lat.quantile(0.99))))
			s.P999 = append(s.P999, nf(ms(row.lat.quantile(0.999))))
		} else {
			s.P50, s.P99, s.P999 = append(s.P50, nan), append(s.P99, nan), append(s.P999, nan)
		}
		if row.sampled {
			s.Online = append(s.Online, nf(row.online))
			s.GwSessions = append(s.GwSessions, unknownNaN(float64(row.gwSessions)))
			rss := nf(row.rss / (1 << 20))
			if row.rss == 0 {
				rss = nan
			}
			s.RSSMiB = append(s.RSSMiB, rss)
			s.CPU = append(s.CPU, nf(row.cpu))
			s.HarnessCPU = append(s.HarnessCPU, nf(row.harnessCPU))
			s.GwWaiting = append(s.GwWaiting, unknownNaN(row.gwWaiting))
			s.HarnessWaiting = append(s.HarnessWaiting, unknownNaN(row.harnessWaiting))
			s.Goroutines = append(s.Goroutines, unknownNaN(float64(row.gor)))
		} else {
			s.Online, s.GwSessions, s.RSSMiB = append(s.Online, nan), append(s.GwSessions, nan), append(s.RSSMiB, nan)
			s.CPU, s.HarnessCPU, s.Goroutines = append(s.CPU, nan), append(s.HarnessCPU, nan), append(s.Goroutines, nan)
			s.GwWaiting, s.HarnessWaiting = append(s.GwWaiting, nan), append(s.HarnessWaiting, nan)
		}
		if i > 0 && row.sampled && c.series[i-1].sampled {
			s.Inbound = append(s.Inbound, nf(float64(row.inbound)-float64(c.series[i-1].inbound)))
		} else {
			s.Inbound = append(s.Inbound, nan)
		}
	}
	var marks []markReport
	t0 := c.t0.UnixNano()
	for _, m := range c.phases {
		marks = append(marks, markReport{Name: m.Name, T: float64(m.At-t0) / 1e9})
	}
	for _, m := range c.kills {
		marks = append(marks, markReport{Name: m.Name, T: float64(m.At-t0) / 1e9})
	}
	for _, m := range c.steps {
		marks = append(marks, markReport{Name: "step " + m.Name, T: float64(m.At-t0) / 1e9})
	}
	sort.Slice(marks, func(a, b int) bool { return marks[a].T < marks[b].T })
	return s, marks
}

// configMap lists the flags' effective values (as parsed; the seed once
// chosen).
func configMap(cfg *config) map[string]string {
	m := map[string]string{}
	for k, v := range cfg.flagValues {
		if k == "admin-token" || k == "worker" {
			continue
		}
		m[k] = v
	}
	m["seed"] = strconv.FormatUint(cfg.seed, 10)
	m["deadline"] = cfg.deadline.String()
	return m
}

// summary is the text report.
func (rep *report) summary() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	ch := rep.Checks
	verdict := "PASS"
	if !rep.Pass {
		verdict = "FAIL"
	}
	p("== tether soak %s: %s (%.0fs) ==", rep.RunID, verdict, rep.DurationS)
	p("command   %s", rep.Command)
	for _, f := range rep.Failures {
		p("  FAILED: %s", f)
	}
	for _, f := range ch.Warnings {
		p("  warning: %s", f)
	}
	s := rep.Sessions
	p("sessions  %d devices (%d online: tls %d, starttls %d, websocket %d across both; %d offline with push), ramp %.1fs at %.0f logins/s, peak %d up",
		s.Target, s.OnlineShare, s.ByTransport[0], s.ByTransport[1], s.ByTransport[2], s.OfflineShare, s.RampS, s.LoginsPerS, s.Peak)
	p("          logins %d (failed attempts %d); churn: %d drops resuming, %d fresh; reconnects %d resumed, %d bound afresh (SDK: %d resumes, %d refused)",
		s.Logins, s.LoginFailures, s.ChurnResume, s.ChurnFresh, s.Resumed, s.Rebound, s.SDKResumes, s.SDKResumeFailed)
	m := rep.Messages
	p("messages  %d accepted (%.0f/s) in %d POSTs (%d failed, %d retries, %d skipped while the generator lagged); offered %d",
		m.Accepted, m.AcceptedPerS, m.Posts, m.PostsFailed, m.Retries, m.Skipped, m.Offered)
	p("delivery  %d of %d (message, device) pairs delivered; lost %d; final state %s; unverified %d",
		ch.Delivered, ch.Expected, ch.Lost, finalString(ch.FinalStates), ch.Unverified)
	p("          redeliveries: %d dropped by the SDK, %d more across sessions (dropped by id); misrouted %d, payload mismatch %d, visible duplicates %d; from POSTs without a 202 %d",
		ch.SDKDuplicates, ch.CrossSession, ch.Misrouted, ch.Mismatch, ch.Phantom, ch.DeliveredUnaccepted)
	p("          drain: %s; %d devices swept, %d deliveries by the sweep", m.Drain, s.SweepDevices, m.SweptDeliveries)
	l := rep.Latency
	p("latency   e2e (POST to device) online devices p50 %.2fms p99 %.2fms p99.9 %.2fms max %.0fms (%d); offline devices (woken) p50 %.0fms p99 %.0fms (%d)",
		l.P50, l.P99, l.P999, l.Max, l.Count, l.OfflineP50, l.OfflineP99, l.Offline)
	if k := l.Socket; k != nil {
		p("          the same up to the data's arrival at the device's socket (the kernel's receive time) p50 %.2fms p99 %.2fms p99.9 %.2fms (%d): the rest is the harness waiting to run its reader",
			k.P50, k.P99, k.P999, k.Count)
	}
	p("          REST alone (a POST's first attempt to its 202, after the fsync) p50 %.2fms p99 %.2fms p99.9 %.2fms max %.0fms (%d)",
		l.POST.P50, l.POST.P99, l.POST.P999, l.POST.Max, l.POST.Count)
	if h := l.POSTGateway; h != nil {
		p("          the same POSTs in the gateway's handler (tether_http_request_duration_seconds, headers read to 202 written) p50 %.2fms p99 %.2fms (%.0f): the rest of the REST time is the harness, the kernel and the connection's reader",
			h.P50, h.P99, h.Count)
	}
	for _, line := range stepsText(rep.Steps, rep.Capacity, rep.StepSLO) {
		p("%s", line)
	}
	for _, line := range windowsText(rep.Windows) {
		p("%s", line)
	}
	w := ch.Wakes
	p("wakes     %d pushes (%d accepted): %d to offline devices (%d of %d woken, %.1f each, max %d; at most %d to one device within an hour), %d during reconnect gaps, %d racing a connect (< grace; latest %.0f ms after it), %d TO ONLINE DEVICES",
		w.Total, w.Accepted, w.ToOffline, w.Woken, w.OfflineDevices, w.PerDeviceMean, w.PerDeviceMax, w.MaxInHour, w.ToDisconnected, w.RacedConnect, w.LateMaxMs, w.ToOnline)
	p("          woken devices connected %d times; %d wakes came while the device was connecting or up, %d while it was closing (it connected again)",
		s.WakeConnects, s.WakeIgnored, s.Rewakes)
	p("inbound   %d confirmed, %d not confirmed in 10 s", rep.Inbound.Confirmed, rep.Inbound.Failed)
	if wc := ch.Webhook; wc != nil {
		p("webhook   %d posts, %d events; inbound: %d of %d confirmed reached the backend, %d LOST, %d TWICE; %d more not confirmed to their device; %d repeated event ids dropped",
			wc.Posts, wc.Events, wc.Seen, wc.Confirmed, wc.Lost, wc.Twice, wc.Unconfirmed, wc.Repeats)
	}
	p("harness   peak RSS %.0f MiB, %.0f CPU seconds (all its processes); %.1fs during traffic (%.0f µs per delivered message)",
		rep.Harness.PeakRSSMiB, rep.Harness.CPUSeconds, rep.Harness.CPUSecondsTraffic, rep.Harness.CPUPerMessageUs)
	g := rep.Gateway
	if g.Local {
		p("gateway   RSS %.0f MiB before the sessions, %.0f after the ramp (%.1f KiB/session), peak %.0f; CPU %.1fs during traffic (%.0f µs per delivered message); max open files %d; kills %s",
			g.RSSBaseMiB, g.RSSAfterRampMiB, g.RSSPerSessionKiB, g.RSSPeakMiB, g.CPUSecondsTraffic, g.CPUPerMessageUs, g.MaxOpenFiles, killSummary(g.Kills, g.DowntimesS))
		if len(g.RestartPhases) > 0 {
			p("          %s", restartSummary(g.RestartPhases, g.DowntimesS))
		}
	} else if g.Measured {
		p("gateway   remote: RSS %.0f MiB before the sessions, %.0f after the ramp (%.1f KiB/session), peak %.0f (from -metrics-url)",
			g.RSSBaseMiB, g.RSSAfterRampMiB, g.RSSPerSessionKiB, g.RSSPeakMiB)
	} else {
		p("gateway   remote: RSS, CPU and goroutines not measured (no -metrics-url)")
	}
	if g.AllocKBPerMessage > 0 {
		p("          allocated %.1f KB and %.2f GC cycles per 10k accepted messages during traffic (Go runtime)", g.AllocKBPerMessage, g.GCsPer10kMessages)
	}
	if st := g.Store; st != nil {
		line := fmt.Sprintf("store     synced commits (what a POST waits for) p50 %.1fms p99 %.1fms (%.0f)", st.CommitP50Ms, st.CommitP99Ms, st.SyncedCommits)
		if st.Fsyncs > 0 {
			line += fmt.Sprintf("; WAL fsyncs (the disk) p50 %.1fms p99 %.1fms (%.0f, %.1f commits each, busy %.0f%% of the traffic time)",
				st.FsyncP50Ms, st.FsyncP99Ms, st.Fsyncs, st.CommitsPerFsync, st.FsyncBusy*100)
		}
		p("%s", line)
		if st.LSM != nil {
			p("          %s", st.LSM)
		}
	}
	if g.RunnableP99Ms > 0 || rep.Harness.RunnableP99Ms > 0 {
		line := "waits     for a CPU (goroutines runnable until they ran) during traffic:"
		if g.RunnableP99Ms > 0 {
			line += " gateway " + g.runnableWaits.String() + ";"
		}
		if rep.Harness.RunnableP99Ms > 0 {
			line += " harness " + rep.Harness.runnableWaits.String() + " (its main process)"
		}
		p("%s", strings.TrimSuffix(line, ";"))
	}
	if q := runQueueSummary(g.runQueueWaits, rep.Harness.runQueueWaits, g.Local); q != "" {
		p("          threads ready but waiting for a CPU (the kernel's run queue) during traffic: %s", q)
	}
	if g.Measured {
		pooled := ""
		if g.GoroutinesPooled > 0 {
			pooled = fmt.Sprintf(" (%d of them idle workers and outbound connections)", g.GoroutinesPooled)
		}
		p("          goroutines %d before the sessions, peak %d, %d after they all closed%s", g.GoroutinesBase, g.GoroutinesPeak, g.GoroutinesAfter, pooled)
	}
	pl := rep.Plan
	where := "in the harness process"
	if !pl.InProcess {
		where = fmt.Sprintf("over %d worker processes", pl.Workers)
	}
	p("files     limit %d per process; sessions %s; the gateway needs ulimit -n >= %d", pl.FileLimit, where, pl.GatewayNeedsFD)
	for _, k := range sortedKeys(ch.Examples) {
		for _, e := range ch.Examples[k] {
			p("  %s: %s", k, e)
		}
	}
	return b.String()
}

func finalString(m map[string]uint64) string {
	if len(m) == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeReports prints the summary and writes report.txt, report.json and
// report.html into -out.
func (r *runner) writeReports(rep *report) {
	text := rep.summary()
	fmt.Fprint(r.out, "\n"+text)
	if r.cfg.out == "" {
		return
	}
	js, err := json.MarshalIndent(rep, "", " ")
	if err != nil {
		fmt.Fprintln(r.errw, "loadtest: report:", err)
		return
	}
	files := map[string][]byte{"report.txt": []byte(text), "report.json": js, "report.html": []byte(rep.html())}
	for _, name := range sortedKeys(files) {
		path := filepath.Join(r.cfg.out, name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			fmt.Fprintln(r.errw, "loadtest:", err)
		}
	}
	abs, _ := filepath.Abs(filepath.Join(r.cfg.out, "report.html"))
	fmt.Fprintf(r.out, "report    %s (and report.json, report.txt)\n", abs)
}

// killSummary is "N (downtimes [2.22 4.70] s)", or "0" with no kills.
func killSummary(kills int, down []float64) string {
	if len(down) == 0 {
		return fmt.Sprint(kills)
	}
	return fmt.Sprintf("%d (downtimes [%s] s)", kills, seconds(down))
}

// seconds formats durations in seconds to the hundredth, space-separated.
func seconds(xs []float64) string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(out, " ")
}

// restartSummary tells where each kill's downtime went.
func restartSummary(ph []restartPhases, down []float64) string {
	exited, started := make([]float64, len(ph)), make([]float64, len(ph))
	for i, p := range ph {
		exited[i], started[i] = p.ExitedS, p.StartedS
	}
	return fmt.Sprintf("restarts: the killed process exited after [%s] s, its successor started after [%s] s and answered /readyz after [%s] s",
		seconds(exited), seconds(started), seconds(down[:min(len(ph), len(down))]))
}

// redactArgs returns args with the value of -admin-token replaced: the
// command line goes into every report.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		name := strings.TrimLeft(a, "-")
		switch {
		case a != name && name == "admin-token" && i+1 < len(out):
			out[i+1] = "***"
		case a != name && strings.HasPrefix(name, "admin-token="):
			out[i] = a[:len(a)-len(name)] + "admin-token=***"
		}
	}
	return out
}

// unknownNaN is v, or NaN (a gap in a plot) when negative: unknown.
func unknownNaN(v float64) nf {
	if v < 0 {
		return nf(math.NaN())
	}
	return nf(v)
}

// runQueueSummary sums up the kernel's run-queue waits of the gateway
// (local: on this machine) and the harness, or "" when neither was read.
func runQueueSummary(gw, h runQueueWaits, local bool) string {
	var parts []string
	if gw.RunQueueWaitS > 0 {
		where := ""
		if !local {
			where = ", on its machine (tether_process_cpu_wait_seconds_total)"
		}
		parts = append(parts, fmt.Sprintf("gateway %.1fs (%.2f threads waiting on average%s)", gw.RunQueueWaitS, gw.RunQueueWaiting, where))
	}
	if h.RunQueueWaitS > 0 {
		parts = append(parts, fmt.Sprintf("harness %.1fs (%.2f, all its processes)", h.RunQueueWaitS, h.RunQueueWaiting))
	}
	return strings.Join(parts, "; ")
}
