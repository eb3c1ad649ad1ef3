package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/wake/waketest"
)

// wakeBench starts a gateway whose app pushes to a loopback APNs fake, with
// n offline devices (10 per user) registered with APNs tokens.
func wakeBench(b *testing.B, n int) (*gatewaytest.Gateway, *api.Client, *waketest.APNs) {
	apns := waketest.NewAPNs(b)
	apns.Record(true)
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) {
		c.Logger = zap.NewNop()
		c.ProviderHTTPClient = func(p string) *http.Client {
			if p == "apns" {
				return apns.Client()
			}
			return nil
		}
	}))
	app := g.App(b, "bench")
	ctx := context.Background()
	hour := int64(1800)
	if _, err := app.PatchApp(ctx, "bench", api.PatchAppRequest{
		APNS:     &api.APNSConfig{KeyP8: apns.KeyP8, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: "com.bench", Endpoint: apns.URL},
		Defaults: &api.Defaults{WakeInterval: &hour},
	}); err != nil {
		b.Fatal(err)
	}
	users := (n + 9) / 10
	benchUsers(b, app, users)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n {
					return
				}
				if _, err := app.PutDevice(ctx, "bench", fmt.Sprintf("u%05d", k%users), fmt.Sprintf("d%06d", k),
					api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: waketest.APNsToken(k)}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return g, app, apns
}

// BenchmarkWakeFanout posts one message to TETHER_BENCH_DEVICES (default
// 10,000) offline devices in POSTs of 1,000 recipients and reports the wake
// pushes the loopback APNs fake accepted per second, and the process's CPU
// time per wake (gateway, apns2 client and the fake's TLS and HTTP/2
// server together), which depends less on what else the machine runs.
func BenchmarkWakeFanout(b *testing.B) {
	n := benchEnvInt("TETHER_BENCH_DEVICES", 10000)
	g, app, apns := wakeBench(b, n)
	_ = g
	users := (n + 9) / 10
	ctx := context.Background()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for first := 0; first < n; first += 1000 {
		var to []string
		for k := first; k < min(first+1000, n); k++ {
			to = append(to, fmt.Sprintf("u%05d/d%06d", k%users, k))
		}
		if _, err := app.Send(ctx, "bench", api.SendRequest{To: to, Body: "wake up"}, ""); err != nil {
			b.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Minute); apns.Accepted() < int64(n); {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d wakes accepted", apns.Accepted(), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the fake
	}
	el, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(n)/el.Seconds(), "wakes/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/wake")
	}
}

// BenchmarkWakeLatency posts to offline devices at 1,000 devices per
// second for 5 s (one recipient per POST) and reports the time from the
// POST's 202 to the APNs fake accepting the device's wake.
func BenchmarkWakeLatency(b *testing.B) {
	const rate, secs = 1000, 5
	n := rate * secs
	_, app, apns := wakeBench(b, n)
	users := (n + 9) / 10
	ctx := context.Background()
	acceptedAt := make([]time.Time, n)
	c := benchClient(32)
	url := app.BaseURL + "/v1/apps/bench/messages"
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for k := range n {
		for time.Duration(k)*time.Second/rate > time.Since(start) {
			time.Sleep(500 * time.Microsecond) // pacing the open-loop generator
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body := fmt.Appendf(nil, `{"to":["u%05d/d%06d"],"body":"wake"}`, k%users, k)
			if err := post(c, url, app.Token, body); err != nil {
				b.Error(err)
			}
			acceptedAt[k] = time.Now()
		})
	}
	wg.Wait()
	for deadline := time.Now().Add(time.Minute); apns.Accepted() < int64(n); {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d wakes accepted", apns.Accepted(), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the fake
	}
	b.StopTimer()
	pushed := map[string]time.Time{}
	for _, r := range apns.Requests() {
		if r.Status == 200 {
			if _, ok := pushed[r.Token]; !ok {
				pushed[r.Token] = r.At
			}
		}
	}
	var lats []time.Duration
	for k := range n {
		if at, ok := pushed[waketest.APNsToken(k)]; ok {
			lats = append(lats, max(at.Sub(acceptedAt[k]), 0))
		}
	}
	_ = ctx
	b.ReportMetric(float64(percentile(lats, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lats, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lats)), "wakes")
}
