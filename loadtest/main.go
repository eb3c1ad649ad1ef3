// Command loadtest is Tether's soak harness (SPEC section 10): it drives a
// gateway with thousands of real device sessions through the sdkproto
// client SDK and messages through the REST API, injects churn, offline
// devices woken by push and kill -9 restarts, and ends with a verdict on
// every accepted message.
//
//	go run ./loadtest                       # the full default soak, gateway started here
//	go run ./loadtest -sessions 500 -d 15s  # a small one
//	go run ./loadtest -url http://127.0.0.1:8080 -addr 127.0.0.1:5223 -admin-token T   # a running gateway
//
// The run, in phases: it builds and starts the gateway (or checks the one
// given), starts fake APNs and FCM servers, creates an app, its users and
// devices; logs the online devices in at -login-rate (split over worker
// processes when one process may not open enough files); posts messages at
// -rate for -d while devices acknowledge, mark read, send inbound
// messages, drop and reconnect, offline devices are woken and pull, and
// the gateway is killed and restarted; then drains, sweeps up offline
// devices with messages left, checks every message not seen against its
// REST status, and writes the verdict and a report (text, JSON and an HTML
// page with plots). README.md describes the flags, the checks and the
// report.
//
// The process layout: the parent (this main) runs the REST generator, the
// fakes, the collector and the gateway; device sessions live in workers,
// either in the parent itself or in child processes (the same binary with
// the hidden -worker flag) that speak JSON lines over stdin and stdout
// (link.go).
//
// Exit status: 0 when every check passed, 1 when a check failed (loss,
// duplicate, misroute, wake to an online device, ...), 2 on a usage or
// setup error, 3 when the hard deadline stopped the run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// Exit statuses.
const (
	exitPass     = 0
	exitFail     = 1
	exitSetup    = 2
	exitDeadline = 3
)

// harnessGCPercent is the harness's GC target unless GOGC is set. The
// harness shares the machine's cores with the gateway it measures, and
// its heap (clients, the verdict's records) is small next to the memory
// such a machine has: collecting less often leaves the gateway more CPU.
const harnessGCPercent = 400

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(exitSetup)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(harnessGCPercent)
	}
	if cfg.worker {
		os.Exit(workerMain(os.Stdin, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := exitPass
	for i := 1; i <= cfg.repeat && ctx.Err() == nil; i++ {
		c := *cfg
		if cfg.repeat > 1 && cfg.out != "" {
			c.out = filepath.Join(cfg.out, fmt.Sprintf("run-%d", i))
			fmt.Printf("== run %d of %d\n", i, cfg.repeat)
		}
		code = max(code, run(ctx, &c, os.Stdout, os.Stderr))
	}
	stop()
	pprof.StopCPUProfile()
	os.Exit(code)
}
