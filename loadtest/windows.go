package main

import (
	"fmt"
	"math"
	"time"
)

// The report's figures per window of the traffic (-window, a minute by
// default): a whole run's p99 can hide that one minute set it. In the
// default soak the offline devices spend their hourly wake budget in the
// first minute or two, and each wake is a full login on both sides; in a
// kill run, a minute with a kill holds the restart and the logins after
// it. The rows say which.

// span is the figures of whole seconds [FromS, ToS) of the series.
type span struct {
	FromS     float64 `json:"from_s"` // since the run's start
	ToS       float64 `json:"to_s"`
	Accepted  float64 `json:"accepted_per_s"`
	Delivered float64 `json:"delivered_per_s"`
	Wakes     float64 `json:"wakes_per_s"`
	P50       float64 `json:"p50_ms"` // online devices' end-to-end latency
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	// SocketP99 is P99 up to the arrival at the device's socket (null:
	// not known).
	SocketP99 nf      `json:"socket_p99_ms"`
	PostP50   float64 `json:"post_p50_ms"` // REST alone: first attempt to 202
	PostP99   float64 `json:"post_p99_ms"`
	// The same route in the gateway's handler, from its histogram (null
	// when not read: a remote gateway without -metrics-url).
	HandlerP50 nf      `json:"handler_p50_ms"`
	HandlerP99 nf      `json:"handler_p99_ms"`
	GatewayCPU float64 `json:"gateway_cpu_pct"`
	HarnessCPU float64 `json:"harness_cpu_pct"`
	// Threads ready but waiting for a CPU, on average (runqueue.go);
	// null when not measured.
	GatewayWaiting nf  `json:"gateway_threads_waiting_for_cpu"`
	HarnessWaiting nf  `json:"harness_threads_waiting_for_cpu"`
	Kills          int `json:"kills"` // kill -9s of the gateway in the span

	seconds   int    // of the series in the span
	latencies uint64 // online deliveries measured
}

// spanLocked sums the series over whole seconds [from, to); mu is held.
func (c *collector) spanLocked(from, to int) span {
	st := span{FromS: float64(from), ToS: float64(to)}
	var lat, sock, post hist
	var acc, del, wakes, cpu, hcpu, gw, hw float64
	sampled, gwN, hwN := 0, 0, 0
	for j := max(from, 0); j < min(to, len(c.series)); j++ {
		row := &c.series[j]
		st.seconds++
		acc += float64(row.accepted)
		del += float64(row.delivered)
		wakes += float64(row.wakes)
		if row.lat != nil {
			lat.merge(row.lat)
		}
		if row.sock != nil {
			sock.merge(row.sock)
		}
		if row.post != nil {
			post.merge(row.post)
		}
		if !row.sampled {
			continue
		}
		sampled++
		cpu += row.cpu
		hcpu += row.harnessCPU
		if row.gwWaiting >= 0 {
			gw += row.gwWaiting
			gwN++
		}
		if row.harnessWaiting >= 0 {
			hw += row.harnessWaiting
			hwN++
		}
	}
	if n := float64(st.seconds); n > 0 {
		st.Accepted, st.Delivered, st.Wakes = acc/n, del/n, wakes/n
	}
	if sampled > 0 {
		st.GatewayCPU, st.HarnessCPU = cpu/float64(sampled), hcpu/float64(sampled)
	}
	st.GatewayWaiting, st.HarnessWaiting = meanOrNaN(gw, gwN), meanOrNaN(hw, hwN)
	st.latencies = lat.n
	if lat.n > 0 {
		st.P50, st.P99, st.P999 = ms(lat.quantile(0.5)), ms(lat.quantile(0.99)), ms(lat.quantile(0.999))
	}
	st.SocketP99 = nf(math.NaN())
	if sock.n > 0 {
		st.SocketP99 = nf(ms(sock.quantile(0.99)))
	}
	if post.n > 0 {
		st.PostP50, st.PostP99 = ms(post.quantile(0.5)), ms(post.quantile(0.99))
	}
	st.HandlerP50, st.HandlerP99 = nf(math.NaN()), nf(math.NaN())
	if h0, h1 := c.sendAtLocked(from), c.sendAtLocked(to); h1 != nil {
		d := h1.clone()
		if h0 != nil {
			d = h1.minus(*h0)
		}
		if d.count > 0 {
			st.HandlerP50, st.HandlerP99 = nf(d.quantile(0.5)*1e3), nf(d.quantile(0.99)*1e3)
		}
	}
	t0 := c.t0.UnixNano()
	for _, k := range c.kills {
		if s := int((k.At - t0) / int64(time.Second)); k.Name == killMark && s >= from && s < to {
			st.Kills++
		}
	}
	return st
}

// sendAtLocked returns the gateway's send-route histogram as last read
// before second i (the sample of an earlier second), or nil; mu is held.
func (c *collector) sendAtLocked(i int) *promHist {
	for j := min(i, len(c.series)) - 1; j >= 0; j-- {
		if row := &c.series[j]; row.sampled && len(row.send.le) > 0 {
			return &row.send
		}
	}
	return nil
}

func meanOrNaN(sum float64, n int) nf {
	if n == 0 {
		return nf(math.NaN())
	}
	return nf(sum / float64(n))
}

// windowsLocked cuts the traffic [start, end) into windows of w from its
// start; a last window shorter than a quarter of w joins the one before.
// None when w is 0 or the traffic is not longer than one window. mu is
// held.
func (c *collector) windowsLocked(start, end time.Time, w time.Duration) []span {
	if w <= 0 || start.IsZero() || end.Sub(start) <= w {
		return nil
	}
	sec := func(t time.Time) int { return int(t.Sub(c.t0) / time.Second) }
	from, last := sec(start), sec(end)
	n := int(w / time.Second)
	var out []span
	for from < last {
		to := min(from+n, last)
		if last-to < n/4 {
			to = last
		}
		out = append(out, c.spanLocked(from, to))
		from = to
	}
	return out
}

// windowsText is the report's table of windows.
func windowsText(ws []span) []string {
	if len(ws) == 0 {
		return nil
	}
	lines := []string{"windows   seconds    accepted/s  wakes/s  e2e p50 / p99 / p99.9 ms (p99 at the socket)  REST p50 / p99 ms (in the handler)  CPU gateway / harness  threads waiting"}
	for _, s := range ws {
		kills := ""
		if s.Kills > 0 {
			kills = fmt.Sprintf("  (%d kill -9)", s.Kills)
		}
		lines = append(lines, fmt.Sprintf("          %4.0f-%-4.0f  %10.0f  %7.0f  %6.1f / %6.1f / %6.1f%-9s  %7.1f / %7.1f %-13s  %8.0f %% / %4.0f %%  %s%s",
			s.FromS, s.ToS, s.Accepted, s.Wakes, s.P50, s.P99, s.P999, socketCell(s.SocketP99), s.PostP50, s.PostP99, handlerPair(s.HandlerP50, s.HandlerP99),
			s.GatewayCPU, s.HarnessCPU, waitingPair(s.GatewayWaiting, s.HarnessWaiting), kills))
	}
	return lines
}

// waitingPair is "1.8 / 1.2", with "-" for one not measured.
func waitingPair(gw, h nf) string {
	f := func(v nf) string {
		if math.IsNaN(float64(v)) {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(v))
	}
	return f(gw) + " / " + f(h)
}

// socketCell is " (41.2)", or "" when no receive time was known.
func socketCell(p99 nf) string {
	if math.IsNaN(float64(p99)) {
		return ""
	}
	return fmt.Sprintf(" (%.1f)", float64(p99))
}

// handlerPair is "(7.3 / 44.4)", or "" when the handler was not read.
func handlerPair(p50, p99 nf) string {
	if math.IsNaN(float64(p99)) {
		return ""
	}
	return fmt.Sprintf("(%.1f / %.1f)", float64(p50), float64(p99))
}
