package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// html renders the report as one self-contained page: inline CSS and SVG,
// no script, nothing fetched from the network.
func (rep *report) html() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	e := html.EscapeString
	verdict, color := "PASS", "#1a7f37"
	if !rep.Pass {
		verdict, color = "FAIL", "#cf222e"
	}
	w(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tether soak %s: %s</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#1f2328;padding:0 12px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.v{display:inline-block;padding:2px 10px;border-radius:6px;color:#fff;background:%s;font-weight:600}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums} pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px}
.fail{color:#cf222e;font-weight:600} .muted{color:#656d76;font-size:12px} svg{display:block;margin:4px 0 18px}
</style></head><body>
`, e(rep.RunID), verdict, color)
	w(`<h1>Tether soak <span class="v">%s</span></h1>`+"\n", verdict)
	w(`<div class="muted">run %s · app %s · started %s · %.0f s · <code>%s</code></div>`+"\n",
		e(rep.RunID), e(rep.App), e(rep.Started.Format("2006-01-02 15:04:05 MST")), rep.DurationS, e(rep.Command))
	if len(rep.Failures) > 0 {
		w("<h2>Failures</h2><ul>\n")
		for _, f := range rep.Failures {
			w(`<li class="fail">%s</li>`+"\n", e(f))
		}
		w("</ul>\n")
	}
	if len(rep.Warnings) > 0 {
		w("<h2>Warnings</h2><ul>\n")
		for _, f := range rep.Warnings {
			w("<li>%s</li>\n", e(f))
		}
		w("</ul>\n")
	}

	ch := rep.Checks
	w("<h2>Verdict</h2><table>\n")
	row := func(k, v string, bad bool) {
		cls := "n"
		if bad {
			cls = "n fail"
		}
		w(`<tr><th>%s</th><td class="%s">%s</td></tr>`+"\n", e(k), cls, e(v))
	}
	row("(message, device) pairs expected", fmt.Sprint(ch.Expected), false)
	row("delivered", fmt.Sprint(ch.Delivered), false)
	row("not delivered, final state", finalString(ch.FinalStates), false)
	row("lost", fmt.Sprint(ch.Lost), ch.Lost > 0)
	row("redeliveries dropped by the SDK / across sessions", fmt.Sprintf("%d / %d", ch.SDKDuplicates, ch.CrossSession), false)
	row("misrouted / payload mismatch / visible duplicates", fmt.Sprintf("%d / %d / %d", ch.Misrouted, ch.Mismatch, ch.Phantom), ch.Misrouted+ch.Mismatch+ch.Phantom > 0)
	row("wakes to online devices", fmt.Sprint(ch.Wakes.ToOnline), ch.Wakes.ToOnline > 0)
	row("wakes to offline devices (per device: mean / max)", fmt.Sprintf("%d (%.1f / %d; %d of %d woken)", ch.Wakes.ToOffline,
		ch.Wakes.PerDeviceMean, ch.Wakes.PerDeviceMax, ch.Wakes.Woken, ch.Wakes.OfflineDevices), false)
	if wc := ch.Webhook; wc != nil {
		row("inbound messages confirmed / reached the webhook / lost / twice", fmt.Sprintf("%d / %d / %d / %d (%d events in %d posts)",
			wc.Confirmed, wc.Seen, wc.Lost, wc.Twice, wc.Events, wc.Posts), wc.Lost+wc.Twice > 0)
	}
	l := rep.Latency
	row("online end-to-end latency p50 / p99 / p99.9 / max", fmt.Sprintf("%.2f / %.2f / %.2f / %.0f ms", l.P50, l.P99, l.P999, l.Max), false)
	if k := l.Socket; k != nil {
		row("the same, up to the arrival at the device's socket (kernel receive time) p50 / p99 / p99.9", fmt.Sprintf("%.2f / %.2f / %.2f ms", k.P50, k.P99, k.P999), false)
	}
	row("offline devices' end-to-end latency (wake, connect, pull) p50 / p99", fmt.Sprintf("%.0f / %.0f ms", l.OfflineP50, l.OfflineP99), false)
	row("REST alone (POST to its 202) p50 / p99 / p99.9 / max", fmt.Sprintf("%.2f / %.2f / %.2f / %.0f ms", l.POST.P50, l.POST.P99, l.POST.P999, l.POST.Max), false)
	if h := l.POSTGateway; h != nil {
		row("the same POSTs in the gateway's handler (headers read to 202 written) p50 / p99", fmt.Sprintf("%.2f / %.2f ms", h.P50, h.P99), false)
	}
	m := rep.Messages
	row("messages accepted (per second)", fmt.Sprintf("%d (%.0f/s)", m.Accepted, m.AcceptedPerS), false)
	row("POSTs / failed / retries", fmt.Sprintf("%d / %d / %d", m.Posts, m.PostsFailed, m.Retries), false)
	s := rep.Sessions
	row("sessions (online devices / offline devices / peak up)", fmt.Sprintf("%d / %d / %d", s.OnlineShare, s.OfflineShare, s.Peak), false)
	row("ramp", fmt.Sprintf("%.1f s, %.0f logins/s", s.RampS, s.LoginsPerS), false)
	g := rep.Gateway
	row("gateway RSS per session", fmt.Sprintf("%.1f KiB (%.0f → %.0f MiB over the ramp, peak %.0f)", g.RSSPerSessionKiB, g.RSSBaseMiB, g.RSSAfterRampMiB, g.RSSPeakMiB), false)
	row("gateway CPU during traffic", fmt.Sprintf("%.1f s (%.0f µs per delivered message)", g.CPUSecondsTraffic, g.CPUPerMessageUs), false)
	if g.AllocKBPerMessage > 0 {
		row("gateway allocation during traffic", fmt.Sprintf("%.1f KB per accepted message, %.2f GC cycles per 10k", g.AllocKBPerMessage, g.GCsPer10kMessages), false)
	}
	row("harness CPU during traffic (all its processes)", fmt.Sprintf("%.1f s (%.0f µs per delivered message)", rep.Harness.CPUSecondsTraffic, rep.Harness.CPUPerMessageUs), false)
	if st := g.Store; st != nil {
		row("synced commits p50 / p99 (what a POST waits for)", fmt.Sprintf("%.1f / %.1f ms (%.0f)", st.CommitP50Ms, st.CommitP99Ms, st.SyncedCommits), false)
		if st.Fsyncs > 0 {
			row("WAL fsyncs p50 / p99 (the disk)", fmt.Sprintf("%.1f / %.1f ms (%.0f, %.1f commits each, busy %.0f%% of the traffic time)",
				st.FsyncP50Ms, st.FsyncP99Ms, st.Fsyncs, st.CommitsPerFsync, st.FsyncBusy*100), false)
		}
		if l := st.LSM; l != nil {
			row("store LSM during traffic", strings.TrimPrefix(l.String(), "LSM during traffic: "), l.WriteStalls > 0)
		}
	}
	if q := runQueueSummary(g.runQueueWaits, rep.Harness.runQueueWaits, g.Local); q != "" {
		row("threads ready but waiting for a CPU during traffic (the kernel's run queue)", q, false)
	}
	row("kill -9", killSummary(g.Kills, g.DowntimesS), false)
	if len(g.RestartPhases) > 0 {
		row("restarts", restartSummary(g.RestartPhases, g.DowntimesS), false)
	}
	w("</table>\n")
	if len(rep.Steps) > 0 {
		w("<h2>Rate steps</h2>\n<table>\n<tr><th>offered/s</th><th>accepted/s</th><th>delivered/s</th><th>e2e p50 / p99 / p99.9 ms</th><th>REST p50 / p99 ms</th><th>gateway CPU</th><th>harness CPU</th><th></th></tr>\n")
		for _, st := range rep.Steps {
			note, bad := "", !st.MeetsSLO
			switch {
			case !st.KeptUp:
				note = "fell behind"
			case !st.MeetsSLO:
				note = "over the SLO"
			}
			cls := ""
			if bad {
				cls = ` class="fail"`
			}
			w("<tr%s><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.1f / %.1f / %.1f</td><td>%.1f / %.1f</td><td>%.0f %%</td><td>%.0f %%</td><td>%s</td></tr>\n",
				cls, st.Offered, st.Accepted, st.Delivered, st.P50, st.P99, st.P999, st.PostP50, st.PostP99, st.GatewayCPU, st.HarnessCPU, e(note))
		}
		w("</table>\n")
		if rep.Capacity > 0 {
			w("<p>Highest step that kept up%s: <b>%.0f msgs/s</b>.</p>\n", e(sloClause(rep.StepSLO)), rep.Capacity)
		}
	}

	if len(rep.Windows) > 0 {
		w("<h2>Per window of the traffic</h2>\n<table>\n<tr><th>seconds</th><th>accepted/s</th><th>wakes/s</th><th>e2e p50 / p99 / p99.9 ms (p99 at the device's socket)</th><th>REST p50 / p99 ms (in the gateway's handler)</th><th>CPU gateway / harness</th><th>threads waiting for a CPU, gateway / harness</th><th></th></tr>\n")
		for _, s := range rep.Windows {
			note := ""
			if s.Kills > 0 {
				note = fmt.Sprintf("%d kill -9", s.Kills)
			}
			w("<tr><td>%.0f–%.0f</td><td>%.0f</td><td>%.0f</td><td>%.1f / %.1f / %.1f%s</td><td>%.1f / %.1f %s</td><td>%.0f %% / %.0f %%</td><td>%s</td><td>%s</td></tr>\n",
				s.FromS, s.ToS, s.Accepted, s.Wakes, s.P50, s.P99, s.P999, e(socketCell(s.SocketP99)), s.PostP50, s.PostP99, e(handlerPair(s.HandlerP50, s.HandlerP99)),
				s.GatewayCPU, s.HarnessCPU, e(waitingPair(s.GatewayWaiting, s.HarnessWaiting)), e(note))
		}
		w("</table>\n")
	}

	sr := rep.Series
	x := make([]float64, len(sr.T))
	for i, t := range sr.T {
		x[i] = float64(t) + 0.5 // the middle of its second
	}
	ints := func(v []int) []float64 {
		out := make([]float64, len(v))
		for i, n := range v {
			out[i] = float64(n)
		}
		return out
	}
	nfs := func(v []nf) []float64 {
		out := make([]float64, len(v))
		for i, n := range v {
			out[i] = float64(n)
		}
		return out
	}
	w("<h2>Throughput</h2>\n")
	b.WriteString(svgChart("messages per second", "", x, []chartLine{
		{"accepted (202)", "#0969da", ints(sr.Accepted)}, {"delivered (first time)", "#1a7f37", ints(sr.Delivered)},
		{"redelivered (same id)", "#bf8700", ints(sr.Redelivered)}, {"failed POSTs", "#cf222e", ints(sr.PostsFailed)},
		{"inbound", "#8250df", nfs(sr.Inbound)}}, rep.Marks, false))
	w("<h2>End-to-end latency (POST to device, online devices)</h2>\n")
	b.WriteString(svgChart("ms, log scale", "ms", x, []chartLine{
		{"p50", "#1a7f37", nfs(sr.P50)}, {"p99", "#bf8700", nfs(sr.P99)}, {"p99.9", "#cf222e", nfs(sr.P999)}}, rep.Marks, true))
	w("<h2>Sessions</h2>\n")
	b.WriteString(svgChart("sessions up", "", x, []chartLine{
		{"up (harness)", "#0969da", nfs(sr.Online)}, {"bound (gateway /v1/stats)", "#8250df", nfs(sr.GwSessions)},
		{"gateway goroutines", "#bf8700", nfs(sr.Goroutines)}}, rep.Marks, false))
	w("<h2>Gateway memory and CPU</h2>\n")
	b.WriteString(svgChart("RSS, MiB", "MiB", x, []chartLine{{"gateway RSS", "#0969da", nfs(sr.RSSMiB)}}, rep.Marks, false))
	b.WriteString(svgChart("CPU, % of one core", "%", x, []chartLine{
		{"gateway", "#cf222e", nfs(sr.CPU)}, {"harness (all its processes)", "#656d76", nfs(sr.HarnessCPU)}}, rep.Marks, false))
	if len(sr.GwWaiting) > 0 {
		b.WriteString(svgChart("threads ready but waiting for a CPU (the kernel's run queue), average over each second", "", x, []chartLine{
			{"gateway", "#cf222e", nfs(sr.GwWaiting)}, {"harness (all its processes)", "#656d76", nfs(sr.HarnessWaiting)}}, rep.Marks, false))
	}
	w("<h2>Wakes</h2>\n")
	b.WriteString(svgChart("pushes per second at the fakes", "", x, []chartLine{
		{"all", "#0969da", ints(sr.Wakes)}, {"to offline devices", "#1a7f37", ints(sr.WakesOffline)}}, rep.Marks, false))
	w(`<p class="muted">Vertical lines: phases (grey), kill -9 (red), gateway back (green). Seconds since the ramp began.</p>`)

	w("<h2>Summary</h2><pre>%s</pre>\n", e(rep.summary()))
	w("<h2>Configuration</h2><table>\n")
	for _, k := range sortedKeys(rep.Config) {
		w("<tr><th>%s</th><td>%s</td></tr>\n", e(k), e(rep.Config[k]))
	}
	w("</table>\n</body></html>\n")
	return b.String()
}

type chartLine struct {
	name, color string
	y           []float64 // NaN: no value
}

// svgChart draws lines over x (seconds) with the marks as vertical lines.
func svgChart(title, unit string, x []float64, lines []chartLine, marks []markReport, logY bool) string {
	const W, H, ml, mr, mt, mb = 960.0, 260.0, 64.0, 16.0, 30.0, 34.0
	pw, ph := W-ml-mr, H-mt-mb
	xmax := 1.0
	if len(x) > 0 {
		xmax = max(x[len(x)-1], 1)
	}
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, l := range lines {
		for _, v := range l.y {
			if math.IsNaN(v) || (logY && v <= 0) {
				continue
			}
			ymin, ymax = min(ymin, v), max(ymax, v)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="system-ui,sans-serif" font-size="11">`, W, H, W, H)
	fmt.Fprintf(&b, `<text x="%.0f" y="16" font-size="12" font-weight="600">%s</text>`, ml, html.EscapeString(title))
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fff" stroke="#d0d7de"/>`, ml, mt, pw, ph)
	if math.IsInf(ymin, 1) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#656d76">no data</text></svg>`, ml+pw/2-20, mt+ph/2)
		return b.String()
	}
	var ty func(float64) float64
	var ticks []float64
	if logY {
		lo := math.Pow(10, math.Floor(math.Log10(ymin)))
		hi := math.Pow(10, math.Ceil(math.Log10(ymax)))
		if hi <= lo {
			hi = lo * 10
		}
		llo, lhi := math.Log10(lo), math.Log10(hi)
		ty = func(v float64) float64 { return mt + ph - (math.Log10(max(v, lo))-llo)/(lhi-llo)*ph }
		for t := lo; t <= hi*1.001; t *= 10 {
			ticks = append(ticks, t)
		}
	} else {
		ymin = 0
		step := niceStep(max(ymax, 1e-9) / 5)
		top := math.Ceil(max(ymax, step)/step) * step
		ty = func(v float64) float64 { return mt + ph - v/top*ph }
		for t := 0.0; t <= top*1.0001; t += step {
			ticks = append(ticks, t)
		}
	}
	tx := func(v float64) float64 { return ml + v/xmax*pw }
	for _, t := range ticks {
		y := ty(t)
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eaeef2"/>`, ml, ml+pw, y, y)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#656d76">%s</text>`, ml-6, y+4, fmtTick(t, unit))
	}
	xstep := niceStep(xmax / 10)
	for t := 0.0; t <= xmax; t += xstep {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#656d76">%gs</text>`, tx(t), mt+ph+16, t)
	}
	for _, m := range marks {
		c, dash := "#8c959f", "2,3"
		switch m.Name {
		case "kill -9":
			c, dash = "#cf222e", "4,2"
		case "restarted":
			c, dash = "#1a7f37", "4,2"
		}
		if m.T < 0 || m.T > xmax {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="%s" stroke-dasharray="%s"/>`, tx(m.T), tx(m.T), mt, mt+ph, c, dash)
		if m.Name != "restarted" {
			x, anchor := tx(m.T)+2, "start"
			if x > ml+pw-60 {
				x, anchor = tx(m.T)-2, "end" // keep labels near the right edge inside
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="%s" font-size="10" text-anchor="%s">%s</text>`, x, mt+10, c, anchor, html.EscapeString(m.Name))
		}
	}
	for _, l := range lines {
		var d strings.Builder
		pen := false
		for i, v := range l.y {
			if i >= len(x) || math.IsNaN(v) || (logY && v <= 0) {
				pen = false
				continue
			}
			cmd := "L"
			if !pen {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f,%.1f ", cmd, tx(x[i]), ty(v))
			pen = true
		}
		if d.Len() > 0 {
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, strings.TrimSpace(d.String()), l.color)
		}
	}
	lx := W - mr
	for i := len(lines) - 1; i >= 0; i-- {
		name := html.EscapeString(lines[i].name)
		wdt := float64(len(lines[i].name))*6 + 22
		lx -= wdt
		fmt.Fprintf(&b, `<rect x="%.0f" y="8" width="10" height="10" fill="%s"/><text x="%.0f" y="17">%s</text>`, lx, lines[i].color, lx+14, name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64, unit string) string {
	s := ""
	switch {
	case v >= 1e6:
		s = fmt.Sprintf("%gM", v/1e6)
	case v >= 1e4:
		s = fmt.Sprintf("%gk", v/1e3)
	default:
		s = fmt.Sprintf("%g", math.Round(v*1000)/1000)
	}
	if unit != "" && unit != "%" {
		return s
	}
	return s + unit
}
