package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func testReport() *report {
	ch := &checks{Pass: false, Failures: []string{"1 of 10 deliveries lost"}, Expected: 10, Delivered: 9, Lost: 1,
		FinalStates: map[string]uint64{"expired": 2}, Examples: map[string][]string{"lost": {"message <x> & co"}},
		Webhook: &webhookChecks{Posts: 4, Events: 380, Confirmed: 12, Seen: 11, Lost: 1}}
	nan := nf(math.NaN())
	return &report{RunID: "r1", App: "soak-r1", Started: time.Now(), Command: "go run ./loadtest -d 1s", Checks: ch,
		Failures: ch.Failures, Warnings: []string{"a warning"}, Config: map[string]string{"d": "1s"},
		Sessions: sessionReport{ByTransport: []int{1, 2, 3}},
		Series: seriesReport{T: []int{0, 1, 2}, Accepted: []int{0, 5, 7}, PostsFailed: []int{0, 0, 1}, Delivered: []int{0, 4, 8},
			Redelivered: []int{0, 0, 0}, P50: []nf{nan, 1.5, 2}, P99: []nf{nan, 9, 12}, P999: []nf{nan, 30, 40},
			Online: []nf{0, 10, 10}, GwSessions: []nf{nan, 10, 10}, RSSMiB: []nf{50, 60, 61}, CPU: []nf{0, 80, 90},
			HarnessCPU: []nf{0, 20, 20}, Wakes: []int{0, 1, 0}, WakesOffline: []int{0, 1, 0}, Inbound: []nf{nan, 3, 3}},
		Marks: []markReport{{Name: "traffic", T: 0.5}, {Name: "kill -9", T: 1.2}, {Name: "restarted", T: 1.4}},
		Steps: []stepReport{{Offered: 1000, span: span{Accepted: 1000, P99: 12}, KeptUp: true, MeetsSLO: true},
			{Offered: 4000, span: span{Accepted: 2500, P99: 300}}},
		Capacity: 1000, StepSLO: 50 * time.Millisecond,
		Windows: []span{{FromS: 0, ToS: 60, Accepted: 4500, Wakes: 250, P99: 91.5, SocketP99: 38.5, GatewayWaiting: 1.8, HarnessWaiting: nan},
			{FromS: 60, ToS: 120, Accepted: 4900, Wakes: 3, P99: 47.25, SocketP99: nan, GatewayWaiting: 1.5, HarnessWaiting: 1.1, Kills: 1}},
		Latency: latencyReport{P99: 91.5, Socket: &quantiles{Count: 9, P50: 3.25, P99: 38.5, P999: 40}}}
}

// TestHTMLSelfContained checks the page has its plots inline and nothing
// to fetch.
func TestHTMLSelfContained(t *testing.T) {
	page := testReport().html()
	if n := strings.Count(page, "<svg"); n != 6 {
		t.Errorf("%d plots, want 6", n)
	}
	for _, bad := range []string{"<script", "http://", "https://", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	for _, want := range []string{"FAIL", "1 of 10 deliveries lost", "a warning", "message &lt;x&gt; &amp; co", "kill -9",
		"Rate steps", "fell behind", "p99 &lt;= 50ms: <b>1000 msgs/s</b>", "12 / 11 / 1 / 0 (380 events in 4 posts)",
		"Per window of the traffic", "<td>0–60</td><td>4500</td><td>250</td><td>0.0 / 91.5 / 0.0 (38.5)</td>", "<td>0.0 / 47.2 / 0.0</td>",
		"<td>1.8 / -</td>", "1 kill -9", "arrival at the device&#39;s socket (kernel receive time) p50 / p99 / p99.9</th><td class=\"n\">3.25 / 38.50 / 40.00 ms"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestSVGChartNoData(t *testing.T) {
	svg := svgChart("t", "", []float64{0, 1}, []chartLine{{"a", "#000", []float64{math.NaN(), math.NaN()}}}, nil, true)
	if !strings.Contains(svg, "no data") {
		t.Errorf("an all-NaN chart should say no data: %s", svg)
	}
}

func TestReportJSONNulls(t *testing.T) {
	b, err := json.Marshal(testReport())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"p50_ms":[null,1.5,2]`) {
		t.Errorf("NaN should encode as null: %s", b)
	}
	// A step's figures are its span's, at the top level of the step.
	if !strings.Contains(string(b), `{"offered_per_s":1000,"from_s":0,"to_s":0,"accepted_per_s":1000,`) {
		t.Errorf("a step's figures are not where they were: %s", b)
	}
	if !strings.Contains(string(b), `"socket":{"count":9,"p50":3.25,"p99":38.5,`) || !strings.Contains(string(b), `"socket_p99_ms":null`) {
		t.Errorf("the latency at the socket is not where it should be: %s", b)
	}
	if s := testReport().summary(); !strings.Contains(s, "FAIL") || !strings.Contains(s, "lost 1") ||
		!strings.Contains(s, "the device's socket (the kernel's receive time) p50 3.25ms p99 38.50ms") || !strings.Contains(s, "91.5 /    0.0 (38.5)") {
		t.Errorf("summary: %s", s)
	}
}

func TestNiceStep(t *testing.T) {
	for raw, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 45: 50, 1200: 2000} {
		if got := niceStep(raw); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
}
