package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseRateSteps(t *testing.T) {
	cfg, err := parseFlags([]string{"-rate-steps", "1000, 2500,4000", "-d", "90s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.rateSteps) != 3 || cfg.rateSteps[1] != 2500 || cfg.rate != 1000 {
		t.Errorf("steps %v, rate %v; want [1000 2500 4000] starting at 1000", cfg.rateSteps, cfg.rate)
	}
	for _, c := range []struct{ args, want string }{
		{"-rate-steps 1000,x", "positive rate"},
		{"-rate-steps 1000,-5", "positive rate"},
		{"-rate-steps 1000,2000,3000 -d 20s", "at least 10 s"},
	} {
		if _, err := parseFlags(strings.Fields(c.args), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
}

// TestStepsFromSeries: each step's figures come from its own seconds after
// the warm-up; the capacity is the highest step that kept up and met the
// SLO, not merely the last one that did.
func TestStepsFromSeries(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	c := &collector{t0: t0}
	// Three 20 s steps from t0+10s: 1000/s kept up (latency 10 ms), 2000/s
	// kept up but slow (80 ms), 3000/s fell behind (2,000 accepted/s).
	rates := []float64{1000, 2000, 3000}
	for i := range rates {
		c.steps = append(c.steps, mark{Name: "x", At: t0.Add(time.Duration(10+20*i) * time.Second).UnixNano()})
	}
	end := t0.Add(70 * time.Second)
	c.series = make([]secStat, 75)
	for s := 10; s < 70; s++ {
		step := (s - 10) / 20
		row := &c.series[s]
		row.accepted = []int{1000, 2000, 2000}[step]
		row.delivered = row.accepted * 16 / 10
		row.lat, row.post = new(hist), new(hist)
		lat := []time.Duration{10, 80, 300}[step] * time.Millisecond
		if s-10-20*step < 5 {
			lat = time.Second // the warm-up's backlog: left out
		}
		for range 100 {
			row.lat.add(lat)
			row.post.add(lat / 2)
		}
		row.sampled, row.cpu, row.harnessCPU = true, float64(40*(step+1)), 20
	}
	steps, capacity := c.stepsLocked(rates, end, 50*time.Millisecond)
	if len(steps) != 3 {
		t.Fatalf("%d steps", len(steps))
	}
	if s := steps[0]; s.FromS != 15 || s.ToS != 30 || s.Accepted != 1000 || s.Delivered != 1600 || s.P99 > 11 || s.P99 < 9 ||
		s.PostP99 > 6 || s.GatewayCPU != 40 || !s.KeptUp || !s.MeetsSLO {
		t.Errorf("step 1: %+v", s)
	}
	if s := steps[1]; !s.KeptUp || s.MeetsSLO || s.P99 < 70 {
		t.Errorf("step 2 kept up over the SLO: %+v", s)
	}
	if s := steps[2]; s.KeptUp || s.MeetsSLO || s.Accepted != 2000 {
		t.Errorf("step 3 fell behind: %+v", s)
	}
	if capacity != 1000 {
		t.Errorf("capacity %v, want 1000", capacity)
	}
	text := strings.Join(stepsText(steps, capacity, 50*time.Millisecond), "\n")
	for _, want := range []string{"(over the SLO)", "(fell behind)", "p99 <= 50ms: 1000 msgs/s"} {
		if !strings.Contains(text, want) {
			t.Errorf("steps table lacks %q:\n%s", want, text)
		}
	}
	// Without an SLO the capacity is the highest step that kept up.
	if _, capacity := c.stepsLocked(rates, end, 0); capacity != 2000 {
		t.Errorf("capacity without an SLO %v, want 2000", capacity)
	}
}
