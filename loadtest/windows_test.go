package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// TestWindowsFromSeries: 130 s of traffic in windows of a minute: the
// first minute's wake storm and slow deliveries stay in its row, the
// second minute's kill in its own, and the last 10 s (under a quarter
// window) join the second.
func TestWindowsFromSeries(t *testing.T) {
	t0 := time.Unix(2_000_000, 0)
	c := &collector{t0: t0}
	start, end := t0.Add(20*time.Second), t0.Add(150*time.Second)
	c.series = make([]secStat, 155)
	// The gateway's handler histogram, cumulative as read each second:
	// before the traffic 1,000 slow requests (+Inf), then 100 a second
	// under 10 ms in the first window and under 5 ms after.
	le := []float64{0.005, 0.01, 0.05, math.Inf(1)}
	send := promHist{le: le, cum: make([]float64, 4)}
	observe := func(bucket int, n float64) {
		for i := bucket; i < len(le); i++ {
			send.cum[i] += n
		}
		send.count += n
	}
	observe(3, 1000)
	c.series[19].sampled, c.series[19].send, c.series[19].gwWaiting, c.series[19].harnessWaiting = true, send.clone(), -1, -1
	for s := 20; s < 150; s++ {
		row := &c.series[s]
		row.accepted, row.delivered = 5000, 8000
		lat := 40 * time.Millisecond
		if s < 80 {
			row.wakes, lat = 250, 90*time.Millisecond
		}
		row.lat, row.post = new(hist), new(hist)
		for range 200 {
			row.lat.add(lat)
			row.post.add(lat / 2)
		}
		if s >= 80 { // receive times known in the second window only
			row.sock = new(hist)
			for range 200 {
				row.sock.add(lat * 3 / 4)
			}
		}
		row.sampled, row.cpu, row.harnessCPU = true, 110, 60
		row.gwWaiting, row.harnessWaiting = 1.5, -1 // the harness's not measured
		if s < 80 {
			observe(1, 100)
		} else {
			observe(0, 100)
		}
		row.send = send.clone()
	}
	c.kills = []mark{{Name: killMark, At: t0.Add(100 * time.Second).UnixNano()}, {Name: "restarted", At: t0.Add(108 * time.Second).UnixNano()}}

	ws := c.windowsLocked(start, end, time.Minute)
	if len(ws) != 2 {
		t.Fatalf("%d windows, want 2: %+v", len(ws), ws)
	}
	first, second := ws[0], ws[1]
	if first.FromS != 20 || first.ToS != 80 || second.FromS != 80 || second.ToS != 150 {
		t.Errorf("windows %v-%v and %v-%v, want 20-80 and 80-150", first.FromS, first.ToS, second.FromS, second.ToS)
	}
	if first.Wakes != 250 || first.P99 < 85 || first.P99 > 95 || first.Kills != 0 {
		t.Errorf("first window: %+v", first)
	}
	if second.Wakes != 0 || second.P99 < 38 || second.P99 > 42 || second.PostP99 > 21 || second.Kills != 1 {
		t.Errorf("second window: %+v", second)
	}
	if first.Accepted != 5000 || first.Delivered != 8000 || first.GatewayCPU != 110 || first.GatewayWaiting != 1.5 {
		t.Errorf("first window's rates: %+v", first)
	}
	// Each window's handler figures are its own requests': not the slow
	// ones before the traffic, not the first window's in the second.
	if p99 := float64(first.HandlerP99); p99 <= 5 || p99 > 10 {
		t.Errorf("first window's handler p99 %.2f ms, want in (5, 10]", p99)
	}
	if p99 := float64(second.HandlerP99); p99 <= 0 || p99 > 5 {
		t.Errorf("second window's handler p99 %.2f ms, want in (0, 5]", p99)
	}
	b, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	if p99 := float64(second.SocketP99); p99 < 28 || p99 > 32 || !math.IsNaN(float64(first.SocketP99)) {
		t.Errorf("p99 at the socket: %v and %v, want unknown and 30 ms", first.SocketP99, second.SocketP99)
	}
	if !strings.Contains(string(b), `"harness_threads_waiting_for_cpu":null`) || !strings.Contains(string(b), `"socket_p99_ms":null`) {
		t.Errorf("an unmeasured wait should be null: %s", b)
	}
	text := strings.Join(windowsText(ws), "\n")
	for _, want := range []string{"20-80", "1.5 / -", "(1 kill -9)", "(7.5 / 10.0)", "40.0 (30.0)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the table lacks %q:\n%s", want, text)
		}
	}

	// No table for traffic of one window or less, or with -window 0.
	if ws := c.windowsLocked(start, start.Add(time.Minute), time.Minute); ws != nil {
		t.Errorf("one minute of traffic: %d windows", len(ws))
	}
	if ws := c.windowsLocked(start, end, 0); ws != nil {
		t.Errorf("-window 0: %d windows", len(ws))
	}
}
