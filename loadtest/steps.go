package main

import (
	"fmt"
	"time"
)

// With -rate-steps the generator offers each rate in turn. A step's figures
// leave out its first seconds (stepWarmup, at most a quarter of the step),
// while the queues of the step before settle.

// stepReport is one -rate-steps step.
type stepReport struct {
	Offered float64 `json:"offered_per_s"`
	span
	KeptUp   bool `json:"kept_up"` // accepted at least keptUpShare of the offer
	MeetsSLO bool `json:"meets_slo"`
}

const (
	stepWarmup  = 5 * time.Second
	keptUpShare = 0.98
)

// stepsLocked computes the steps' figures from the per-second series;
// trafficEnd ends the last one, slo (0: none) sets MeetsSLO. It returns
// the steps and the highest offered rate that was kept up with and met the
// SLO (0 if none). mu is held.
func (c *collector) stepsLocked(rates []float64, trafficEnd time.Time, slo time.Duration) ([]stepReport, float64) {
	if len(c.steps) == 0 {
		return nil, 0
	}
	t0 := c.t0.UnixNano()
	sec := func(ns int64) int { return int((ns - t0) / int64(time.Second)) }
	var out []stepReport
	capacity := 0.0
	for i, m := range c.steps {
		end := trafficEnd.UnixNano()
		if i+1 < len(c.steps) {
			end = c.steps[i+1].At
		}
		warm := min(stepWarmup, time.Duration(end-m.At)/4)
		from, to := sec(m.At+int64(warm)), sec(end) // whole seconds in [from, to)
		st := stepReport{Offered: rates[min(i, len(rates)-1)], span: c.spanLocked(from, to)}
		st.KeptUp = st.seconds > 0 && st.Accepted >= keptUpShare*st.Offered
		st.MeetsSLO = st.KeptUp && st.latencies > 0 && (slo <= 0 || st.P99 <= ms(slo))
		if st.MeetsSLO {
			capacity = max(capacity, st.Offered)
		}
		out = append(out, st)
	}
	return out, capacity
}

// stepsText is the report's table of steps.
func stepsText(steps []stepReport, capacity float64, slo time.Duration) []string {
	if len(steps) == 0 {
		return nil
	}
	lines := []string{"steps     offered/s  accepted/s  delivered/s  e2e p50 / p99 ms   REST p50 / p99 ms  gateway CPU  harness CPU"}
	for _, s := range steps {
		mark := ""
		if !s.KeptUp {
			mark = "  (fell behind)"
		} else if !s.MeetsSLO {
			mark = "  (over the SLO)"
		}
		lines = append(lines, fmt.Sprintf("          %9.0f  %10.0f  %11.0f  %7.1f / %7.1f  %7.1f / %7.1f  %9.0f %%  %9.0f %%%s",
			s.Offered, s.Accepted, s.Delivered, s.P50, s.P99, s.PostP50, s.PostP99, s.GatewayCPU, s.HarnessCPU, mark))
	}
	cond := fmt.Sprintf("accepted %.0f %% of the offer", keptUpShare*100) + sloClause(slo)
	if capacity > 0 {
		lines = append(lines, fmt.Sprintf("          highest step that %s: %.0f msgs/s", cond, capacity))
	} else {
		lines = append(lines, "          no step "+cond)
	}
	return lines
}

// sloClause is " with an end-to-end p99 <= slo", or "" without one.
func sloClause(slo time.Duration) string {
	if slo <= 0 {
		return ""
	}
	return fmt.Sprintf(" with an end-to-end p99 <= %v", slo)
}
