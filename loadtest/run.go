package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tether/gateway/api"
)

// runner is one soak run, parent side.
type runner struct {
	cfg   *config
	out   io.Writer // progress and the summary
	errw  io.Writer
	ctx   context.Context // ends at the hard deadline or on a signal
	runID string
	app   string
	f     *fleet
	plan  procPlan
	tmp   string
	col   *collector
	tgt   *target
	fk    *fakes
	wh    *webhookSink // -webhook
	api   *api.Client  // admin token, for setup, checks and stats
	post  *api.Client  // admin token, the message generator's (newPostClient)
	gen   *generator

	links    []link
	owner    func(k int32) int // worker index of device k
	evs      map[string]chan int
	stopping atomic.Bool

	mu          sync.Mutex
	inbound     map[string]struct{} // inbound messages confirmed to their devices (inboundKey), with -webhook
	wstatus     []workerStatus
	wstats      []*workerStats
	problems    []string // harness or gateway failures outside the message checks
	downtimes   []time.Duration
	restarts    []restartPhases // of each kill, as downtimes
	gwPeak      procSample
	harnessPeak procSample // peak RSS, and CPU seconds so far
	gwMaxFDs    int
	peakOnline  int
	gwCPU0      float64 // gateway CPU seconds (over every process) at the start of traffic
	gwCPU       float64 // CPU seconds of every gateway process so far, as sampled
	gwCPU1      float64
	hCPU0       float64 // the harness's CPU seconds (all its processes) at the start of traffic
	hCPU1       float64 // and at its end
	// The kernel's run queue (runqueue.go): seconds the gateway's threads
	// (every process) and the harness's (all its processes) waited for a
	// CPU so far, and at the start and end of traffic.
	gwRunq, gwRunq0, gwRunq1 float64
	hRunq, hRunq0, hRunq1    float64
	lastGw                   procSample
	// The gateway's histograms (storeHists) over every gateway process so
	// far, and copies at the start and end of traffic.
	store          storeHists
	store0, store1 storeHists
	// The harness's scheduler latencies at the start and end of traffic.
	hSched0, hSched1 promHist
	gwRuntime        runtimeCounts // under mu
	gwRt0, gwRt1     runtimeCounts // at the start and end of traffic

	rampSecs      float64
	rss0, rss1    float64
	gor0, gor2    int // gateway goroutines before the sessions and after they all closed
	gorPooled     int // of gor2, in pooledFrames (when the dump was read)
	online1       int
	trafficStart  time.Time
	trafficEnd    time.Time
	drainResult   string
	sweepDevices  int
	aborted       string
	startedAt     time.Time
	totalDuration time.Duration
}

// run runs the whole soak and returns the exit status.
func run(parent context.Context, cfg *config, out, errw io.Writer) int {
	r := &runner{cfg: cfg, out: out, errw: errw, startedAt: time.Now()}
	ctx, cancel := context.WithTimeout(parent, cfg.deadline)
	defer cancel()
	r.ctx = ctx
	// The last resort: should cleanup itself hang past the deadline, kill
	// what this run started (by pid) and exit.
	watchdog := time.AfterFunc(cfg.deadline+2*time.Minute, func() {
		fmt.Fprintln(errw, "loadtest: still running 2 minutes after the hard deadline: killing the gateway and workers it started")
		r.killAll()
		os.Exit(exitDeadline)
	})
	defer watchdog.Stop()
	return r.main()
}

// linkList returns the workers' links.
func (r *runner) linkList() []link {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]link(nil), r.links...)
}

// killAll kills the processes this run started, by their pids.
func (r *runner) killAll() {
	r.mu.Lock()
	links := append([]link(nil), r.links...)
	tgt := r.tgt
	r.mu.Unlock()
	for _, l := range links {
		if p, ok := l.(*procLink); ok {
			p.cmd.Process.Kill()
		}
	}
	if tgt != nil && tgt.local != nil {
		tgt.local.kill()
	}
}

func (r *runner) logf(format string, a ...any) {
	fmt.Fprintf(r.out, format+"\n", a...)
}

func (r *runner) problem(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.mu.Lock()
	r.problems = append(r.problems, msg)
	r.mu.Unlock()
	fmt.Fprintln(r.errw, "loadtest:", msg)
}

func (r *runner) main() int {
	cfg := r.cfg
	var rnd [4]byte
	rand.Read(rnd[:])
	r.runID = hex.EncodeToString(rnd[:])
	if !cfg.seedSet {
		cfg.seed = mrand.Uint64()
	}
	r.app = cfg.app
	if r.app == "" {
		r.app = "soak-" + r.runID
	}
	r.f = &fleet{N: cfg.sessions, Users: cfg.users, Seed: cfg.seed, TLS: cfg.tlsShare, StartTLS: cfg.startTLS,
		WS: cfg.wsShare, Offline: cfg.offline, RunID: r.runID, Push: cfg.push}

	limit := raiseFileLimit()
	plan, err := planProcs(cfg.sessions, cfg.workers, cfg.perWorker, limit)
	if err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}
	r.plan = plan
	if cfg.out != "" {
		if err := os.MkdirAll(cfg.out, 0o755); err != nil {
			fmt.Fprintln(r.errw, "loadtest:", err)
			return exitSetup
		}
	}
	r.tmp, err = os.MkdirTemp("", "tether-soak-")
	if err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}
	defer func() {
		if !cfg.keep {
			os.RemoveAll(r.tmp)
		}
	}()
	r.logf("tether soak %s: %d sessions of %d users (tls %.0f%%, starttls %.0f%%, websocket %.0f%%), %d%% offline, %.0f msgs/s for %v, churn %.1f%%/min, kill -9 every %v, seed %d",
		r.runID, cfg.sessions, cfg.users, 100*cfg.tlsShare/sumShares(cfg), 100*cfg.startTLS/sumShares(cfg), 100*cfg.wsShare/sumShares(cfg),
		int(cfg.offline*100+0.5), cfg.rate, cfg.duration, cfg.churn, orNever(cfg.killEvery), cfg.seed)
	r.logf("%s", plan.describe(cfg.sessions))
	if cfg.remote && uint64(plan.gateway) > limit {
		r.logf("note: the gateway needs ulimit -n >= %d for %d sessions; this shell allows %d", plan.gateway, cfg.sessions, limit)
	} else if !cfg.remote && uint64(plan.gateway) > limit {
		r.logf("warning: the gateway started here inherits ulimit -n %d but needs %d: expect refused sessions", limit, plan.gateway)
	}

	code := r.phases()
	r.totalDuration = time.Since(r.startedAt)
	return code
}

func sumShares(c *config) float64 { return max(c.tlsShare+c.startTLS+c.wsShare, 1e-9) }

func orNever(d time.Duration) string {
	if d <= 0 {
		return "never"
	}
	return d.String()
}

// phases runs setup, ramp, traffic, drain, sweep, checks and the report,
// cleaning up whatever it started.
func (r *runner) phases() int {
	cfg := r.cfg
	var err error
	caDir := cfg.out
	if caDir == "" {
		caDir = r.tmp
	}
	r.fk, err = startFakes(caDir)
	if err != nil {
		fmt.Fprintln(r.errw, "loadtest: start the push fakes:", err)
		return exitSetup
	}
	defer r.fk.close()

	if err := r.startTarget(); err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}
	if r.tgt.local != nil {
		defer r.tgt.local.stop()
	}
	r.api = newAPIClient(r.tgt.baseURL, r.tgt.adminToken, 64, r.tgt.caPEM)
	if r.post, err = newPostClient(r.tgt.baseURL, r.tgt.adminToken, cfg.postConns, r.tgt.caPEM); err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}
	var hook *api.WebhookConfig
	if cfg.webhook {
		if r.wh, err = startWebhookSink(); err != nil {
			fmt.Fprintln(r.errw, "loadtest: start the webhook receiver:", err)
			return exitSetup
		}
		defer r.wh.close()
		r.inbound = map[string]struct{}{}
		hook = &api.WebhookConfig{URL: r.wh.url, Secret: r.wh.secret}
	}
	created, err := setupApp(r.ctx, r.api, r.app, r.fk, cfg.wakeInterval, hook)
	if created && cfg.remote {
		// Registered before anything else can fail: a run never leaves
		// its app on someone's gateway without saying so.
		defer func() {
			if cfg.keep {
				fmt.Fprintf(r.out, "kept app %s and its users on the gateway (-keep)\n", r.app)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := r.api.DeleteApp(ctx, r.app); err != nil {
				fmt.Fprintf(r.errw, "loadtest: delete app %s: %v (delete it with: admin delete-app %s)\n", r.app, err, r.app)
			} else {
				fmt.Fprintf(r.out, "deleted app %s and its users from the gateway\n", r.app)
			}
		}()
	}
	if err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}
	password := "soak-pw-" + r.runID
	if err := setupFleet(r.ctx, r.api, r.app, password, r.f, r.fk.apns.Topic, func(s string) { r.logf("%s", s) }); err != nil {
		fmt.Fprintln(r.errw, "loadtest:", err)
		return exitSetup
	}

	r.col = newCollector(r.f, time.Now())
	r.fk.onWake(r.onWake)
	sctx, stopSampler := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	bg.Go(func() { r.sampler(sctx) })
	bg.Go(func() { r.progressLoop(sctx) })
	defer func() {
		stopSampler()
		bg.Wait()
	}()
	time.Sleep(1100 * time.Millisecond) // one sample before any session
	base := r.lastGwSample()
	r.rss0, r.gor0 = base.rss, base.gor

	if err := r.startWorkers(password); err != nil {
		r.problem("%v", err)
		r.stopWorkers()
		return r.finish()
	}
	r.ramp()
	if r.ctx.Err() == nil {
		r.traffic()
	}
	if r.ctx.Err() == nil {
		r.drainAndSweep()
	}
	r.collectStats() // the workers flush what they hold, confirmed inbound messages too
	if r.ctx.Err() == nil && r.wh != nil {
		r.webhookWait(60 * time.Second)
	}
	r.stopWorkers()
	r.leakCheck()
	return r.finish()
}

// fetchGoroutines returns the gateway's goroutine dump (debug=1, from the
// /debug/pprof beside /metrics), nil if it cannot.
func (r *runner) fetchGoroutines(hc *http.Client) []byte {
	u := strings.TrimSuffix(r.tgt.metricsURL, "/metrics") + "/debug/pprof/goroutine?debug=1"
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil
	}
	return b
}

// pooledFrames are functions whose goroutines belong to bounded pools that
// outlive the sessions by design: idle session workers (until their idle
// timeout), the wake pool, and idle outbound HTTP connections to the push
// providers (until net/http's idle timeout).
var pooledFrames = []string{
	"tether/session.(*workers).loop",
	"tether/wake.(*Pool).work",
	"net/http.(*persistConn).readLoop",
	"net/http.(*persistConn).writeLoop",
	"net/http.(*http2ClientConn).readLoop",
	"golang.org/x/net/http2.(*ClientConn).readLoop",
}

// pooledGoroutines counts the goroutines of a debug=1 dump (blocks of
// "N @ pcs" and their "#\tpc func+off\tfile:line" frames) that run one of
// pooledFrames.
func pooledGoroutines(dump []byte) int {
	total, n, counted := 0, 0, false
	for _, line := range strings.Split(string(dump), "\n") {
		if c, err := fmt.Sscanf(line, "%d @", &n); err == nil && c == 1 {
			counted = false // a new block of n goroutines
			continue
		}
		if counted || !strings.HasPrefix(line, "#") {
			continue
		}
		for _, f := range pooledFrames {
			if strings.Contains(line, "\t"+f+"+") {
				total += n
				counted = true
				break
			}
		}
	}
	return total
}

// leakCheck waits (up to 30 s) for the gateway's goroutines to come back
// near the warm baseline taken before the first session, now that every
// session is closed: sessions, resumable sessions and their timers must
// all be gone. Goroutines of the bounded pools that outlive sessions
// (pooledFrames) are not counted, when the gateway serves its goroutine
// dump; on a failure the dump is saved beside the report.
func (r *runner) leakCheck() {
	if r.gor0 <= 0 || r.tgt.metricsURL == "" {
		return
	}
	limit := r.gor0 + 100 + r.gor0/10
	hc := newAPIClient(r.tgt.baseURL, r.tgt.adminToken, 2, r.tgt.caPEM).HTTP
	deadline := time.Now().Add(30 * time.Second)
	var dump []byte
	pooled := 0
	for {
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		s := scrapeMetrics(ctx, hc, r.tgt.metricsURL)
		cancel()
		r.gor2 = s.gor
		if s.gor >= 0 && s.gor <= limit {
			return
		}
		if s.gor > limit {
			if dump = r.fetchGoroutines(hc); dump != nil {
				pooled = pooledGoroutines(dump)
				r.gorPooled = pooled
				if s.gor-pooled <= limit {
					return
				}
			}
		}
		if time.Now().After(deadline) || !sleepCtx(r.ctx, 500*time.Millisecond) {
			break
		}
	}
	if r.gor2 > limit {
		note := ""
		if dump != nil && r.cfg.out != "" {
			path := filepath.Join(r.cfg.out, "gateway-goroutines.txt")
			if os.WriteFile(path, dump, 0o644) == nil {
				note = " (their stacks: " + path + ")"
			}
		}
		r.problem("gateway goroutines: %d 30 s after every session closed (%d of them in worker pools and idle outbound connections), against %d before the first one (limit %d): a leak?%s", r.gor2, pooled, r.gor0, limit, note)
	}
}

// startTarget starts the local gateway or checks the remote one.
func (r *runner) startTarget() error {
	cfg := r.cfg
	if cfg.remote {
		r.tgt = &target{baseURL: cfg.baseURL, addr: cfg.addr, startTLSAddr: cfg.startTLSAddr,
			wsURL: "ws" + strings.TrimPrefix(cfg.baseURL, "http") + "/xmpp-websocket", metricsURL: cfg.metricsURL, adminToken: cfg.adminToken}
		if cfg.caFile != "" {
			b, err := os.ReadFile(cfg.caFile)
			if err != nil {
				return err
			}
			if !x509.NewCertPool().AppendCertsFromPEM(b) {
				return fmt.Errorf("-ca-file %s: no PEM certificate in it", cfg.caFile)
			}
			r.tgt.caPEM = string(b)
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if err := newAPIClient(cfg.baseURL, cfg.adminToken, 2, r.tgt.caPEM).Readyz(ctx); err != nil {
			return fmt.Errorf("remote gateway at %s not ready: %w", cfg.baseURL, err)
		}
		// The XMPP addresses too, with the workers' TLS settings: a wrong
		// port or certificate would otherwise show as lost messages.
		if err := checkXMPP(ctx, cfg.addr, cfg.startTLSAddr, r.tgt.caPEM); err != nil {
			return err
		}
		r.logf("remote gateway %s (xmpps %s); devices register %s tokens (APNs wakes need the gateway to trust %s: --provider-ca-file)",
			cfg.baseURL, cfg.addr, cfg.push, r.fk.caFile)
		return nil
	}
	bin := cfg.gatewayBin
	if bin == "" {
		r.logf("building tether/cmd/gateway ...")
		var err error
		if bin, err = buildGateway(r.ctx, r.tmp, r.errw); err != nil {
			return err
		}
	}
	logDir := cfg.out
	if logDir == "" {
		logDir = r.tmp
	}
	var g *localGateway
	var t *target
	// The ports were free when chosen but are not held until the gateway
	// binds them; if another process took one meanwhile, choose again.
	for attempt := 1; ; attempt++ {
		var err error
		g, t, err = newLocalGateway(bin, r.tmp, filepath.Join(logDir, "gateway.log"), r.fk.caFile, cfg.gatewayLogLevel)
		if err != nil {
			return err
		}
		err = g.start(r.ctx, t.baseURL)
		if err == nil {
			break
		}
		g.stop()
		if attempt == 3 || !errors.Is(err, errExitedStarting) || !g.logMentions("address already in use") {
			return err
		}
		r.logf("a port of the gateway was taken before it could bind it; choosing others")
	}
	r.mu.Lock()
	r.tgt = t
	r.mu.Unlock()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "tls-cert.pem"))
	if err != nil {
		g.stop()
		return fmt.Errorf("the gateway's generated certificate: %w", err)
	}
	t.caPEM = string(pem)
	r.logf("gateway pid %d: rest %s, xmpps %s, xmpp %s, metrics %s, data %s, log %s",
		g.pid(), t.baseURL, t.addr, t.startTLSAddr, t.metricsURL, g.dataDir, g.logPath)
	return nil
}

// startWorkers creates the workers (in this process or as children) and
// waits for each to be ready.
func (r *runner) startWorkers(password string) error {
	cfg := r.cfg
	n, per := 1, cfg.sessions
	if !r.plan.inProcess {
		n, per = r.plan.workers, r.plan.perWorker
	}
	r.evs = map[string]chan int{}
	for _, k := range []string{evReady, evRamped, evSwept, evStats, evStopped} {
		r.evs[k] = make(chan int, 4*n)
	}
	r.mu.Lock()
	r.wstatus = make([]workerStatus, n)
	r.wstats = make([]*workerStats, n)
	r.owner = func(k int32) int { return min(int(k)/per, n-1) }
	r.mu.Unlock()
	for i := range n {
		first := i * per
		count := max(min(per, cfg.sessions-first), 0)
		wc := &workerConfig{
			Index: i, First: first, Count: count, Fleet: *r.f, App: r.app, Password: password,
			Addr: r.tgt.addr, StartTLSAddr: r.tgt.startTLSAddr, WSURL: r.tgt.wsURL, CAPEM: r.tgt.caPEM,
			LoginRate: cfg.loginRate / float64(n), LoginConc: 64, ReadShare: cfg.readShare,
			Churn: cfg.churn, ResumeShare: cfg.resumeShare, InboundRate: cfg.inboundRate / float64(n), ReportInbound: cfg.webhook,
			WakeDelayMin: cfg.wakeDelayMin, WakeDelayMax: cfg.wakeDelayMax, WakeQuiet: cfg.wakeQuiet,
			OnlinePush: cfg.onlinePush, APNsTopic: r.fk.apns.Topic, DumpDir: cfg.out,
		}
		if cfg.cpuProfile != "" && !r.plan.inProcess {
			wc.CPUProfile = fmt.Sprintf("%s.worker-%d", cfg.cpuProfile, i)
		}
		if r.plan.inProcess {
			idx := i
			w, err := newWorker(wc, func(ev *event) { ev.Worker = idx; r.onEvent(ev) }, r.errw)
			if err != nil {
				return err
			}
			l := &localLink{w: w}
			r.mu.Lock()
			r.links = append(r.links, l)
			r.mu.Unlock()
			l.send(&command{Op: opInit, Init: wc})
			continue
		}
		l, err := startProc(i, wc, r.onEvent, r.onWorkerExit)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.links = append(r.links, l)
		r.mu.Unlock()
	}
	if got := r.waitEvents(evReady, 30*time.Second); got < n {
		return fmt.Errorf("only %d of %d workers started", got, n)
	}
	return nil
}

// onEvent handles a worker's event (on the worker's reader goroutine, or
// the worker's own goroutine in process).
func (r *runner) onEvent(ev *event) {
	switch ev.Ev {
	case evBatch:
		r.col.deliveries(ev.D, ev.T)
		if len(ev.In) > 0 {
			r.mu.Lock()
			if r.inbound != nil {
				for _, k := range ev.In {
					r.inbound[k] = struct{}{}
				}
			}
			r.mu.Unlock()
		}
	case evStatus, evRamped:
		r.mu.Lock()
		if ev.Worker < len(r.wstatus) && ev.Status != nil {
			r.wstatus[ev.Worker] = *ev.Status
		}
		r.mu.Unlock()
	case evStats, evStopped:
		r.mu.Lock()
		if ev.Worker < len(r.wstats) && ev.Stats != nil {
			st := *ev.Stats
			r.wstats[ev.Worker] = &st
			r.wstatus[ev.Worker] = st.Status
		}
		r.mu.Unlock()
	case evLog:
		fmt.Fprintf(r.errw, "loadtest worker %d: %s\n", ev.Worker, ev.Msg)
	}
	if ch, ok := r.evs[ev.Ev]; ok {
		select {
		case ch <- ev.Worker:
		default:
		}
	}
}

func (r *runner) onWorkerExit(idx int, err error) {
	if r.stopping.Load() {
		return
	}
	r.problem("worker %d ended before the run did: %v", idx, err)
}

// waitEvents waits for one event of kind from every worker (or timeout)
// and returns how many came.
func (r *runner) waitEvents(kind string, timeout time.Duration) int {
	t := time.NewTimer(timeout)
	defer t.Stop()
	got := 0
	for got < len(r.linkList()) {
		select {
		case <-r.evs[kind]:
			got++
		case <-t.C:
			return got
		case <-r.ctx.Done():
			return got
		}
	}
	return got
}

func (r *runner) broadcast(c *command) {
	for _, l := range r.linkList() {
		l.send(c)
	}
}

// onWake records a push reaching a fake and has an offline device's
// worker connect it.
func (r *runner) onWake(token string, at time.Time, status int, apns bool) {
	k := r.col.wake(token, at, status, apns)
	if k < 0 || status != 200 || !r.f.isOffline(int(k)) || r.stopping.Load() {
		return
	}
	r.mu.Lock()
	var l link
	if r.owner != nil {
		if i := r.owner(k); i < len(r.links) {
			l = r.links[i]
		}
	}
	r.mu.Unlock()
	if l != nil {
		l.send(&command{Op: opWake, K: k})
	}
}

// ramp logs the online devices in.
func (r *runner) ramp() {
	r.col.setPhase("ramp")
	online := 0
	for k := range r.f.N {
		if !r.f.isOffline(k) {
			online++
		}
	}
	start := time.Now()
	r.broadcast(&command{Op: opRamp})
	limit := time.Duration(float64(online)/r.cfg.loginRate*float64(time.Second))*3 + 60*time.Second
	got := r.waitEvents(evRamped, limit)
	r.rampSecs = time.Since(start).Seconds()
	st := r.workerTotals()
	r.logf("ramp: %d of %d online devices logged in in %.1fs (%.0f logins/s), %d failed", st.Ramped, online, r.rampSecs,
		float64(st.Ramped)/max(r.rampSecs, 0.001), st.RampFailed)
	if got < len(r.linkList()) {
		r.problem("the ramp did not finish within %v", limit)
	}
	if st.RampFailed > 0 {
		r.problem("%d devices could not log in during the ramp", st.RampFailed)
	}
	// Memory per session: the gateway's growth over the ramp, once settled.
	sleepCtx(r.ctx, 3*time.Second)
	r.rss1 = r.lastGwSample().rss
	r.online1 = r.workerTotals().Online
}

// workerTotals sums the workers' latest status.
func (r *runner) workerTotals() workerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t workerStatus
	for _, s := range r.wstatus {
		t.Online += s.Online
		t.Logins += s.Logins
		t.LoginFails += s.LoginFails
		t.ChurnResume += s.ChurnResume
		t.ChurnFresh += s.ChurnFresh
		t.Resumed += s.Resumed
		t.Rebound += s.Rebound
		t.WakeConns += s.WakeConns
		t.WakeIgnored += s.WakeIgnored
		t.Rewakes += s.Rewakes
		t.InboundOK += s.InboundOK
		t.InboundFail += s.InboundFail
		t.Ramped += s.Ramped
		t.RampFailed += s.RampFailed
	}
	return t
}

// traffic posts messages for -d with churn, inbound messages and chaos.
func (r *runner) traffic() {
	cfg := r.cfg
	r.col.setPhase("traffic")
	r.gwCPU0 = r.gwCPUSeconds()
	r.store0 = r.storeCopy()
	r.hSched0 = harnessSched()
	r.gwRt0 = r.runtimeCopy()
	r.hCPU0 = r.harnessCPUSeconds()
	r.gwRunq0, r.hRunq0 = r.runQueueWaits()
	r.trafficStart = time.Now()
	r.broadcast(&command{Op: opPhase, Phase: "traffic"})
	r.gen = &generator{cfg: cfg, f: r.f, col: r.col, api: r.post, app: r.app, runID: r.runID}
	var chaos sync.WaitGroup
	if cfg.killEvery > 0 && r.tgt.local != nil {
		until := r.trafficStart.Add(cfg.duration)
		chaos.Go(func() { r.chaos(until) })
	}
	var steps sync.WaitGroup
	if len(cfg.rateSteps) > 0 {
		steps.Go(func() { r.stepRates(r.trafficStart) })
	}
	stopProfile := r.startProfile()
	r.gen.run(r.ctx, cfg.duration)
	r.trafficEnd = time.Now()
	stopProfile()
	steps.Wait()
	r.broadcast(&command{Op: opPhase, Phase: "drain"})
	chaos.Wait()
	r.gwCPU1 = r.gwCPUSeconds()
	r.store1 = r.storeCopy()
	r.hSched1 = harnessSched()
	r.gwRt1 = r.runtimeCopy()
	r.hCPU1 = r.harnessCPUSeconds()
	r.gwRunq1, r.hRunq1 = r.runQueueWaits()
}

// storeCopy returns a copy of the store histograms sampled so far, taken
// now.
func (r *runner) storeCopy() storeHists {
	r.mu.Lock()
	defer r.mu.Unlock()
	return storeHists{commit: r.store.commit.clone(), fsync: r.store.fsync.clone(), sched: r.store.sched.clone(), send: r.store.send.clone(),
		lsm: r.store.lsm, at: time.Now()}
}

// runtimeCopy returns the gateway's runtime counts so far.
func (r *runner) runtimeCopy() runtimeCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gwRuntime
}

// startProfile starts -cpuprofile for the traffic phase alone, so the
// profile shows what the harness spends per message and not the logins of
// the ramp; the function it returns stops it. With -repeat each run
// overwrites the file.
func (r *runner) startProfile() func() {
	if r.cfg.cpuProfile == "" {
		return func() {}
	}
	f, err := os.Create(r.cfg.cpuProfile)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		r.logf("cpuprofile: %v", err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// stepRates moves the generator through -rate-steps, each step for an
// equal share of the traffic (the first one's rate is the generator's at
// its start), and marks where each begins.
func (r *runner) stepRates(start time.Time) {
	n := len(r.cfg.rateSteps)
	each := r.cfg.duration / time.Duration(n)
	for i, rate := range r.cfg.rateSteps {
		if i > 0 {
			if !sleepCtx(r.ctx, time.Until(start.Add(time.Duration(i)*each))) {
				return
			}
			r.gen.setRate(rate)
		}
		r.col.addStep(fmt.Sprintf("%.0f/s", rate))
		r.logf("step %d of %d: %.0f msgs/s for %v", i+1, n, rate, each)
	}
}

// harnessCPUSeconds returns the CPU time of the harness's processes so far,
// as last sampled.
func (r *runner) harnessCPUSeconds() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.harnessPeak.cpu
}

// runQueueWaits returns the seconds the gateway's threads and the
// harness's waited for a CPU so far, as last sampled.
func (r *runner) runQueueWaits() (gw, harness float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gwRunq, r.hRunq
}

// gwCPUSeconds returns the CPU time of the gateway processes so far (the
// last second of a killed one is not counted).
func (r *runner) gwCPUSeconds() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gwCPU
}

// chaos kills the gateway with SIGKILL at random moments about every
// -kill-every (±25%) until the traffic ends, and restarts it.
func (r *runner) chaos(until time.Time) {
	cfg := r.cfg
	g := r.tgt.local
	for kills := 0; cfg.killMax == 0 || kills < cfg.killMax; kills++ {
		wait := time.Duration(float64(cfg.killEvery) * (0.75 + 0.5*mrand.Float64()))
		at := time.Now().Add(wait)
		if at.After(until.Add(-time.Second)) {
			return
		}
		if !sleepCtx(r.ctx, time.Until(at)) {
			return
		}
		pid := g.pid()
		r.col.addKill(killMark)
		t0 := time.Now()
		g.kill()
		ph := restartPhases{ExitedS: time.Since(t0).Seconds()}
		r.logf("chaos: kill -9 gateway pid %d", pid)
		if err := g.restart(r.ctx, r.tgt.baseURL); err != nil {
			r.problem("restart after kill -9 failed: %v", err)
			return
		}
		down := time.Since(t0)
		ph.StartedS = g.startedAt().Sub(t0).Seconds()
		r.col.addKill("restarted")
		r.mu.Lock()
		r.downtimes = append(r.downtimes, down)
		r.restarts = append(r.restarts, ph)
		r.mu.Unlock()
		r.logf("chaos: gateway back as pid %d after %.2fs (the killed process had exited at %.2fs, its successor started at %.2fs)",
			g.pid(), down.Seconds(), ph.ExitedS, ph.StartedS)
	}
}

// restartPhases splits a kill's downtime, in seconds from the SIGKILL:
// the killed process's exit (the kernel closes every socket it held), then
// the start of its successor (the harness's fork and exec), then (the
// downtime itself) its /readyz answering 200. With thousands of devices
// reconnecting at once, the harness's own goroutines wait for a CPU too,
// which delays the start and the readiness poll: the gateway's log says at
// info level how long its store took to open and when it was ready.
type restartPhases struct {
	ExitedS  float64 `json:"exited_s"`
	StartedS float64 `json:"started_s"`
}

// drainAndSweep waits for the last deliveries, then connects the devices
// still missing messages (offline ones that got no wake, clients that gave
// up) and waits again. A device that the sweep connects stays until it has
// as many messages as it misses, or none came for sweepQuiet (brief): at
// the end of a long run a thousand devices pull backlogs of hundreds of
// messages at once, and a device that left after a second without a
// message, as a woken app does, left with its messages still queued at the
// gateway, sent but not acknowledged. A device may still leave early (a
// redelivery counted, a long gap), so the sweep runs again, up to
// sweepPasses times in all, for the devices still missing messages, while
// the pass before brought something (what is left after a pass that
// brought nothing is expired or lost); a message no pass brings is lost.
// Devices missing only messages already expired are not connected: no
// pass brings those. What each pass brought is in the drain result.
func (r *runner) drainAndSweep() {
	r.col.setPhase("drain")
	res := r.drainWait(r.cfg.drain, 10*time.Second)
	r.logf("drain: %s", res)
	r.drainResult = res
	seen := ^uint64(0) // deliveries seen before the last pass; none yet
	for pass := 1; pass <= sweepPasses; pass++ {
		// Expired for sure: a message is created at the latest when its
		// POST's last retry is answered, and expires -expire-in after
		// that (a second more for the clocks).
		expired := time.Now().Add(-postRetryWindow - time.Duration(r.cfg.expireIn)*time.Second - time.Second)
		devs := r.col.sweepable(expired.UnixNano())
		r.col.mu.Lock()
		before := r.col.seen
		r.col.mu.Unlock()
		if len(devs) == 0 || r.ctx.Err() != nil || before == seen {
			return
		}
		seen = before
		r.col.setPhase("sweep")
		if pass == 1 {
			r.sweepDevices = len(devs)
		}
		per := make([][]int32, len(r.linkList()))
		for k := range devs {
			w := r.owner(k)
			per[w] = append(per[w], k)
		}
		for i, ks := range per {
			sort.Slice(ks, func(a, b int) bool { return ks[a] < ks[b] })
			ns := make([]int32, len(ks))
			for j, k := range ks {
				ns[j] = int32(devs[k])
			}
			r.linkList()[i].send(&command{Op: opSweep, Ks: ks, Ns: ns})
		}
		missing := 0
		for _, n := range devs {
			missing += n
		}
		// A pass takes as long as the gateway needs to send the backlogs:
		// at least a thousand deliveries a second are allowed for.
		limit := 120*time.Second + time.Duration(missing/1000)*time.Second
		r.logf("sweep %d: connecting %d devices missing %d deliveries", pass, len(devs), missing)
		if got := r.waitEvents(evSwept, limit); got < len(r.linkList()) {
			r.problem("the sweep did not finish within %v", limit)
		}
		r.col.mu.Lock()
		r.col.lastProgress = time.Now()
		r.col.mu.Unlock()
		res2 := r.drainWait(30*time.Second, 5*time.Second)
		r.logf("sweep %d: %s", pass, res2)
		r.drainResult += fmt.Sprintf("; after sweep %d (%d devices) %s", pass, len(devs), res2)
	}
}

// sweepPasses is how many times drainAndSweep connects the devices still
// missing messages.
const sweepPasses = 3

// webhookWait waits (at most maxWait) until the webhook receiver got every
// inbound message confirmed to its device: the gateway's outbox may be
// behind, or backing off after a kill.
func (r *runner) webhookWait(maxWait time.Duration) {
	r.mu.Lock()
	keys := maps.Clone(r.inbound)
	r.mu.Unlock()
	start := time.Now()
	for {
		n := r.wh.check(keys).Lost
		if n == 0 {
			r.logf("webhook: all %d confirmed inbound messages in after %.1fs", len(keys), time.Since(start).Seconds())
			return
		}
		if time.Since(start) >= maxWait {
			r.logf("webhook: %d of %d confirmed inbound messages missing after %v", n, len(keys), maxWait)
			return
		}
		if !sleepCtx(r.ctx, 250*time.Millisecond) {
			return
		}
	}
}

// drainWait waits until every expected delivery came, nothing arrived for
// stall, or maxWait passed.
func (r *runner) drainWait(maxWait, stall time.Duration) string {
	start := time.Now()
	for {
		r.col.mu.Lock()
		exp, seen, idle := r.col.expected, r.col.seen, time.Since(r.col.lastProgress)
		r.col.mu.Unlock()
		switch {
		case seen >= exp:
			return fmt.Sprintf("all %d deliveries in after %.1fs", exp, time.Since(start).Seconds())
		case idle >= stall:
			return fmt.Sprintf("%d of %d deliveries missing, none for %v (after %.1fs)", exp-seen, exp, stall, time.Since(start).Seconds())
		case time.Since(start) >= maxWait:
			return fmt.Sprintf("%d of %d deliveries missing after %v", exp-seen, exp, maxWait)
		}
		if !sleepCtx(r.ctx, 250*time.Millisecond) {
			return "stopped by the deadline"
		}
	}
}

// collectStats asks every worker for its SDK counters.
func (r *runner) collectStats() {
	if len(r.linkList()) == 0 {
		return
	}
	r.broadcast(&command{Op: opStats})
	if got := r.waitEvents(evStats, 30*time.Second); got < len(r.linkList()) {
		r.problem("only %d of %d workers sent their counters", got, len(r.linkList()))
	}
}

// stopWorkers closes every session and ends the worker processes.
func (r *runner) stopWorkers() {
	if r.col != nil {
		r.col.setPhase("stop")
	}
	r.stopping.Store(true)
	if len(r.linkList()) == 0 {
		return
	}
	r.broadcast(&command{Op: opStop})
	r.waitEvents(evStopped, 60*time.Second)
	var wg sync.WaitGroup
	for _, l := range r.linkList() {
		wg.Go(l.close)
	}
	wg.Wait()
}

// finish checks, reports and returns the exit status.
func (r *runner) finish() int {
	if r.ctx.Err() != nil {
		r.aborted = "stopped early: " + context.Cause(r.ctx).Error()
		if errors.Is(r.ctx.Err(), context.DeadlineExceeded) {
			r.aborted = fmt.Sprintf("hard deadline (%v) reached", r.cfg.deadline)
		}
	}
	v := r.verdict()
	rep := r.report(v)
	r.writeReports(rep)
	switch {
	case r.aborted != "":
		return exitDeadline
	case !v.Pass:
		return exitFail
	}
	return exitPass
}

// lastGwSample returns the sampler's latest reading of the gateway.
func (r *runner) lastGwSample() procSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastGw
}

// sampler reads the gateway's memory, CPU and sessions, and the harness's
// CPU, every second.
func (r *runner) sampler(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prevGw, prevH, prevMet procSample
	var prevGwQ, prevHQ runQueue
	prevPid, prevMetPid := 0, 0
	prevAt := time.Now()
	hc := newAPIClient(r.tgt.baseURL, r.tgt.adminToken, 2, r.tgt.caPEM)
	mc := hc.HTTP
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		dt := now.Sub(prevAt).Seconds()
		prevAt = now
		var gw, met procSample
		if r.tgt.metricsURL != "" {
			mctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
			met = scrapeMetrics(mctx, mc, r.tgt.metricsURL)
			cancel()
		}
		pid := 0
		var gwQ runQueue
		if r.tgt.local != nil {
			pid = r.tgt.local.pid()
			gw = readProc(pid, i%5 == 0)
			gw.gor = met.gor
			gwQ = readRunQueue(pid)
		} else {
			gw = met
			gwQ = met.runq
		}
		cpu, used := 0.0, 0.0
		switch {
		case gw.valid && prevGw.valid && pid == prevPid:
			used = max(gw.cpu-prevGw.cpu, 0)
		case gw.valid && r.tgt.local != nil:
			used = gw.cpu // a new process: all its time is since the last sample
		}
		if dt > 0 {
			cpu = used / dt * 100
		}
		// Threads waiting for a CPU, on average over the second.
		gwWait, gwWaiting := 0.0, -1.0
		if w, ok := gatewayWait(gwQ, prevGwQ, pid, prevPid, r.tgt.local != nil); ok {
			gwWait = w
			if dt > 0 {
				gwWaiting = gwWait / dt
			}
		}
		prevGw, prevPid, prevGwQ = gw, pid, gwQ
		h := readProc(os.Getpid(), false)
		hQ := readRunQueue(os.Getpid())
		for _, l := range r.linkList() {
			if p := l.pid(); p > 0 {
				s := readProc(p, false)
				h.cpu += s.cpu
				h.rss += s.rss
				hQ = hQ.add(readRunQueue(p))
			}
		}
		hWaiting := -1.0
		if hQ.ok && prevHQ.ok && dt > 0 {
			hWaiting = max(hQ.wait-prevHQ.wait, 0) / dt
		}
		prevHQ = hQ
		hcpu := 0.0
		if prevH.valid && dt > 0 {
			hcpu = max(h.cpu-prevH.cpu, 0) / dt * 100
		}
		prevH = h
		gwSessions := -1
		sctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
		if st, err := hc.Stats(sctx); err == nil {
			gwSessions = 0
			for _, n := range st.Sessions {
				gwSessions += int(n)
			}
		}
		cancel()
		tot := r.workerTotals()
		r.mu.Lock()
		r.gwCPU += used
		r.gwRunq += gwWait
		if hQ.ok {
			r.hRunq = max(r.hRunq, hQ.wait)
		}
		if met.commit != nil || met.fsync != nil || met.send != nil || met.rt || met.lsm.ok {
			if pid != prevMetPid {
				prevMet = procSample{} // a new process: all it counted is new
			}
			r.store.commit.add(met.commit, prevMet.commit)
			r.store.fsync.add(met.fsync, prevMet.fsync)
			r.store.sched.add(met.sched, prevMet.sched)
			r.store.send.add(met.send, prevMet.send)
			r.gwRuntime.add(met, prevMet)
			r.store.lsm.add(met.lsm, prevMet.lsm)
			prevMet, prevMetPid = met, pid
		}
		if gw.valid {
			r.lastGw = gw
			r.gwPeak.rss = max(r.gwPeak.rss, gw.rss)
		}
		r.gwMaxFDs = max(r.gwMaxFDs, gw.fds)
		r.gwPeak.gor = max(r.gwPeak.gor, gw.gor)
		r.harnessPeak.rss = max(r.harnessPeak.rss, h.rss)
		r.harnessPeak.cpu = max(r.harnessPeak.cpu, h.cpu)
		r.peakOnline = max(r.peakOnline, tot.Online)
		send := r.store.send.clone()
		r.mu.Unlock()
		if r.col != nil {
			r.col.sample(now, sampleRow{online: tot.Online, gwSessions: gwSessions, inbound: tot.InboundOK, rss: gw.rss, cpu: cpu,
				harnessCPU: hcpu, gor: gw.gor, gwWaiting: gwWaiting, harnessWaiting: hWaiting, send: send})
		}
	}
}

// progressLoop prints a line every -progress.
func (r *runner) progressLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.progress)
	defer t.Stop()
	prevAcc, prevSeen := 0, 0
	prevAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		from := int(now.Add(-r.cfg.progress).Sub(r.col.t0) / time.Second)
		p := r.col.snapshot(from)
		tot := r.workerTotals()
		gw := r.lastGwSample()
		r.col.mu.Lock()
		phase := r.col.phase
		last := secStat{}
		if n := len(r.col.series); n >= 2 {
			last = r.col.series[n-2]
		}
		r.col.mu.Unlock()
		dt := now.Sub(prevAt).Seconds()
		r.logf("[%5.0fs %-7s] sessions %d (gateway %d) | accepted %d (%.0f/s), failed posts %d | delivered %d/%d (%.0f/s), redelivered %d | e2e p50 %.1fms p99 %.1fms | wakes %d | gateway %.0f MiB, %.0f%% CPU",
			now.Sub(r.startedAt).Seconds(), phase, tot.Online, last.gwSessions, p.accepted, float64(p.accepted-prevAcc)/dt,
			p.failedPosts, p.seen, p.expected, float64(p.seen-prevSeen)/dt, p.redelivered, ms(p.p50), ms(p.p99), p.wakes,
			gw.rss/(1<<20), last.cpu)
		prevAcc, prevSeen, prevAt = p.accepted, p.seen, now
	}
}
