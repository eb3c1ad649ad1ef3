package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/queue"
)

// receiver is a loopback webhook receiver that checks signatures and can
// be told to fail.
type receiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server
	down   atomic.Bool
	mu     sync.Mutex
	events []api.Event
	posts  int
	bad    int
	got    chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret, got: make(chan struct{}, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.posts++
	if r.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	// The check a backend makes (gateway/api's helper); no tolerance, as
	// tests move the gateway's clock.
	batch, err := api.VerifyWebhook(r.secret, req.Header.Get(api.SignatureHeader), body, 0, time.Now())
	if errors.Is(err, api.ErrSignature) {
		r.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if err != nil || len(batch.Events) == 0 || len(batch.Events) > 100 {
		r.bad++
		http.Error(w, "bad batch", http.StatusBadRequest)
		return
	}
	r.events = append(r.events, batch.Events...)
	w.WriteHeader(http.StatusNoContent)
	select {
	case r.got <- struct{}{}:
	default:
	}
}

// uniqueInOrder returns the events with repeats (same id) dropped, checking
// that ids only go forward.
func (r *receiver) uniqueInOrder() []api.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []api.Event
	seen := map[string]bool{}
	last := ""
	for _, e := range r.events {
		if seen[e.ID] {
			continue
		}
		require.Greater(r.t, e.ID, last, "events out of order")
		seen[e.ID], last = true, e.ID
		out = append(out, e)
	}
	return out
}

func (r *receiver) waitCount(n int) []api.Event {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ev := r.uniqueInOrder(); len(ev) >= n {
			return ev
		}
		select {
		case <-r.got:
		case <-time.After(time.Until(deadline)):
			r.t.Fatalf("webhook: %d of %d events arrived", len(r.uniqueInOrder()), n)
		}
	}
}

func fastWebhooks(c *gateway.Config) { c.WebhookMinBackoff = 20 * time.Millisecond }

func TestWebhookDeliversSignedBatchesInOrder(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(fastWebhooks))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	r := newReceiver(t, "whsec-1")
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: r.srv.URL + "/hook", Secret: "whsec-1"}})
	require.NoError(t, err)
	var ids []string
	for range 150 {
		res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "x", Ref: "r"}, "")
		require.NoError(t, err)
		_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
		require.NoError(t, err)
		ids = append(ids, res.Messages[0].ID)
	}
	ev := r.waitCount(150)
	for i, e := range ev {
		require.Equal(t, "message.cancelled", e.Type)
		require.Equal(t, ids[i], e.MessageID)
		require.Equal(t, "acme", e.App)
		require.Equal(t, "r", e.Ref)
	}
	r.mu.Lock()
	require.Zero(t, r.bad, "every signature valid")
	r.mu.Unlock()
}

// TestWebhookSurvivesOutageAndRestart: the receiver is down while events
// pile up and the gateway restarts; once it is back every event arrives, in
// order, signed; repeats only with the same id.
func TestWebhookSurvivesOutageAndRestart(t *testing.T) {
	dir := t.TempDir()
	r := newReceiver(t, "whsec-2")
	r.down.Store(true)
	g := gatewaytest.Start(t, gatewaytest.WithDataDir(dir), gatewaytest.WithConfig(fastWebhooks))
	ctx := ctxT(t)
	created, err := g.Admin().CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	app := api.NewClient(g.URL, created.APIKey)
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: r.srv.URL, Secret: "whsec-2"}})
	require.NoError(t, err)
	var ids []string
	send := func(c *api.Client, n int) {
		for range n {
			res, err := c.Send(ctx, "acme", api.SendRequest{To: []string{"bob"}, Body: "x"}, "")
			require.NoError(t, err)
			_, err = c.CancelMessage(ctx, "acme", res.Messages[0].ID)
			require.NoError(t, err)
			ids = append(ids, res.Messages[0].ID)
		}
	}
	send(app, 30)
	// Wait until the gateway has retried a few times against the outage.
	for deadline := time.Now().Add(10 * time.Second); ; {
		r.mu.Lock()
		p := r.posts
		r.mu.Unlock()
		if p >= 3 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no retries seen")
		time.Sleep(10 * time.Millisecond) // polling the receiver
	}
	g.Stop()

	g2 := gatewaytest.Start(t, gatewaytest.WithDataDir(dir), gatewaytest.WithConfig(fastWebhooks))
	app2 := api.NewClient(g2.URL, created.APIKey)
	send(app2, 20)
	r.down.Store(false)
	ev := r.waitCount(50)
	require.Len(t, ev, 50)
	for i, e := range ev {
		require.Equal(t, ids[i], e.MessageID, "event %d", i)
	}
	r.mu.Lock()
	require.Zero(t, r.bad)
	r.mu.Unlock()

	// The counter moves just after the receiver answered: poll.
	eventually(t, 5*time.Second, "webhook ok counter", func() bool {
		resp, err := http.Get("http://" + g2.Addr("metrics") + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), `tether_webhook_deliveries_total{result="ok"}`)
	})
}

// BenchmarkWebhookThroughput appends b.N events to an app's feed and
// reports how fast they reach a loopback receiver (batches of 100, signed,
// in order).
func BenchmarkWebhookThroughput(b *testing.B) {
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) { c.Logger = zap.NewNop() }))
	ctx := context.Background()
	app := g.App(b, "bench")
	var got atomic.Int64
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var batch struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.NewDecoder(req.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if got.Add(int64(len(batch.Events))) == int64(b.N) {
			close(done)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := g.Queue().AppendEvent(ctx, &queue.Event{Type: queue.EventDeviceOnline, App: "bench", User: "u", Device: strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := app.PatchApp(ctx, "bench", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: srv.URL, Secret: "s"}}); err != nil {
		b.Fatal(err)
	}
	appended := time.Since(start)
	deliverStart := time.Now()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d events delivered", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(deliverStart).Seconds(), "delivered-events/s")
	b.ReportMetric(float64(b.N)/appended.Seconds(), "appended-events/s")
}

// TestWebhookDrainsOnShutdown: a graceful stop posts what the outbox
// holds, even for a worker waiting out a long backoff, before it returns.
func TestWebhookDrainsOnShutdown(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.WebhookMinBackoff = time.Hour }))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	r := newReceiver(t, "whsec-1")
	r.down.Store(true)
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: r.srv.URL + "/hook", Secret: "whsec-1"}})
	require.NoError(t, err)
	var ids []string
	for range 5 {
		res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "x"}, "")
		require.NoError(t, err)
		_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
		require.NoError(t, err)
		ids = append(ids, res.Messages[0].ID)
	}
	eventually(t, 10*time.Second, "a first post, refused", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.posts > 0
	})
	// The worker now sleeps for an hour. The receiver comes back; stop.
	r.down.Store(false)
	start := time.Now()
	g.Stop()
	require.Less(t, time.Since(start), 10*time.Second)
	var cancelled []string
	for _, e := range r.uniqueInOrder() {
		if e.Type == "message.cancelled" {
			cancelled = append(cancelled, e.MessageID)
		}
	}
	require.Equal(t, ids, cancelled, "every event posted before the gateway stopped")
}

// TestWebhookFixedURLEndsBackoff: a webhook failing against a receiver
// that is down backs off (0.5 s doubling); once the app's webhook is
// pointed at a working receiver, the next post goes out at once, not after
// the backoff it was waiting out (up to 10 min in production).
func TestWebhookFixedURLEndsBackoff(t *testing.T) {
	down := newReceiver(t, "whsec-3")
	down.down.Store(true)
	up := newReceiver(t, "whsec-3")
	g := gatewaytest.Start(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.WebhookMinBackoff = 500 * time.Millisecond }))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: down.srv.URL, Secret: "whsec-3"}})
	require.NoError(t, err)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"bob"}, Body: "x"}, "")
	require.NoError(t, err)
	_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID) // an event
	require.NoError(t, err)
	// Three failed posts: at 0, 0.5 and 1.5 s; the next is due 2 s later.
	for deadline := time.Now().Add(10 * time.Second); ; {
		down.mu.Lock()
		p := down.posts
		down.mu.Unlock()
		if p >= 3 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no retries seen")
		time.Sleep(10 * time.Millisecond) // polling the receiver
	}
	fixed := time.Now()
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: up.srv.URL, Secret: "whsec-3"}})
	require.NoError(t, err)
	ev := up.waitCount(1)
	require.Equal(t, res.Messages[0].ID, ev[0].MessageID)
	require.Less(t, time.Since(fixed), 1500*time.Millisecond, "the post waited out the backoff of the old URL")
}

// TestWebhookHandlerReceivesGatewayPosts: a backend serving
// api.WebhookHandler with its secret gets the gateway's signed posts; when
// its own handling fails once, the gateway posts the batch again and
// every event arrives.
func TestWebhookHandlerReceivesGatewayPosts(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(fastWebhooks))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	var mu sync.Mutex
	seen := map[string]bool{}
	calls, failures := 0, 1
	srv := httptest.NewServer(api.WebhookHandler("whsec-h", func(ctx context.Context, evs []api.Event) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if failures > 0 {
			failures--
			return errors.New("backend database unavailable")
		}
		for _, e := range evs {
			seen[e.MessageID+" "+e.Type] = true
		}
		return nil
	}))
	t.Cleanup(srv.Close)
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: srv.URL, Secret: "whsec-h"}})
	require.NoError(t, err)
	var ids []string
	for range 5 {
		res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "x"}, "")
		require.NoError(t, err)
		_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
		require.NoError(t, err)
		ids = append(ids, res.Messages[0].ID)
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if !seen[id+" message.cancelled"] {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, calls, 2, "the failed batch was posted again")
}
