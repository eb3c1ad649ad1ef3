package wake_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"tether/wake"
	"tether/wake/waketest"
)

// gated is a Provider whose sends wait for release (or their context),
// for testing the Pool's mechanics.
type gated struct {
	started chan string
	release chan struct{}
}

func newGated() *gated {
	return &gated{started: make(chan string, 100), release: make(chan struct{})}
}

func (g *gated) Name() string { return "gated" }

func (g *gated) Send(ctx context.Context, t wake.Target, _ wake.Payload) (wake.Result, error) {
	g.started <- t.Token
	select {
	case <-g.release:
		return wake.Result{Outcome: wake.Delivered, Status: 200}, nil
	case <-ctx.Done():
		return wake.Result{Outcome: wake.RetryAfter, Reason: "timeout"}, ctx.Err()
	}
}

// metric returns the value of a counter, or the sample count of a
// histogram, among the collectors, matching the given labels.
func metric(t *testing.T, cs []prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !matches(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

type outcomes struct {
	mu  sync.Mutex
	res []wake.Result
	err []error
	wg  sync.WaitGroup
}

func (o *outcomes) done() func(wake.Result, error) {
	o.wg.Add(1)
	return func(r wake.Result, err error) {
		o.mu.Lock()
		o.res = append(o.res, r)
		o.err = append(o.err, err)
		o.mu.Unlock()
		o.wg.Done()
	}
}

// job returns a job for provider p to token tok, whose outcome o collects.
func (o *outcomes) job(p wake.Provider, tok string) wake.Job {
	return wake.Job{Provider: p, Target: wake.Target{Token: tok}, Done: o.done()}
}

func TestPoolBounded(t *testing.T) {
	t.Parallel()
	g := newGated()
	p := wake.NewPool(wake.PoolConfig{Workers: 1, QueueSize: 2})
	var o outcomes
	require.True(t, p.Submit(o.job(g, "a")))
	require.Equal(t, "a", <-g.started) // the one worker is busy
	require.True(t, p.Submit(o.job(g, "b")))
	require.True(t, p.Submit(o.job(g, "c")))
	require.Equal(t, 2, p.Len())
	require.Equal(t, 2.0, metric(t, p.Collectors(), "tether_wake_queue_length"))
	require.False(t, p.Submit(wake.Job{Provider: g, Target: wake.Target{Token: "d"}, Done: func(wake.Result, error) {
		t.Error("Done of a refused job")
	}}), "queue full: refused at once")
	close(g.release)
	o.wg.Wait()
	require.Len(t, o.res, 3)
	for i, r := range o.res {
		require.Equal(t, wake.Delivered, r.Outcome)
		require.NoError(t, o.err[i])
	}
	require.NoError(t, p.Close())
	require.False(t, p.Submit(wake.Job{Provider: g}), "closed")
	require.NoError(t, p.Close(), "Close twice")

	cs := p.Collectors()
	require.Equal(t, 3.0, metric(t, cs, "tether_wakes_total", "provider", "gated", "result", "delivered"))
	require.Equal(t, 2.0, metric(t, cs, "tether_wakes_total", "provider", "gated", "result", "dropped"))
	require.Equal(t, 3.0, metric(t, cs, "tether_wake_latency_seconds", "provider", "gated"))
}

// TestPoolSubmitWait: with the queue full, SubmitWait waits for a slot
// rather than refusing; it gives up when its context ends or Close starts.
func TestPoolSubmitWait(t *testing.T) {
	t.Parallel()
	g := newGated()
	p := wake.NewPool(wake.PoolConfig{Workers: 1, QueueSize: 1})
	var o outcomes
	refused := wake.Job{Provider: g, Done: func(wake.Result, error) { t.Error("Done of a refused job") }}
	require.True(t, p.Submit(o.job(g, "a")))
	require.Equal(t, "a", <-g.started) // the one worker is busy
	require.True(t, p.Submit(o.job(g, "b")))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.False(t, p.SubmitWait(ctx, refused), "still full when the context ends")

	queued := make(chan bool)
	go func() { queued <- p.SubmitWait(context.Background(), o.job(g, "c")) }()
	select {
	case <-queued:
		t.Fatal("SubmitWait returned while the queue was full")
	case <-time.After(20 * time.Millisecond):
	}
	g.release <- struct{}{} // a is sent: b moves to the worker, c into the queue
	require.True(t, <-queued)
	require.Equal(t, "b", <-g.started)

	waiting := make(chan bool)
	go func() { waiting <- p.SubmitWait(context.Background(), refused) }()
	time.Sleep(10 * time.Millisecond) // let it block on the full queue
	closed := make(chan error)
	go func() { closed <- p.Close() }()
	require.False(t, <-waiting, "Close ends the wait")
	close(g.release)
	require.NoError(t, <-closed)
	o.wg.Wait()
	require.Len(t, o.res, 3)
	cs := p.Collectors()
	require.Equal(t, 3.0, metric(t, cs, "tether_wakes_total", "provider", "gated", "result", "delivered"))
	require.Equal(t, 2.0, metric(t, cs, "tether_wakes_total", "provider", "gated", "result", "dropped"))
}

func TestPoolCloseDrainTimeout(t *testing.T) {
	t.Parallel()
	g := newGated() // never released: sends end only when cancelled
	p := wake.NewPool(wake.PoolConfig{Workers: 2, QueueSize: 10, DrainTimeout: 50 * time.Millisecond})
	var o outcomes
	for i := range 5 {
		require.True(t, p.Submit(o.job(g, string(rune('a'+i)))))
	}
	<-g.started
	<-g.started
	err := p.Close()
	require.ErrorIs(t, err, wake.ErrDrainTimeout)
	require.Contains(t, err.Error(), "3 wakes not sent")
	o.wg.Wait() // every accepted job got its Done
	var closed, cancelled int
	for i, e := range o.err {
		switch {
		case e == wake.ErrClosed:
			closed++
			require.Equal(t, wake.RetryAfter, o.res[i].Outcome)
		case e == context.Canceled:
			cancelled++
		}
	}
	require.Equal(t, 3, closed)
	require.Equal(t, 2, cancelled)
	require.Equal(t, 5.0, metric(t, p.Collectors(), "tether_wakes_total", "result", "retry"))
}

// TestPoolAPNs sends through the real adapter and fake, and checks the
// counts by result and that logs never carry a token.
func TestPoolAPNs(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, nil)
	core, logs := observer.New(zapcore.DebugLevel)
	p := wake.NewPool(wake.PoolConfig{Workers: 8, Logger: zap.New(core)})
	const n = 50
	fake.Script(waketest.APNsToken(3), waketest.APNsUnregistered(time.Now()))
	fake.Script(waketest.APNsToken(4), waketest.APNsServiceUnavailable())
	var o outcomes
	exp := time.Now().Add(time.Hour)
	for i := range n {
		require.True(t, p.Submit(wake.Job{Provider: a, Target: wake.Target{Token: waketest.APNsToken(i)},
			Payload: wake.Payload{Pending: 1, Priority: wake.PriorityHigh, Expiration: exp}, Done: o.done()}))
	}
	o.wg.Wait()
	require.NoError(t, p.Close())
	require.Equal(t, int64(n), fake.Count())

	cs := p.Collectors()
	require.Equal(t, float64(n-2), metric(t, cs, "tether_wakes_total", "provider", "apns", "result", "delivered"))
	require.Equal(t, 1.0, metric(t, cs, "tether_wakes_total", "provider", "apns", "result", "token_invalid"))
	require.Equal(t, 1.0, metric(t, cs, "tether_wakes_total", "provider", "apns", "result", "retry"))
	require.Equal(t, float64(n), metric(t, cs, "tether_wake_latency_seconds", "provider", "apns"))

	require.Equal(t, n, logs.Len())
	require.Equal(t, 1, logs.FilterLevelExact(zapcore.WarnLevel).Len(), "the 503")
	for _, e := range logs.All() {
		for _, f := range e.Context {
			for i := range n {
				require.False(t, strings.Contains(f.String, waketest.APNsToken(i)), "a token in the logs")
			}
		}
	}
	require.Equal(t, 1, logs.FilterField(zap.String("token", wake.TokenRef(waketest.APNsToken(3)))).Len())
}

// sleepy is a Provider whose sends to "slow" take 1.1 s.
type sleepy struct{}

func (sleepy) Name() string { return "sleepy" }

func (sleepy) Send(ctx context.Context, t wake.Target, _ wake.Payload) (wake.Result, error) {
	if t.Token == "slow" {
		time.Sleep(1100 * time.Millisecond)
	}
	return wake.Result{Outcome: wake.Delivered, Status: 200}, nil
}

// TestPoolSlowSendLogged: a provider call over a second is logged at info
// level with how long the call itself took (a wake that slow may reach a
// device that connected meanwhile); a fast one stays at debug.
func TestPoolSlowSendLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	p := wake.NewPool(wake.PoolConfig{Workers: 2, Logger: zap.New(core)})
	var o outcomes
	for _, tok := range []string{"slow", "fast"} {
		require.True(t, p.Submit(o.job(sleepy{}, tok)))
	}
	o.wg.Wait()
	require.NoError(t, p.Close())
	require.Equal(t, 2, logs.Len())
	slow := logs.FilterField(zap.String("token", wake.TokenRef("slow"))).All()
	require.Len(t, slow, 1)
	require.Equal(t, zapcore.InfoLevel, slow[0].Level)
	send, ok := slow[0].ContextMap()["send"].(time.Duration)
	require.True(t, ok, "send field: %v", slow[0].ContextMap())
	require.GreaterOrEqual(t, send, time.Second)
	fast := logs.FilterField(zap.String("token", wake.TokenRef("fast"))).All()
	require.Len(t, fast, 1)
	require.Equal(t, zapcore.DebugLevel, fast[0].Level)
}
