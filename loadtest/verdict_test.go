package main

import (
	"strings"
	"testing"
)

func TestSaturationWarning(t *testing.T) {
	cases := []struct {
		name       string
		cores      int
		secs       float64
		gw, h      float64
		local      bool
		want, also string
	}{
		// The 18,000-session soak on two cores: 347.6 s of gateway and
		// 176.5 s of harness CPU over 300 s of traffic.
		{"local saturated", 2, 300, 347.6, 176.5, true, "87% busy", "gateway 1.16 cores, harness 0.59"},
		{"local with room", 2, 300, 200, 100, true, "", ""},
		{"remote gateway not counted", 2, 300, 347.6, 176.5, false, "", ""},
		{"remote, harness saturated", 2, 100, 0, 180, false, "90% busy with the harness alone", "(1.80 cores)"},
		{"too short to say", 2, 4, 8, 8, true, "", ""},
		{"no traffic", 2, 0, 0, 0, true, "", ""},
		{"more cores", 8, 300, 347.6, 176.5, true, "", ""},
	}
	for _, c := range cases {
		got := saturationWarning(c.cores, c.secs, c.gw, c.h, c.local)
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
