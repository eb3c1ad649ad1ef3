package wake

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// PoolConfig configures a Pool. Zero values are defaults.
type PoolConfig struct {
	// Workers is the number of sending goroutines, and so the most sends
	// in flight at once. Zero means 64.
	Workers int
	// QueueSize is how many accepted jobs may wait for a worker. Zero
	// means 8192.
	QueueSize int
	// DrainTimeout is how long Close waits for queued and in-flight jobs.
	// Zero means 5 s.
	DrainTimeout time.Duration
	// Logger. Nil means no logging.
	Logger *zap.Logger
}

// Job is one wake for the Pool to send.
type Job struct {
	// Provider sends it. Required.
	Provider Provider
	// Target and Payload are passed to Provider.Send.
	Target  Target
	Payload Payload
	// Done, if set, receives the outcome, exactly once for every job that
	// Submit accepted: Provider.Send's result, or RetryAfter with
	// ErrClosed if the Pool closed before sending it. It runs on a worker
	// goroutine and must not block for long.
	Done func(Result, error)
}

// Pool sends wakes asynchronously with a fixed set of workers and a
// bounded queue, so callers never block on a provider: Submit either
// queues the job or refuses it at once. Every outcome is counted in
// tether_wakes_total{provider,result} and timed, from Submit to the
// provider's answer, in tether_wake_latency_seconds{provider}.
//
// All methods are safe for concurrent use. Lifecycle: NewPool starts the
// workers; Close stops them.
type Pool struct {
	cfg    PoolConfig
	log    *zap.Logger
	jobs   chan queued
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.RWMutex // guards closed against sends on jobs
	closed    bool
	closing   chan struct{} // closed when Close starts: SubmitWait gives up
	closeOnce sync.Once

	prov sync.Map // provider name → *provMetrics

	abandoned atomic.Int64

	wakes   *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

type queued struct {
	Job
	at time.Time
}

// provMetrics are one provider's series, resolved once rather than by
// label lookups on every wake.
type provMetrics struct {
	results [Failed + 1]prometheus.Counter // by Outcome; 0 unused
	dropped prometheus.Counter
	latency prometheus.Observer
}

const (
	defaultWorkers      = 64
	defaultQueueSize    = 8192
	defaultDrainTimeout = 5 * time.Second
)

// NewPool starts a Pool's workers.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = defaultQueueSize
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = defaultDrainTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg:     cfg,
		log:     log,
		jobs:    make(chan queued, cfg.QueueSize),
		ctx:     ctx,
		cancel:  cancel,
		closing: make(chan struct{}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_wakes_total",
			Help: "Wake pushes by provider and result (delivered, token_invalid, retry, failed; dropped when the send queue was full).",
		}, []string{"provider", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tether_wake_latency_seconds",
			Help:    "Time from submitting a wake to the provider's answer, queue wait included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider"}),
	}
	p.wg.Add(cfg.Workers)
	for range cfg.Workers {
		go p.work()
	}
	return p
}

// Collectors returns the Pool's Prometheus collectors, for the gateway to
// register: tether_wakes_total, tether_wake_latency_seconds and the
// tether_wake_queue_length gauge.
func (p *Pool) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		p.wakes, p.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tether_wake_queue_length",
			Help: "Wakes waiting for a send worker.",
		}, func() float64 { return float64(len(p.jobs)) }),
	}
}

// metrics returns the series of the named provider.
func (p *Pool) metrics(name string) *provMetrics {
	if m, ok := p.prov.Load(name); ok {
		return m.(*provMetrics)
	}
	m := &provMetrics{
		dropped: p.wakes.WithLabelValues(name, "dropped"),
		latency: p.latency.WithLabelValues(name),
	}
	for o := Delivered; o <= Failed; o++ {
		m.results[o] = p.wakes.WithLabelValues(name, o.String())
	}
	v, _ := p.prov.LoadOrStore(name, m)
	return v.(*provMetrics)
}

// Submit queues a job without blocking. It returns false, and does not
// call j.Done, when the queue is full or the Pool is closed; the refusal
// is counted as result "dropped".
func (p *Pool) Submit(j Job) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.closed {
		select {
		case p.jobs <- queued{Job: j, at: time.Now()}:
			return true
		default:
		}
	}
	p.metrics(j.Provider.Name()).dropped.Inc()
	return false
}

// SubmitWait queues a job, waiting while the queue is full until ctx is
// done or Close starts. It returns false, and does not call j.Done, when
// the job was not queued; the refusal is counted as result "dropped". It
// is for callers that can afford to wait for a slot (such as a goroutine
// fanning out wakes), so that a burst larger than the queue is sent as
// workers free up rather than refused.
func (p *Pool) SubmitWait(ctx context.Context, j Job) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.closed {
		// Timed from here: the wait for a slot is queue wait too.
		q := queued{Job: j, at: time.Now()}
		select {
		case p.jobs <- q:
			return true
		default:
		}
		select {
		case p.jobs <- q:
			return true
		case <-ctx.Done():
		case <-p.closing:
		}
	}
	p.metrics(j.Provider.Name()).dropped.Inc()
	return false
}

// Len returns the number of queued jobs.
func (p *Pool) Len() int { return len(p.jobs) }

// Close stops accepting jobs and waits up to DrainTimeout for the queued
// and in-flight ones to be sent. Past that it cancels the sends in flight
// and completes the jobs still queued with ErrClosed, waits for the
// workers to stop (the adapters return promptly once cancelled) and
// returns an error wrapping ErrDrainTimeout. Later calls return nil.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() { close(p.closing) }) // SubmitWait lets go of the read lock
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.jobs)
	p.mu.Unlock()

	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-t.C:
	}
	p.cancel()
	<-done
	return fmt.Errorf("%w after %v: %d wakes not sent", ErrDrainTimeout, p.cfg.DrainTimeout, p.abandoned.Load())
}

func (p *Pool) work() {
	defer p.wg.Done()
	for j := range p.jobs {
		if p.ctx.Err() != nil {
			p.abandoned.Add(1)
			p.finish(j, Result{Outcome: RetryAfter, Reason: "closed"}, ErrClosed)
			continue
		}
		start := time.Now()
		res, err := j.Provider.Send(p.ctx, j.Target, j.Payload)
		p.finishSent(j, res, err, time.Since(start))
	}
}

// slowSend is how long a provider call may take before its answer is
// logged at info level: pushes that slow are likely to reach devices
// that came online after the last look (after a restart, while thousands
// reconnect and the provider connection is being set up).
const slowSend = time.Second

func (p *Pool) finish(j queued, res Result, err error) { p.finishSent(j, res, err, 0) }

// finishSent records a job's outcome; send is how long the provider call
// took (0 if none was made).
func (p *Pool) finishSent(j queued, res Result, err error, send time.Duration) {
	name := j.Provider.Name()
	m := p.metrics(name)
	if o := int(res.Outcome); o < len(m.results) && m.results[o] != nil {
		m.results[o].Inc()
	} else {
		p.wakes.WithLabelValues(name, res.Outcome.String()).Inc()
	}
	m.latency.Observe(time.Since(j.at).Seconds())
	lvl := zapcore.DebugLevel
	if send >= slowSend {
		lvl = zapcore.InfoLevel
	}
	if res.Outcome == Failed || (res.Outcome == RetryAfter && err != nil && err != ErrClosed) || res.Status >= 500 {
		lvl = zapcore.WarnLevel // a degraded provider or a configuration problem
	}
	if ce := p.log.Check(lvl, "wake"); ce != nil {
		ce.Write(
			zap.String("provider", name),
			zap.Stringer("result", res.Outcome),
			zap.String("reason", res.Reason),
			zap.Int("status", res.Status),
			zap.Duration("retry_after", res.RetryAfter),
			zap.String("token", TokenRef(j.Target.Token)),
			zap.Duration("took", time.Since(j.at)),
			zap.Duration("send", send),
			zap.Error(err),
		)
	}
	if j.Done != nil {
		j.Done(res, err)
	}
}
