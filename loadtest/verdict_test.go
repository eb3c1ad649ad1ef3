package main

import (
	"strings"
	"testing"
	"time"
)

func TestSaturationWarning(t *testing.T) {
	cases := []struct {
		name       string
		cores      int
		secs       float64
		u          cpuUse
		local      bool
		want, also string
	}{
		// The 18,000-session soak on two cores: 347.6 s of gateway and
		// 176.5 s of harness CPU over 300 s of traffic.
		{"local saturated", 2, 300, cpuUse{347.6, 176.5, 0, 0}, true, "87% busy", "gateway 1.16 cores, harness 0.59)"},
		{"local with room", 2, 300, cpuUse{200, 100, 0, 0}, true, "", ""},
		{"remote gateway not counted", 2, 300, cpuUse{347.6, 176.5, 0, 0}, false, "", ""},
		{"remote, harness saturated", 2, 100, cpuUse{0, 180, 0, 0}, false, "90% busy with the harness alone", "(1.80 cores)"},
		{"too short to say", 2, 4, cpuUse{8, 8, 0, 0}, true, "", ""},
		{"no traffic", 2, 0, cpuUse{0, 0, 0, 0}, true, "", ""},
		{"more cores", 8, 300, cpuUse{347.6, 176.5, 0, 0}, true, "", ""},
		// Session 25's steady mix: 20 s in which the gateway's threads ran
		// 21.9 s and waited 39.2 s, the harness's ran 13.0 s and waited 24.6 s.
		{"saturated, threads waiting", 2, 20, cpuUse{21.9, 13.0, 39.2, 24.6}, true, "87% busy", "1.96 of the gateway's threads and 1.23 of the harness's"},
		{"waiting below the busy share", 2, 100, cpuUse{70, 50, 60, 50}, true, "60% busy", "0.60 of the gateway's threads and 0.50 of the harness's"},
		{"little waiting, room", 2, 100, cpuUse{70, 50, 40, 30}, true, "", ""},
		{"remote: the gateway's waits not counted", 2, 100, cpuUse{0, 90, 70, 110}, false, "45% busy with the harness alone", "1.10 of the harness's threads"},
		{"remote, little waiting", 2, 100, cpuUse{0, 90, 70, 10}, false, "", ""},
	}
	for _, c := range cases {
		got := saturationWarning(c.cores, c.secs, c.u, c.local)
		if c.want == "" {
			if got != "" {
				t.Errorf("%s: warned %q", c.name, got)
			}
			continue
		}
		if !strings.Contains(got, c.want) || !strings.Contains(got, c.also) {
			t.Errorf("%s: %q, want it to say %q and %q", c.name, got, c.want, c.also)
		}
	}
}

func TestLagWarning(t *testing.T) {
	if w := lagWarning(1_500_000, 20_000, 64, 20*time.Millisecond); w != "" {
		t.Errorf("1.3%% skipped should not warn: %s", w)
	}
	if w := lagWarning(0, 0, 64, 0); w != "" {
		t.Errorf("nothing offered should not warn: %s", w)
	}
	w := lagWarning(1_500_000, 300_000, 64, 20*time.Millisecond)
	for _, want := range []string{"skipped 300000 of the 1500000", "(20%)", "64 connections at a REST p50 of 20.0 ms carry about 3200 POSTs a second", "-post-conns"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning lacks %q: %s", want, w)
		}
	}
}
