package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"tether/gateway/api"
)

// Webhooks (SPEC section 7). The outbox is the app's durable event feed
// itself: each app with a webhook has one worker that posts the events after
// a durable cursor (W app "webhook") in batches of up to 100, in order, and
// moves the cursor only after a 2xx. A failed batch is retried with
// exponential backoff (1 s doubling to 10 min) for 24 hours, then dropped
// and counted. A restart resumes at the cursor: nothing is lost; a batch
// whose 2xx was not yet recorded may be posted again, with the same event
// ids, for receivers to drop.

const (
	webhookCursor    = "webhook"
	webhookBatch     = 100
	webhookMaxDelay  = 10 * time.Minute
	webhookGiveUp    = 24 * time.Hour
	webhookTimeout   = 10 * time.Second
	webhookWait      = 30 * time.Second // long-poll on the feed between batches
	webhookUserAgent = "Tether-Webhook/1"
)

type webhooks struct {
	g        *Gateway
	client   *http.Client
	minDelay time.Duration

	mu      sync.Mutex
	workers map[string]webhookWorker
	wg      sync.WaitGroup
	ctx     context.Context
	stop    context.CancelFunc
	// drainCtx ends when shutdown starts draining: workers post what is
	// pending without waiting for more, and stop at the first failure.
	drainCtx   context.Context
	startDrain context.CancelFunc

	batches *prometheus.CounterVec
	events  prometheus.Counter
	latency prometheus.Histogram
}

func newWebhooks(g *Gateway) *webhooks {
	ctx, stop := context.WithCancel(context.Background())
	w := &webhooks{
		g:        g,
		client:   &http.Client{Timeout: webhookTimeout},
		minDelay: g.cfg.WebhookMinBackoff,
		workers:  map[string]webhookWorker{},
		ctx:      ctx,
		stop:     stop,
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_webhook_deliveries_total",
			Help: "Webhook batch posts by result: ok (2xx), error (retried), dropped (given up after 24 h).",
		}, []string{"result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_webhook_events_total", Help: "Events delivered to webhooks (acknowledged with a 2xx).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tether_webhook_post_seconds", Help: "Webhook POST latency.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10},
		}),
	}
	if w.minDelay <= 0 {
		w.minDelay = time.Second
	}
	w.drainCtx, w.startDrain = context.WithCancel(context.Background())
	g.reg.MustRegister(w.batches, w.events, w.latency)
	return w
}

// webhookWorker is the handle of one app's worker.
type webhookWorker struct {
	cancel context.CancelFunc
	kick   chan struct{} // the app's record changed: a backoff ends now
}

// sync starts a worker for every app with a webhook and stops the workers
// of apps without one. A worker already running is told that its app may
// have changed: one backing off after failed posts tries again at once,
// so a fixed URL or secret is used without waiting out the backoff (up to
// 10 min). Safe for concurrent use.
func (w *webhooks) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		return
	}
	want := map[string]bool{}
	for _, rec := range w.g.apps.list() {
		if rec.Webhook != nil && rec.Webhook.URL != "" {
			want[rec.ID] = true
		}
	}
	for app, wk := range w.workers {
		if !want[app] {
			wk.cancel()
			delete(w.workers, app)
		}
	}
	for app := range want {
		if wk, ok := w.workers[app]; ok {
			select {
			case wk.kick <- struct{}{}:
			default:
			}
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		kick := make(chan struct{}, 1)
		w.workers[app] = webhookWorker{cancel, kick}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run(ctx, app, kick)
		}()
	}
}

// close stops every worker and waits for them (a post in flight is bounded
// by the HTTP timeout).
func (w *webhooks) close() {
	w.mu.Lock()
	w.stop()
	w.mu.Unlock()
	w.wg.Wait()
}

// drain delivers what every app's outbox holds now, until each worker has
// caught up or failed once, or ctx ends; then it stops the workers. What is
// left stays in the durable feed for the next start.
func (w *webhooks) drain(ctx context.Context) {
	w.startDrain()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	w.close()
}

// untilDrain returns ctx, also cancelled when draining starts.
func (w *webhooks) untilDrain(ctx context.Context) (context.Context, func()) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.drainCtx, cancel)
	return c, func() { stop(); cancel() }
}

// run delivers app's events until ctx ends (or, draining, until the
// outbox is empty or a post fails).
func (w *webhooks) run(ctx context.Context, app string, kick <-chan struct{}) {
	log := w.g.log.Named("webhook")
	cursor, err := w.g.db.GetAppCursor(app, webhookCursor)
	if err != nil {
		log.Error("webhook cursor", zapApp(app), zap.Error(err))
		return
	}
	delay := w.minDelay
	// fails marks, for each failed post that carried events no earlier
	// post had, where those events end and when they first failed: the
	// 24 h give-up drops only the events that have been failing that
	// long, not younger ones that joined a refused batch since.
	var fails []webhookFail
	for ctx.Err() == nil {
		draining := w.drainCtx.Err() != nil
		wait := webhookWait
		if draining {
			wait = 0
		}
		pctx, release := w.untilDrain(ctx)
		evs, next, err := w.g.q.Events(pctx, app, cursor, webhookBatch, wait)
		release()
		if err != nil {
			log.Error("webhook: read events", zapApp(app), zap.Error(err))
			if draining {
				return
			}
			w.sleep(ctx, delay, nil)
			continue
		}
		if len(evs) == 0 {
			if draining {
				return // caught up
			}
			continue
		}
		rec, ok := w.g.apps.get(app)
		if !ok || rec.Webhook == nil || rec.Webhook.URL == "" {
			return
		}
		status, err := w.post(ctx, rec.Webhook.URL, rec.Webhook.Secret, evs)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			w.batches.WithLabelValues("ok").Inc()
			w.events.Add(float64(len(evs)))
			cursor, delay, fails = next, w.minDelay, fails[:0]
			w.saveCursor(app, cursor)
			continue
		}
		now := w.g.cfg.Clock.Now() // before the count: a count seen means the failure is timed
		w.batches.WithLabelValues("error").Inc()
		if len(fails) == 0 || next > fails[len(fails)-1].next {
			fails = append(fails, webhookFail{next: next, at: now})
		}
		if now.Sub(fails[0].at) >= webhookGiveUp {
			log.Warn("webhook: giving up on events refused for 24 h", zapApp(app), zap.Uint64("cursor", cursor), zap.Uint64("next", fails[0].next), zap.Int("status", status), zap.Error(err))
			w.batches.WithLabelValues("dropped").Inc()
			cursor, delay = fails[0].next, w.minDelay
			fails = fails[1:]
			w.saveCursor(app, cursor)
			continue
		}
		if draining {
			log.Info("webhook: post failed while shutting down; the next start retries", zapApp(app), zap.Int("status", status), zap.Error(err))
			return
		}
		if ce := log.Check(zap.InfoLevel, "webhook: post failed, will retry"); ce != nil {
			ce.Write(zapApp(app), zap.Int("status", status), zap.Duration("retry_in", delay), zap.Error(err))
		}
		if w.sleep(ctx, delay, kick) {
			delay = w.minDelay // the app changed: its new settings get a fresh start
		} else {
			delay = min(delay*2, webhookMaxDelay)
		}
	}
}

// webhookFail is where the events of a refused post end in the feed, and
// when they were first refused.
type webhookFail struct {
	next uint64
	at   time.Time
}

// sleep waits d, or until ctx ends, draining starts or kick; it reports
// whether kick ended it.
func (w *webhooks) sleep(ctx context.Context, d time.Duration, kick <-chan struct{}) bool {
	c, release := w.untilDrain(ctx)
	defer release()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.Done():
	case <-kick:
		return true
	}
	return false
}

func (w *webhooks) saveCursor(app string, cursor uint64) {
	b := w.g.db.NewBatch()
	b.PutAppCursor(app, webhookCursor, cursor)
	if err := b.Commit(false); err != nil {
		w.g.log.Error("webhook: save cursor", zapApp(app), zap.Error(err))
	}
}

var errStatus = errors.New("gateway: webhook answered a non-2xx status")

// post sends one batch, signed. It returns the HTTP status.
func (w *webhooks) post(ctx context.Context, url, secret string, evs []json.RawMessage) (int, error) {
	body, err := json.Marshal(struct {
		Events []json.RawMessage `json:"events"`
	}{evs})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", webhookUserAgent)
	req.Header.Set(api.SignatureHeader, api.SignWebhook(secret, w.g.cfg.Clock.Now(), body))
	start := time.Now()
	resp, err := w.client.Do(req)
	w.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("%w: %d", errStatus, resp.StatusCode)
	}
	return resp.StatusCode, nil
}
