package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// target is the gateway under test, started here or given by address.
type target struct {
	baseURL      string // REST, e.g. http://127.0.0.1:PORT
	addr         string // XMPP direct TLS
	startTLSAddr string // XMPP STARTTLS ("" if none)
	wsURL        string // ws://.../xmpp-websocket
	metricsURL   string // /metrics ("" if unknown)
	adminToken   string
	caPEM        string // the gateway's certificate, to verify it ("" skips)
	local        *localGateway
}

// localGateway is the gateway process this harness started: always the
// same binary, data dir and ports, so it can be killed and restarted.
type localGateway struct {
	bin, dataDir, logPath string
	args                  []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process exited
	killing  bool          // the exit is ours (kill -9 or stop)
	crashes  []string      // exits we did not cause
	restarts int
	started  time.Time // when the current process was started
}

// startedAt returns when the current process was started.
func (g *localGateway) startedAt() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. Every listener stays open until all n are chosen: a port closed at
// once may be handed out again by the next pick.
func freePorts(n int) ([]string, error) {
	ports := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().String())
	}
	return ports, nil
}

// buildGateway builds tether/cmd/gateway into dir, from the module the
// harness runs in.
func buildGateway(ctx context.Context, dir string, logw io.Writer) (string, error) {
	bin := filepath.Join(dir, "gateway")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "tether/cmd/gateway")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build tether/cmd/gateway (run from the module, or pass -gateway-bin): %w", err)
	}
	return bin, nil
}

// newLocalGateway prepares a gateway on free loopback ports with a fresh
// data dir under tmp, trusting caFile for provider endpoints.
func newLocalGateway(bin, tmp, logPath, caFile, logLevel string) (*localGateway, *target, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	t := &target{
		baseURL: "http://" + ports[0], startTLSAddr: ports[1], addr: ports[2],
		wsURL: "ws://" + ports[0] + "/xmpp-websocket", metricsURL: "http://" + ports[3] + "/metrics",
		adminToken: "soak-" + hex.EncodeToString(tok),
	}
	g := &localGateway{bin: bin, dataDir: filepath.Join(tmp, "data"), logPath: logPath}
	g.args = []string{"--data-dir", g.dataDir, "--http-addr", ports[0], "--https-addr", "",
		"--xmpp-addr", ports[1], "--xmpps-addr", ports[2], "--metrics-addr", ports[3],
		"--admin-token", t.adminToken, "--provider-ca-file", caFile, "--log-level", logLevel}
	t.local = g
	return g, t, nil
}

// start runs the gateway and waits (at most 60 s) until /readyz answers.
func (g *localGateway) start(ctx context.Context, baseURL string) error {
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(g.bin, g.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The gateway dies with the harness, whatever kills the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start gateway: %w", err)
	}
	done := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.done, g.killing, g.started = cmd, done, false, time.Now()
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		g.mu.Lock()
		if !g.killing {
			g.crashes = append(g.crashes, fmt.Sprintf("gateway pid %d exited by itself: %v (see %s)", cmd.Process.Pid, err, g.logPath))
		}
		g.mu.Unlock()
		close(done)
	}()
	return waitReady(ctx, baseURL, done, 60*time.Second)
}

// errExitedStarting is start's error when the gateway exited before it
// was ready.
var errExitedStarting = errors.New("the gateway exited while starting")

// logMentions reports whether the last 4 KiB of the gateway's log hold s.
func (g *localGateway) logMentions(s string) bool {
	f, err := os.Open(g.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > 4096 {
		f.Seek(st.Size()-4096, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.Contains(string(b), s)
}

// waitReady polls /readyz until it answers 200, the process exits or the
// time is up.
func waitReady(ctx context.Context, baseURL string, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/readyz", nil)
		if resp, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errExitedStarting
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling readiness
		}
	}
	return fmt.Errorf("the gateway was not ready within %v", limit)
}

// pid returns the current process's id (0 if none).
func (g *localGateway) pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil || g.cmd.Process == nil {
		return 0
	}
	select {
	case <-g.done:
		return 0
	default:
	}
	return g.cmd.Process.Pid
}

// kill sends SIGKILL to the gateway process we started and waits for it.
func (g *localGateway) kill() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.killing = true
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart kills (if running) and starts the gateway again on the same data
// dir and ports.
func (g *localGateway) restart(ctx context.Context, baseURL string) error {
	g.kill()
	g.mu.Lock()
	g.restarts++
	g.mu.Unlock()
	return g.start(ctx, baseURL)
}

// stop ends the gateway with SIGTERM, then SIGKILL after 15 s.
func (g *localGateway) stop() {
	g.mu.Lock()
	cmd, done := g.cmd, g.done
	g.killing = true
	g.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// crashList returns the exits we did not cause.
func (g *localGateway) crashList() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.crashes...)
}

// procSample is one reading of a process's memory and CPU.
type procSample struct {
	rss   float64 // bytes
	cpu   float64 // CPU seconds used so far (user + system)
	fds   int     // open descriptors (-1 unknown)
	gor   int     // goroutines (-1 unknown)
	valid bool
	// The store's synced commits and WAL fsyncs, and the scheduler's
	// latencies (storehist.go), from the /metrics page; nil when it has
	// none.
	commit, fsync, sched *promHist
	send                 *promHist // the send route's REST handler (storehist.go)
	// The Go runtime's bytes allocated and GC cycles so far, from the
	// /metrics page (rt: both were there).
	alloc, gcs float64
	rt         bool
	// The store's LSM figures (tether_store_*), ok when the page had them.
	lsm lsmSample
	// Its threads' waits for a CPU so far (runqueue.go), from
	// tether_process_cpu_wait_seconds_total: how a remote gateway's are read.
	runq runQueue
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// readProc reads /proc/<pid>/stat (utime, stime) and status (VmRSS).
func readProc(pid int, withFDs bool) procSample {
	if pid <= 0 {
		return procSample{}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return procSample{}
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return procSample{}
	}
	// After the name: state(0) ppid(1) … utime(11) stime(12).
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	out := procSample{cpu: (ut + st) / clockTicks, fds: -1, gor: -1, valid: true}
	if sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(sb), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				out.rss = kb * 1024
			}
		}
	}
	if withFDs {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			out.fds = len(ents)
		}
	}
	return out
}

// scrapeMetrics reads process_resident_memory_bytes,
// process_cpu_seconds_total, process_open_fds, go_goroutines, the runtime's
// allocation and GC counts, the store histograms and the store's LSM
// figures from a Prometheus /metrics page.
func scrapeMetrics(ctx context.Context, hc *http.Client, url string) procSample {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return procSample{}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return procSample{}
	}
	defer resp.Body.Close()
	out := procSample{fds: -1, gor: -1}
	var commit, fsync, sched, send promHist
	var sawAlloc, sawGCs bool
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, m := range []struct {
			name string
			dst  *float64
			seen *bool
		}{
			{"process_resident_memory_bytes ", &out.rss, &out.valid}, {"process_cpu_seconds_total ", &out.cpu, &out.valid},
			{"go_memstats_alloc_bytes_total ", &out.alloc, &sawAlloc}, {"go_gc_duration_seconds_count ", &out.gcs, &sawGCs},
			{"tether_store_flushes_total ", &out.lsm.c[lsmFlushes], &out.lsm.ok}, {"tether_store_compactions_total ", &out.lsm.c[lsmCompactions], &out.lsm.ok},
			{"tether_store_write_stalls_total ", &out.lsm.c[lsmStalls], &out.lsm.ok}, {"tether_store_write_stall_seconds_total ", &out.lsm.c[lsmStallSecs], &out.lsm.ok},
			{"tether_store_compaction_debt_bytes ", &out.lsm.debt, &out.lsm.ok}, {"tether_store_l0_sublevels ", &out.lsm.l0, &out.lsm.ok},
			{"tether_store_disk_bytes ", &out.lsm.disk, &out.lsm.ok}, {"tether_store_bad_single_deletes_total ", &out.lsm.c[lsmBadSingleDels], &out.lsm.ok},
			{`tether_store_written_bytes_total{kind="wal"} `, &out.lsm.c[lsmWALBytes], &out.lsm.ok},
			{`tether_store_written_bytes_total{kind="flush"} `, &out.lsm.c[lsmFlushBytes], &out.lsm.ok},
			{`tether_store_written_bytes_total{kind="compaction"} `, &out.lsm.c[lsmCompactBytes], &out.lsm.ok},
			{"tether_process_cpu_wait_seconds_total ", &out.runq.wait, &out.runq.ok},
		} {
			if v, ok := strings.CutPrefix(line, m.name); ok {
				*m.dst, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
				*m.seen = true
			}
		}
		if v, ok := strings.CutPrefix(line, "process_open_fds "); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			out.fds = int(n)
		}
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			out.gor = int(n)
		}
		if strings.HasPrefix(line, "tether_store_") {
			_ = scrapeHist(&commit, metricCommit, `sync="true"`, line) || scrapeHist(&fsync, metricFsync, "", line)
		}
		if strings.HasPrefix(line, metricSched) {
			scrapeHist(&sched, metricSched, "", line)
		}
		if strings.HasPrefix(line, metricHTTP) {
			scrapeHist(&send, metricHTTP, sendRoute, line)
		}
	}
	out.rt = sawAlloc && sawGCs
	if len(commit.le) > 0 {
		out.commit = &commit
	}
	if len(fsync.le) > 0 {
		out.fsync = &fsync
	}
	if len(sched.le) > 0 {
		out.sched = &sched
	}
	if len(send.le) > 0 {
		out.send = &send
	}
	return out
}
