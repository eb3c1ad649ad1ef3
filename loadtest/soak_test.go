package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// smallSoakArgs is the small soak `make test` runs: 500 sessions over two
// worker processes, 400 messages/s for 15 s with 60% churn per minute, 20
// inbound messages/s checked against the app's webhook, and one kill -9
// of the gateway. The lead's Makefile runs the same through this test.
var smallSoakArgs = []string{
	"-sessions", "500", "-users", "125", "-rate", "400", "-d", "15s",
	"-churn", "60", "-kill-every", "8s", "-kill-max", "1", "-workers", "2",
	"-inbound-rate", "20", "-webhook", "-drain", "30s", "-progress", "5s", "-deadline", "4m",
}

// TestSmallSoak builds the harness (with the race detector when the test
// has it) and the gateway (without: a race-instrumented gateway is several
// times slower, so the soak would measure the detector), runs the small
// soak and checks the verdict: exit 0, no loss, the kill done, every check
// clean. TETHER_SOAK_GATEWAY_BIN names a gateway binary to use instead of
// building one (a cold build takes a minute and a half here).
func TestSmallSoak(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	build := func(out, pkg string, race bool) {
		args := []string{"build", "-o", filepath.Join(dir, out)}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	start := time.Now()
	build("loadtest", "tether/loadtest", raceEnabled)
	gw := os.Getenv("TETHER_SOAK_GATEWAY_BIN")
	if gw == "" {
		build("gateway", "tether/cmd/gateway", false)
		gw = filepath.Join(dir, "gateway")
	}
	t.Logf("built in %.1fs", time.Since(start).Seconds())

	outDir := filepath.Join(dir, "out")
	args := append(append([]string(nil), smallSoakArgs...), "-gateway-bin", gw, "-out", outDir)
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "loadtest"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start = time.Now()
	err := cmd.Run()
	t.Logf("soak ran in %.1fs", time.Since(start).Seconds())
	if err != nil {
		t.Fatalf("loadtest %s: %v\n%s", strings.Join(smallSoakArgs, " "), err, out.String())
	}
	if testing.Verbose() {
		t.Logf("output:\n%s", out.String())
	}

	b, err := os.ReadFile(filepath.Join(outDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Pass     bool     `json:"pass"`
		Failures []string `json:"failures"`
		Checks   struct {
			Expected   uint64 `json:"expected_deliveries"`
			Delivered  uint64 `json:"delivered"`
			Lost       uint64 `json:"lost"`
			Unverified uint64 `json:"unverified"`
			Misrouted  uint64 `json:"misrouted"`
			Phantom    uint64 `json:"phantom"`
			Wakes      struct {
				ToOffline uint64 `json:"to_offline_devices"`
				ToOnline  uint64 `json:"to_online_devices"`
			} `json:"wakes"`
			Webhook *webhookChecks `json:"webhook"`
		} `json:"checks"`
		Gateway struct {
			Kills             int             `json:"kills"`
			Downtimes         []float64       `json:"downtimes_s"`
			RestartPhases     []restartPhases `json:"restart_phases"`
			Store             *storeReport    `json:"store"`
			AllocKBPerMessage float64         `json:"alloc_kb_per_accepted_message"`
			GCsPer10kMessages float64         `json:"gc_cycles_per_10k_accepted_messages"`
			RunnableP50Ms     float64         `json:"runnable_wait_p50_ms"`
			RunnableP99Ms     float64         `json:"runnable_wait_p99_ms"`
		} `json:"gateway"`
		Harness struct {
			RunnableP50Ms float64 `json:"runnable_wait_p50_ms"`
			RunnableP99Ms float64 `json:"runnable_wait_p99_ms"`
			RunQueueWaitS float64 `json:"run_queue_wait_s_during_traffic"`
		} `json:"harness"`
		Series struct {
			T              []int      `json:"t"`
			GwWaiting      []*float64 `json:"gateway_threads_waiting_for_cpu"`
			HarnessWaiting []*float64 `json:"harness_threads_waiting_for_cpu"`
		} `json:"series"`
		Messages struct {
			Posts int `json:"posts"`
		} `json:"messages"`
		Latency struct {
			POSTGateway *handlerLatency `json:"post_gateway_handler"`
		} `json:"latency_ms"`
		Sessions struct {
			Peak        int    `json:"peak_online"`
			ChurnResume uint64 `json:"churn_drops_resuming"`
			ChurnFresh  uint64 `json:"churn_drops_fresh"`
		} `json:"sessions"`
		Plan struct {
			Workers int `json:"workers"`
		} `json:"processes"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	c := rep.Checks
	switch {
	case !rep.Pass || len(rep.Failures) > 0:
		t.Errorf("verdict: pass %v, failures %v", rep.Pass, rep.Failures)
	case c.Lost != 0 || c.Unverified != 0:
		t.Errorf("lost %d (unverified %d)", c.Lost, c.Unverified)
	case c.Expected < 1000 || c.Delivered == 0:
		t.Errorf("only %d deliveries expected, %d delivered", c.Expected, c.Delivered)
	case c.Misrouted+c.Phantom+c.Wakes.ToOnline != 0:
		t.Errorf("misrouted %d, phantom %d, wakes to online %d", c.Misrouted, c.Phantom, c.Wakes.ToOnline)
	case rep.Gateway.Kills != 1:
		t.Errorf("%d kills, want 1", rep.Gateway.Kills)
	case len(rep.Gateway.RestartPhases) != 1 || len(rep.Gateway.Downtimes) != 1 ||
		!(0 < rep.Gateway.RestartPhases[0].ExitedS && rep.Gateway.RestartPhases[0].ExitedS <= rep.Gateway.RestartPhases[0].StartedS &&
			rep.Gateway.RestartPhases[0].StartedS <= rep.Gateway.Downtimes[0]):
		t.Errorf("restart phases %+v out of order with downtimes %v", rep.Gateway.RestartPhases, rep.Gateway.Downtimes)
	case rep.Gateway.Store == nil || rep.Gateway.Store.Fsyncs == 0 || rep.Gateway.Store.SyncedCommits < float64(rep.Messages.Posts)/2:
		// Every POST waits for a synced commit; the histograms are read
		// once a second, so a second or two at the edges may be missing.
		t.Errorf("store during traffic %+v, for %d POSTs", rep.Gateway.Store, rep.Messages.Posts)
	case rep.Gateway.Store.LSM == nil || rep.Gateway.Store.LSM.DiskMiB <= 0:
		// The store's space and shape come from the gateway's page too.
		t.Errorf("store LSM during traffic %+v", rep.Gateway.Store.LSM)
	case !(rep.Gateway.AllocKBPerMessage > 0 && rep.Gateway.GCsPer10kMessages > 0):
		t.Errorf("gateway allocation %.1f KB and %.2f GC cycles per 10k messages during traffic", rep.Gateway.AllocKBPerMessage, rep.Gateway.GCsPer10kMessages)
	case !(0 < rep.Gateway.RunnableP99Ms && rep.Gateway.RunnableP50Ms <= rep.Gateway.RunnableP99Ms) ||
		!(0 < rep.Harness.RunnableP99Ms && rep.Harness.RunnableP50Ms <= rep.Harness.RunnableP99Ms):
		t.Errorf("waits for a CPU during traffic: gateway p50/p99 %.3f/%.3f ms, harness %.3f/%.3f ms",
			rep.Gateway.RunnableP50Ms, rep.Gateway.RunnableP99Ms, rep.Harness.RunnableP50Ms, rep.Harness.RunnableP99Ms)
	case rep.Latency.POSTGateway == nil || rep.Latency.POSTGateway.Count < float64(rep.Messages.Posts)/2 ||
		!(0 < rep.Latency.POSTGateway.P50 && rep.Latency.POSTGateway.P50 <= rep.Latency.POSTGateway.P99):
		t.Errorf("the gateway's timing of the POSTs during traffic: %+v, for %d POSTs", rep.Latency.POSTGateway, rep.Messages.Posts)
	case c.Wakes.ToOffline == 0:
		t.Error("no wake reached an offline device")
	case c.Webhook == nil || c.Webhook.Confirmed < 100 || c.Webhook.Seen != c.Webhook.Confirmed || c.Webhook.Lost+c.Webhook.Twice != 0:
		t.Errorf("webhook: %+v, want every one of at least 100 confirmed inbound messages seen once", c.Webhook)
	case rep.Sessions.ChurnResume+rep.Sessions.ChurnFresh == 0:
		t.Error("no churn")
	case rep.Plan.Workers != 2 || rep.Sessions.Peak < 400:
		t.Errorf("%d workers, peak %d sessions", rep.Plan.Workers, rep.Sessions.Peak)
	}
	// The kernel's run queue, read each second for the gateway and the
	// harness's processes: a thread woken always waits a little.
	if runtime.GOOS == "linux" {
		sr := rep.Series
		for name, v := range map[string][]*float64{"gateway": sr.GwWaiting, "harness": sr.HarnessWaiting} {
			read, sum := 0, 0.0
			for _, x := range v {
				if x != nil {
					read++
					sum += *x
					if *x < 0 {
						t.Errorf("%s: %v threads waiting for a CPU", name, *x)
					}
				}
			}
			if len(v) != len(sr.T) || read < 5 || sum <= 0 {
				t.Errorf("%s threads waiting for a CPU: %d of %d seconds read, %v in all", name, read, len(sr.T), sum)
			}
		}
		if rep.Harness.RunQueueWaitS <= 0 {
			t.Errorf("the harness's threads waited %v s for a CPU during traffic", rep.Harness.RunQueueWaitS)
		}
	}
	for _, name := range []string{"report.html", "report.txt"} {
		if st, err := os.Stat(filepath.Join(outDir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The text summary gives the kill's downtime as a reader wants it.
	if txt, err := os.ReadFile(filepath.Join(outDir, "report.txt")); err == nil &&
		!regexp.MustCompile(`; kills 1 \(downtimes \[\d+\.\d\d\] s\)\n`).Match(txt) {
		t.Errorf("report.txt has no gateway line with one kill and its downtime to the hundredth:\n%s", txt)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out.String())
	}
}
