// Package gatewaytest starts a real gateway on loopback for tests: real
// listeners on 127.0.0.1:0, a real Pebble store in a temp dir, and cleanup
// registered with the test.
package gatewaytest

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/clock"
)

// Gateway is a running test gateway.
type Gateway struct {
	*gateway.Gateway
	URL        string // base URL of the plain HTTP listener
	XMPPAddr   string // XMPP with STARTTLS
	XMPPSAddr  string // XMPP with direct TLS
	AdminToken string
	DataDir    string
	Clock      *clock.Manual // set when started WithManualClock

	stop func()
}

// Stop shuts the gateway down gracefully (as SIGTERM does) and waits. The
// test's cleanup calls it too; calling it first lets a test restart a
// gateway on the same data dir.
func (g *Gateway) Stop() { g.stop() }

// Option changes the test gateway's configuration.
type Option func(*gateway.Config)

// WithManualClock runs the gateway on a manual clock with the queue's timer
// loop off: the test advances the clock and calls Queue().RunTimers.
func WithManualClock(start time.Time) Option {
	return func(c *gateway.Config) {
		c.Clock = clock.NewManual(start)
		c.TimerInterval = -1
	}
}

// WithDataDir uses dir instead of a fresh temp dir (to restart on the same
// store).
func WithDataDir(dir string) Option { return func(c *gateway.Config) { c.DataDir = dir } }

// WithConfig lets the test change any field.
func WithConfig(f func(*gateway.Config)) Option { return Option(f) }

// Start runs a gateway until the test ends, and waits until it is ready.
func Start(t testing.TB, opts ...Option) *Gateway {
	t.Helper()
	cfg := gateway.Config{
		DataDir:     t.TempDir(),
		HTTPAddr:    "127.0.0.1:0",
		MetricsAddr: "127.0.0.1:0",
		XMPPAddr:    "127.0.0.1:0",
		XMPPSAddr:   "127.0.0.1:0",
		Logger:      zaptest.NewLogger(t).Named("gateway"),
	}
	for _, o := range opts {
		o(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatalf("gatewaytest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("gatewaytest: run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	tg := &Gateway{stop: stop, Gateway: g, URL: "http://" + g.Addr("http"), AdminToken: g.AdminToken(), DataDir: cfg.DataDir,
		XMPPAddr: g.Addr("xmpp"), XMPPSAddr: g.Addr("xmpps")}
	if m, ok := cfg.Clock.(*clock.Manual); ok {
		tg.Clock = m
	}
	WaitReady(t, tg.URL)
	return tg
}

// WaitReady polls /readyz until it answers 200 (at most 10 s).
func WaitReady(t testing.TB, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond) // polling a readiness probe
	}
	t.Fatalf("gatewaytest: %s not ready after 10s", base)
}

// Admin returns an API client with the admin token.
func (g *Gateway) Admin() *api.Client { return api.NewClient(g.URL, g.AdminToken) }

// App creates an app and returns a client with its API key.
func (g *Gateway) App(t testing.TB, id string) *api.Client {
	t.Helper()
	a, err := g.Admin().CreateApp(context.Background(), api.CreateAppRequest{ID: id})
	if err != nil {
		t.Fatalf("gatewaytest: create app %s: %v", id, err)
	}
	return api.NewClient(g.URL, a.APIKey)
}

// SyncBuffer is a bytes.Buffer that goroutines may write while a test
// reads it (a child process's output, a harness's log).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
