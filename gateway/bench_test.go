package gateway_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"tether/gateway"
	"tether/internal/gatewaytest"
)

// benchGateway starts a quiet on-disk gateway and an app, and returns the
// messages URL, the app key, and a function to call after the run that
// reports how many synced commits shared each WAL fsync (group commit).
func benchGateway(b *testing.B) (string, string, func()) {
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) { c.Logger = zap.NewNop() }))
	app := g.App(b, "bench")
	before := g.StoreStats()
	return g.URL + "/v1/apps/bench/messages", app.Token, func() {
		after := g.StoreStats()
		if n := after.Fsyncs - before.Fsyncs; n > 0 {
			b.ReportMetric(float64(after.SyncCommits-before.SyncCommits)/float64(n), "commits/fsync")
		}
	}
}

func benchClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
}

func post(c *http.Client, url, key string, body []byte) error {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkRESTEnqueue: durable enqueue through REST, one recipient per
// POST, 64 concurrent keep-alive clients on loopback, each 202 written
// after the fsync that covers it.
func BenchmarkRESTEnqueue(b *testing.B) {
	url, key, report := benchGateway(b)
	const clients = 64
	c := benchClient(clients)
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"to":["user%04d"],"body":"hello %d","data":{"seq":%d}}`, i, i, i)
	}
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := post(c, url, key, bodies[i%int64(len(bodies))]); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	report()
	all := slices.Concat(lat...)
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkRESTLatencyAt5000: POSTs at a fixed 5,000 messages/s (open
// loop, 64 connections) to 1,000 users; reports the POST latency
// percentiles. (Messages to one user are serialised on that user's lock
// through the fsync, so a single user takes about one message per fsync.)
func BenchmarkRESTLatencyAt5000(b *testing.B) {
	url, key, report := benchGateway(b)
	const rate = 5000
	c := benchClient(64)
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"to":["user%04d"],"body":"hello %d","data":{"k":1}}`, i, i)
	}
	n := max(b.N, rate) // at least one second of load
	lats := make([]time.Duration, n)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		// Pace in steps: time.Sleep is too coarse for 200 µs gaps, so
		// send everything due, then sleep a little.
		for time.Duration(i)*time.Second/rate > time.Since(start) {
			time.Sleep(500 * time.Microsecond) // pacing the open-loop generator
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			if err := post(c, url, key, bodies[i%len(bodies)]); err != nil {
				failed.Add(1)
			}
			lats[i] = time.Since(t0)
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	report()
	if failed.Load() > 0 {
		b.Fatalf("%d POSTs failed", failed.Load())
	}
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(percentile(lats, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lats, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(percentile(lats, 0.999).Microseconds())/1000, "p999-ms")
}

// BenchmarkRESTFanout1000: one POST to 1,000 recipients, 4 concurrent
// clients; reports recipient-messages made durable per second.
func BenchmarkRESTFanout1000(b *testing.B) {
	url, key, report := benchGateway(b)
	c := benchClient(4)
	var buf bytes.Buffer
	buf.WriteString(`{"to":[`)
	for i := range 1000 {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `"user%04d"`, i)
	}
	buf.WriteString(`],"body":"hello everyone","data":{"campaign":1}}`)
	body := buf.Bytes()
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := post(c, url, key, body); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	report()
	b.ReportMetric(float64(b.N)*1000/el.Seconds(), "recipient-msgs/s")
}
