package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "127.3.4.5", "::1", "localhost"} {
		if err := checkLoopback(h); err != nil {
			t.Errorf("checkLoopback(%q) = %v, want nil", h, err)
		}
	}
	for _, h := range []string{"", "0.0.0.0", "10.0.0.1", "192.168.1.1", "8.8.8.8", "::", "2001:db8::1"} {
		if err := checkLoopback(h); err == nil {
			t.Errorf("checkLoopback(%q) = nil, want a refusal", h)
		}
	}
}

func TestParseFlagsRemoteTargets(t *testing.T) {
	cases := []struct {
		args []string
		want string // substring of the error; "" for success
	}{
		{[]string{"-addr", "127.0.0.1:5223", "-url", "http://127.0.0.1:8080", "-admin-token", "t"}, ""},
		{[]string{"-addr", "10.1.2.3:5223", "-url", "http://127.0.0.1:8080", "-admin-token", "t"}, "loopback"},
		{[]string{"-addr", "127.0.0.1:5223", "-url", "http://192.0.2.7:8080", "-admin-token", "t"}, "loopback"},
		{[]string{"-addr", "127.0.0.1:5223", "-url", "http://127.0.0.1:8080", "-admin-token", "t", "-metrics-url", "http://198.51.100.1/metrics"}, "loopback"},
		{[]string{"-addr", ":5223", "-url", "http://127.0.0.1:8080", "-admin-token", "t"}, "loopback"},
		{[]string{"-addr", "127.0.0.1:5223", "-url", "http://127.0.0.1:8080"}, "admin-token"},
		{[]string{"-addr", "127.0.0.1:5223", "-url", "http://127.0.0.1:8080", "-admin-token", "t", "-kill-every", "10s"}, "kill-every"},
		{[]string{"-admin-token", "t"}, "remote"},
		{[]string{"-sessions", "100", "-users", "1"}, "devices per user"},
		{[]string{"-offline", "1.5"}, "share"},
		{[]string{"-fanout", "50", "-users", "10", "-sessions", "100"}, "fanout"},
		{[]string{"stray"}, "unexpected argument"},
	}
	for _, c := range cases {
		cfg, err := parseFlags(c.args, io.Discard)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		case c.want == "" && (!cfg.remote || !cfg.insecure || cfg.startTLS != 0):
			t.Errorf("%v: remote %v insecure %v starttls %v; want a remote target without STARTTLS", c.args, cfg.remote, cfg.insecure, cfg.startTLS)
		}
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.sessions != 18000 || cfg.rate != 5000 || cfg.duration != 5*time.Minute || cfg.remote || cfg.deadline <= cfg.duration {
		t.Errorf("defaults: %d sessions, %v msgs/s, %v, remote %v, deadline %v", cfg.sessions, cfg.rate, cfg.duration, cfg.remote, cfg.deadline)
	}
	if cfg.flagValues["sessions"] != "18000" {
		t.Errorf("flagValues[sessions] = %q", cfg.flagValues["sessions"])
	}
}

func TestPlanProcs(t *testing.T) {
	p, err := planProcs(18000, 0, 0, 20000)
	if err != nil || !p.inProcess || p.gateway != 18000+gatewayReserve {
		t.Errorf("18000 at 20000: %+v, %v; want in process", p, err)
	}
	p, err = planProcs(30000, 0, 0, 20000)
	if err != nil || p.inProcess || p.workers != 2 || p.perWorker != 15000 {
		t.Errorf("30000 at 20000: %+v, %v; want 2 workers of 15000", p, err)
	}
	p, err = planProcs(500, 2, 0, 20000)
	if err != nil || p.inProcess || p.workers != 2 || p.perWorker != 250 {
		t.Errorf("500 with -workers 2: %+v, %v", p, err)
	}
	p, err = planProcs(1000, 0, 300, 20000)
	if err != nil || p.workers != 4 || p.perWorker != 250 {
		t.Errorf("1000 with -per-worker 300: %+v, %v; want 4 of 250", p, err)
	}
	if _, err := planProcs(5000, 1, 0, 1000); err == nil {
		t.Error("5000 sessions in 1 worker of 1000 files: want an error")
	}
	if p.describe(1000) == "" {
		t.Error("empty description")
	}
}

// TestFreePortsDistinct: the ports for the gateway's listeners are chosen
// while all are held, so none is handed out twice.
func TestFreePortsDistinct(t *testing.T) {
	for range 20 {
		ports, err := freePorts(4)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %s chosen twice in %v", p, ports)
			}
			seen[p] = true
		}
	}
}
