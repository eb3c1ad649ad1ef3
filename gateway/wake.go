package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"tether/queue"
	"tether/storage"
	"tether/wake"
)

// Wake policy (SPEC section 5): a device with a push registration and no
// live session gets a content-free wake push when a message is enqueued for
// it. One wake is outstanding per device: no second push until the device
// connects or the wake interval passes; while messages stay pending the
// wake is repeated with the interval doubling (app's wake_interval, 60 s by
// default, up to 30 min); a per-device hourly cap holds (3 for APNs
// background mode, 10 otherwise). 429 and 5xx are retried after the
// provider's Retry-After or the backoff. An invalid token removes the
// registration, is remembered so it is never pushed again, and emits
// device.token_invalid. Sends go through a bounded wake.Pool: callers never
// wait on a provider.
//
// The per-device state is in memory: after a restart, offline devices are
// woken again by their next message. The hourly cap survives restarts: the
// times of a device's wakes of the last hour (at most the cap's count) are
// stored under its P key, written unsynced with the device.wake_sent events
// (one more batch per flush, not a commit per wake), and read once when the
// waker first considers the device after a start. A crash may lose the
// wakes of the last moments (those not yet flushed or not yet synced by a
// later commit), never the rest of the hour. The record is deleted once its
// last wake is an hour old, and with the device, its user or its app.

const (
	defaultWakeInterval = 60 * time.Second
	maxWakeInterval     = 30 * time.Minute
	wakeCapBackground   = 3
	wakeCapDefault      = 10
	wakeTick            = 250 * time.Millisecond
	maxRetryBackoff     = 5 * time.Minute
)

type wakeKey struct{ app, user, device string }

type wakeState struct {
	inFlight bool      // a push is queued or being sent
	next     time.Time // no push before this
	interval time.Duration
	sent     []time.Time // wakes of the last hour counted against the cap, oldest first
	stored   bool        // the store may hold wake times for the device
	priority wake.Priority
	expires  time.Time     // latest expiry of the messages it was woken for
	backoff  time.Duration // after a 429/5xx: doubles from 1 s to 5 min
	pending  int           // messages known to wait (a lower bound)
	idle     bool          // no wake outstanding; kept for the hourly cap
	answered bool          // the device connected while a push was in flight
}

// recent drops the wakes that are an hour old: the cap counts the others.
func (st *wakeState) recent(now time.Time) {
	i := 0
	for i < len(st.sent) && now.Sub(st.sent[i]) >= time.Hour {
		i++
	}
	st.sent = st.sent[i:]
}

// unsend takes back the wake counted at at: it did not go out.
func (st *wakeState) unsend(at time.Time) {
	for i := len(st.sent) - 1; i >= 0; i-- {
		if st.sent[i].Equal(at) {
			st.sent = slices.Delete(st.sent, i, i+1)
			return
		}
	}
}

type waker struct {
	g    *Gateway
	pool *wake.Pool
	log  *zap.Logger

	mu       sync.Mutex
	devices  map[wakeKey]*wakeState
	lostAt   map[wakeKey]time.Time    // devices that lost their connection with messages waiting: look again then
	provs    map[string]*appProviders // by app
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	ctx      context.Context // cancelled by close: fan-outs stop waiting for the pool
	cancel   context.CancelFunc
	sem      chan struct{}
	sms      *prometheus.CounterVec

	// device.wake_sent events, appended in batches by eventLoop: one
	// store commit per batch rather than per wake. dropBuf holds the
	// devices whose stored wake times are to be deleted (all an hour old).
	// storeMu orders the store writes of one device's wake times
	// (storeLock), striped by device.
	storeMu [64]sync.Mutex
	seed    maphash.Seed

	evMu    sync.Mutex
	evBuf   []*queue.Event
	dropBuf map[wakeKey]struct{}
	evKick  chan struct{}
	evStop  chan struct{}
	evDone  chan struct{}
}

// appProviders are an app's push and SMS clients, built from its record and
// rebuilt when it changes.
type appProviders struct {
	rec  *appRecord
	apns *wake.APNs
	fcm  *wake.FCM
	sms  *wake.SMSSender
}

func (p *appProviders) close() {
	if p.apns != nil {
		p.apns.Close()
	}
	if p.fcm != nil {
		p.fcm.Close()
	}
	if p.sms != nil {
		p.sms.Close()
	}
}

func newWaker(g *Gateway) *waker {
	w := &waker{
		g:       g,
		pool:    wake.NewPool(wake.PoolConfig{Logger: g.log.Named("wake")}),
		log:     g.log.Named("wake"),
		devices: map[wakeKey]*wakeState{},
		lostAt:  map[wakeKey]time.Time{},
		seed:    maphash.MakeSeed(),
		provs:   map[string]*appProviders{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		sem:     make(chan struct{}, 64),
		evKick:  make(chan struct{}, 1),
		evStop:  make(chan struct{}),
		evDone:  make(chan struct{}),
		sms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_sms_total", Help: "SMS fallbacks handed to providers, by provider and result (sent, failed).",
		}, []string{"provider", "result"}),
	}
	g.reg.MustRegister(w.pool.Collectors()...)
	g.reg.MustRegister(w.sms)
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.loop()
	go w.eventLoop()
	return w
}

func (w *waker) close() {
	w.stopOnce.Do(func() {
		close(w.stop)
		w.cancel()
		// Wait for enqueuedAsync's goroutines (their context is
		// cancelled, so they end soon) by taking every slot of their
		// semaphore, for good: later calls run on the caller's goroutine.
		// Left running, one read the closed store and logged after its
		// gateway was gone.
		for range cap(w.sem) {
			w.sem <- struct{}{}
		}
	})
	<-w.done
	w.pool.Close()
	// The pool's last answers are in: write their events.
	select {
	case <-w.evStop:
	default:
		close(w.evStop)
	}
	<-w.evDone
	w.mu.Lock()
	for _, p := range w.provs {
		p.close()
	}
	w.provs = map[string]*appProviders{}
	w.mu.Unlock()
}

// providers returns the app's clients, building them when the app record
// changed. Errors in one provider's credentials leave that provider nil.
func (w *waker) providers(app string) *appProviders {
	rec, ok := w.g.apps.get(app)
	if !ok {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if p, ok := w.provs[app]; ok && p.rec == rec {
		return p
	}
	if old, ok := w.provs[app]; ok {
		old.close()
	}
	p := &appProviders{rec: rec}
	now := w.g.cfg.Clock.Now
	if c := rec.APNS; c != nil && c.KeyP8 != "" {
		a, err := wake.NewAPNs(wake.APNsConfig{KeyP8: c.KeyP8, KeyID: c.KeyID, TeamID: c.TeamID, Topic: c.Topic,
			Environment: c.Environment, Endpoint: c.Endpoint, HTTPClient: w.httpClient("apns"), Now: now})
		if err != nil {
			w.log.Warn("APNs credentials unusable", zapApp(app), zap.Error(err))
		} else {
			p.apns = a
		}
	}
	if c := rec.FCM; c != nil && c.ServiceAccountJSON != "" {
		f, err := wake.NewFCM(wake.FCMConfig{ServiceAccountJSON: c.ServiceAccountJSON, Endpoint: c.Endpoint,
			HTTPClient: w.httpClient("fcm"), Now: now})
		if err != nil {
			w.log.Warn("FCM credentials unusable", zapApp(app), zap.Error(err))
		} else {
			p.fcm = f
		}
	}
	if c := rec.SMS; c != nil {
		s, err := wake.NewSMSSender(wake.SMSConfig{Provider: c.Provider, URL: c.URL, APIKey: c.APIKey, APISecret: c.APISecret,
			From: c.From, HTTPClient: w.httpClient("sms")})
		if err != nil {
			w.log.Warn("SMS settings unusable", zapApp(app), zap.Error(err))
		} else {
			p.sms = s
		}
	}
	w.provs[app] = p
	return p
}

func (w *waker) httpClient(provider string) *http.Client {
	if f := w.g.cfg.ProviderHTTPClient; f != nil {
		return f(provider)
	}
	return nil
}

// enqueuedAsync runs enqueued off the request's goroutine (at most 64 at
// once; beyond that the caller runs it), so a 202 does not wait for device
// lookups. Off the request, a fan-out larger than the pool's queue waits
// for free slots (up to fanoutWait); on the request's goroutine it never
// waits, and what the pool refuses is retried a second later.
func (w *waker) enqueuedAsync(app string, to []queue.Recipient, priority queue.Priority, expires time.Time) {
	select {
	case w.sem <- struct{}{}:
		go func() {
			defer func() { <-w.sem }()
			// The wait's deadline is set by the first push (most POSTs
			// wake no one, and a context with a timer for each was 3 % of
			// the gateway's allocations in the soak).
			var ctx context.Context
			cancel := context.CancelFunc(func() {})
			defer func() { cancel() }()
			w.enqueued(app, to, priority, expires, func(j wake.Job) bool {
				if ctx == nil {
					ctx, cancel = context.WithTimeout(w.ctx, fanoutWait)
				}
				return w.pool.SubmitWait(ctx, j)
			})
		}()
	default:
		w.enqueued(app, to, priority, expires, w.pool.Submit)
	}
}

// fanoutWait bounds how long one fan-out waits for room in the pool's
// queue, in all.
const fanoutWait = 10 * time.Second

// enqueued is called after a 202: it wakes the offline devices the
// messages are for, reading each user's device records once, through the
// queue's device cache: the list of a whole user, the record of each named
// device that is not online (an online device is never woken). submit
// hands a job to the pool.
func (w *waker) enqueued(app string, to []queue.Recipient, priority queue.Priority, expires time.Time, submit func(wake.Job) bool) {
	ctx := context.Background()
	prio := wake.PriorityNormal
	if priority == queue.PriorityHigh {
		prio = wake.PriorityHigh
	}
	var users []string
	want := make(map[string]*wanted, len(to))
	for _, r := range to {
		u := want[r.User]
		if u == nil {
			u = &wanted{}
			want[r.User] = u
			users = append(users, r.User)
		}
		if r.Device == "" {
			u.all = true
		} else {
			u.add(r.Device)
		}
	}
	for _, user := range users {
		u := want[user]
		if u.all {
			devs, err := w.g.q.Devices(ctx, app, user)
			if err != nil {
				w.log.Warn("wake: devices", zapApp(app), zap.Error(err))
				continue
			}
			for i := range devs {
				d := &devs[i]
				if d.Push == nil {
					continue
				}
				k := wakeKey{app, user, d.ID}
				w.consider(k, d.Push, prio, expires, 1, submit)
				if u.has(d.ID) {
					// Also named on its own: a second message for it.
					w.consider(k, d.Push, prio, expires, 1, submit)
				}
			}
			continue
		}
		for _, id := range u.order {
			if w.g.live(app, user, id) {
				continue // consider would skip it: spare the read
			}
			d, err := w.g.q.Device(ctx, queue.DeviceRef{App: app, User: user, Device: id})
			if errors.Is(err, queue.ErrNotFound) {
				continue
			}
			if err != nil {
				w.log.Warn("wake: device", zapApp(app), zap.Error(err))
				continue
			}
			if d.Push != nil {
				w.consider(wakeKey{app, user, id}, d.Push, prio, expires, 1, submit)
			}
		}
	}
}

// wanted is what one POST asks of a user: the user as a whole, and the
// devices named, in order, each once.
type wanted struct {
	all     bool
	order   []string
	devices map[string]bool // the set of order, once it is long
}

// wantedMapAt is the number of named devices from which wanted keeps a
// set: below, a look-up scans order (a POST names a device or a few).
const wantedMapAt = 8

func (u *wanted) add(d string) {
	if u.has(d) {
		return
	}
	u.order = append(u.order, d)
	switch {
	case u.devices != nil:
		u.devices[d] = true
	case len(u.order) >= wantedMapAt:
		u.devices = make(map[string]bool, 2*len(u.order))
		for _, x := range u.order {
			u.devices[x] = true
		}
	}
}

func (u *wanted) has(d string) bool {
	if u.devices != nil {
		return u.devices[d]
	}
	return slices.Contains(u.order, d)
}

// consider sends a wake to k unless one is outstanding, the device is
// online, or the cap is reached. added is how many new messages this call
// is for (0 on a retry, which passes the pending count it read). submit
// hands the push to the pool.
func (w *waker) consider(k wakeKey, reg *queue.PushRegistration, prio wake.Priority, expires time.Time, added int, submit func(wake.Job) bool) {
	if w.g.live(k.app, k.user, k.device) {
		return
	}
	if w.reconnecting(k) {
		return
	}
	if !(directory{w.g}).PushAllowed(k.app, reg.Provider, reg.Token) {
		return
	}
	p := w.providers(k.app)
	if p == nil {
		return
	}
	var prov wake.Provider
	switch reg.Provider {
	case "apns":
		if p.apns != nil {
			prov = p.apns
		}
	case "fcm":
		if p.fcm != nil {
			prov = p.fcm
		}
	}
	if prov == nil {
		return
	}
	mode, alert := wake.ModeAlert, ""
	if c := p.rec.APNS; c != nil {
		if c.Wake == "background" {
			mode = wake.ModeBackground
		}
		alert = c.AlertText
	}
	now := w.g.cfg.Clock.Now()
	w.mu.Lock()
	st := w.devices[k]
	if st == nil {
		// First look at the device since the start (or since its last
		// hour ended): its stored wake times count against the cap.
		w.mu.Unlock()
		sent := w.loadSent(k, now)
		w.mu.Lock()
		if st = w.devices[k]; st == nil {
			st = &wakeState{interval: w.interval(p.rec), sent: sent, stored: len(sent) > 0}
			w.devices[k] = st
		}
	}
	if st.idle {
		if added == 0 {
			w.mu.Unlock()
			return // a retry tick of an idle entry: nothing is outstanding
		}
		st.idle, st.next, st.interval = false, time.Time{}, w.interval(p.rec)
	}
	if expires.After(st.expires) {
		st.expires = expires
	}
	if prio == wake.PriorityHigh {
		st.priority = prio
	}
	st.pending += added
	if st.inFlight || now.Before(st.next) {
		w.mu.Unlock()
		return
	}
	st.recent(now)
	cap := wakeCapDefault
	if reg.Provider == "apns" && mode == wake.ModeBackground {
		cap = wakeCapBackground
	}
	if len(st.sent) >= cap {
		// Next when the oldest wake that keeps it at the cap is an hour old.
		st.next = st.sent[len(st.sent)-cap].Add(time.Hour)
		w.mu.Unlock()
		return
	}
	st.inFlight = true
	st.sent = append(st.sent, now)
	payload := wake.Payload{Pending: max(st.pending, 1), Priority: st.priority, Expiration: st.expires, Mode: mode, AlertText: alert}
	w.mu.Unlock()
	target := wake.Target{Token: reg.Token, Topic: reg.Topic, Environment: reg.Environment}
	ok := submit(wake.Job{Provider: onlineCheck{prov, w, k}, Target: target, Payload: payload,
		Done: func(res wake.Result, err error) { w.finished(k, reg, prov.Name(), res, now) }})
	if !ok {
		w.mu.Lock()
		st.inFlight = false
		st.unsend(now) // refused by the pool: not sent
		st.next = now.Add(time.Second)
		w.mu.Unlock()
	}
}

// loadSent reads the device's stored wake times of the last hour (one
// Get); none if their deletion waits for eventLoop.
func (w *waker) loadSent(k wakeKey, now time.Time) []time.Time {
	w.evMu.Lock()
	_, dropping := w.dropBuf[k]
	w.evMu.Unlock()
	if dropping {
		return nil
	}
	ms, err := w.g.db.GetWakeTimes(k.app, k.user, k.device)
	if err != nil {
		w.log.Warn("wake: load wake times", zapApp(k.app), zap.Error(err))
		return nil
	}
	var sent []time.Time
	for _, m := range ms {
		if at := time.UnixMilli(m); now.Sub(at) < time.Hour {
			sent = append(sent, at)
		}
	}
	return sent
}

// dropStoredLocked queues the deletion of k's stored wake times (all an
// hour old) for eventLoop. The caller holds w.mu.
func (w *waker) dropStoredLocked(k wakeKey) {
	w.evMu.Lock()
	kick := len(w.evBuf) == 0 && len(w.dropBuf) == 0
	if w.dropBuf == nil {
		w.dropBuf = map[wakeKey]struct{}{}
	}
	w.dropBuf[k] = struct{}{}
	w.evMu.Unlock()
	if kick {
		w.kick()
	}
}

// dropLocked forgets the device's state, and its stored wake times (all
// an hour old by now). The caller holds w.mu.
func (w *waker) dropLocked(k wakeKey, st *wakeState) {
	delete(w.devices, k)
	if st.stored {
		w.dropStoredLocked(k)
	}
}

// onlineCheck looks again, just before the send, whether the device came
// online while its wake waited for a worker (after a restart thousands of
// devices reconnect at once): a device online is never pushed.
type onlineCheck struct {
	wake.Provider
	w *waker
	k wakeKey
}

// reasonOnline is the Result reason of a wake skipped at the last moment.
const reasonOnline = "device online"

func (c onlineCheck) Send(ctx context.Context, t wake.Target, p wake.Payload) (wake.Result, error) {
	if c.w.g.live(c.k.app, c.k.user, c.k.device) {
		return wake.Result{Outcome: wake.Failed, Reason: reasonOnline}, nil
	}
	if err := c.w.recordSent(c.k); err != nil {
		return wake.Result{Outcome: wake.Failed, Reason: "store: " + err.Error()}, err
	}
	return c.Provider.Send(ctx, t, p)
}

// deleteStored deletes k's stored wake times unless a wake was counted
// since dropLocked queued the deletion (recordSent stored it then).
func (w *waker) deleteStored(k wakeKey) {
	mu := w.storeLock(k)
	mu.Lock()
	defer mu.Unlock()
	w.mu.Lock()
	st := w.devices[k]
	live := st != nil && len(st.sent) > 0
	w.mu.Unlock()
	if live {
		return
	}
	b := w.g.db.NewBatch()
	b.PutWakeTimes(k.app, k.user, k.device, nil)
	if err := b.Commit(false); err != nil {
		w.log.Warn("wake: delete wake times", zap.Error(err))
	}
}

// storeLock returns the lock that orders the store writes of k's wake
// times: each write is computed from the state at its time, and a later
// one never lands before an earlier one.
func (w *waker) storeLock(k wakeKey) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(w.seed)
	h.WriteString(k.app)
	h.WriteByte(0)
	h.WriteString(k.user)
	h.WriteByte(0)
	h.WriteString(k.device)
	return &w.storeMu[h.Sum64()%uint64(len(w.storeMu))]
}

// recordSent stores k's wake times of the last hour, this one included,
// durably before the push goes out: the hourly cap holds across a crash.
// (Queued for eventLoop's unsynced batch instead, a kill -9 lost the
// latest, and a device got 11 wakes in an hour against a cap of 10.) The
// pool's workers call it concurrently, so their fsyncs are shared.
func (w *waker) recordSent(k wakeKey) error {
	now := w.g.cfg.Clock.Now()
	mu := w.storeLock(k)
	mu.Lock()
	defer mu.Unlock()
	w.mu.Lock()
	st := w.devices[k]
	if st == nil {
		w.mu.Unlock()
		return nil
	}
	st.recent(now)
	sent := st.sent[max(len(st.sent)-wakeCapDefault, 0):] // the largest cap
	ms := make([]int64, len(sent))
	for i, at := range sent {
		ms[i] = at.UnixMilli()
	}
	st.stored = true
	w.mu.Unlock()
	b := w.g.db.NewBatch()
	b.PutWakeTimes(k.app, k.user, k.device, ms)
	return b.Commit(true)
}

func (w *waker) interval(rec *appRecord) time.Duration {
	if rec.Defaults.WakeInterval != nil && *rec.Defaults.WakeInterval > 0 {
		return time.Duration(*rec.Defaults.WakeInterval) * time.Second
	}
	return defaultWakeInterval
}

// finished records a provider's answer (on a pool worker).
// sentAt is when consider counted the wake.
func (w *waker) finished(k wakeKey, reg *queue.PushRegistration, provider string, res wake.Result, sentAt time.Time) {
	ctx := context.Background()
	now := w.g.cfg.Clock.Now()
	w.mu.Lock()
	st := w.devices[k]
	if st == nil {
		w.mu.Unlock()
		return
	}
	st.inFlight = false
	if res.Reason == reasonOnline {
		st.unsend(sentAt) // not sent
		w.mu.Unlock()
		return
	}
	switch res.Outcome {
	case wake.Delivered:
		st.next = now.Add(st.interval)
		st.interval = min(st.interval*2, maxWakeInterval)
		st.backoff = 0
	case wake.RetryAfter:
		// Not delivered: it does not count against the cap. Back off
		// exponentially, and never sooner than the provider asked.
		st.unsend(sentAt)
		st.backoff = min(max(st.backoff*2, time.Second), maxRetryBackoff)
		st.next = now.Add(max(res.RetryAfter, st.backoff))
	case wake.TokenInvalid:
		delete(w.devices, k)
	default:
		st.next = now.Add(st.interval)
		st.interval = min(st.interval*2, maxWakeInterval)
	}
	// A wake counted against the cap was stored before it went out
	// (recordSent); one not sent stays stored until the next, which only
	// errs on the side of the cap.
	if st.answered && res.Outcome != wake.TokenInvalid {
		w.idleLocked(k, st, now) // the device came online meanwhile
	}
	w.mu.Unlock()
	switch res.Outcome {
	case wake.Delivered:
		w.event(&queue.Event{Type: queue.EventWakeSent, App: k.app, User: k.user, Device: k.device, Provider: provider})
	case wake.TokenInvalid:
		w.invalidate(ctx, k, reg, provider, res.Reason)
	case wake.Failed:
		w.log.Warn("wake failed", zapApp(k.app), zap.String("provider", provider), zap.String("reason", res.Reason), zap.Int("status", res.Status))
	}
}

// event queues e for eventLoop.
func (w *waker) event(e *queue.Event) {
	w.evMu.Lock()
	first := len(w.evBuf) == 0 && len(w.dropBuf) == 0
	w.evBuf = append(w.evBuf, e)
	w.evMu.Unlock()
	if first {
		w.kick()
	}
}

func (w *waker) kick() {
	select {
	case w.evKick <- struct{}{}:
	default:
	}
}

// eventLoop appends the queued events, all that gathered since the last
// commit in one, until close (after the pool's last answer), after
// deleting the wake times queued for deletion (deleteStored). Both are
// unsynced: the next synced commit of the store makes them durable.
func (w *waker) eventLoop() {
	defer close(w.evDone)
	for {
		stop := false
		select {
		case <-w.evKick:
		case <-w.evStop:
			stop = true
		}
		w.evMu.Lock()
		es, ws := w.evBuf, w.dropBuf
		w.evBuf, w.dropBuf = nil, nil
		w.evMu.Unlock()
		for k := range ws {
			w.deleteStored(k)
		}
		if err := w.g.q.AppendEvents(context.Background(), es); err != nil {
			w.log.Warn("wake: events", zap.Error(err))
		}
		if stop {
			return
		}
	}
}

// invalidate removes a registration whose token the provider rejected and
// remembers the token.
func (w *waker) invalidate(ctx context.Context, k wakeKey, reg *queue.PushRegistration, provider, reason string) {
	h := storage.Hash(reg.Provider + ":" + reg.Token)
	v, _ := json.Marshal(map[string]any{"provider": reg.Provider, "at": w.g.cfg.Clock.Now().UTC(), "reason": reason})
	b := w.g.db.NewBatch()
	b.PutInvalidToken(k.app, h, v)
	if err := b.Commit(true); err != nil {
		w.log.Error("remember invalid token", zap.Error(err))
	}
	dev := queue.DeviceRef{App: k.app, User: k.user, Device: k.device}
	w.g.q.UpdateDevice(ctx, dev, func(d *queue.Device) *queue.Device {
		if d == nil || d.Push == nil || d.Push.Token != reg.Token {
			return nil // re-registered meanwhile: keep the new one
		}
		d.Push = nil
		return d
	})
	w.g.q.AppendEvent(ctx, &queue.Event{Type: queue.EventTokenInvalid, App: k.app, User: k.user, Device: k.device, Provider: provider, Reason: reason})
}

// loop retries wakes for devices still offline with messages pending, and
// forgets devices that connected or have nothing pending.
func (w *waker) loop() {
	defer close(w.done)
	t := time.NewTicker(wakeTick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		now := w.g.cfg.Clock.Now()
		var due, lost []wakeKey
		w.mu.Lock()
		for k, st := range w.devices {
			if !st.inFlight && !now.Before(st.next) {
				due = append(due, k)
			}
		}
		wall := time.Now() // the sessions' grace is in wall-clock time
		for k, at := range w.lostAt {
			if !wall.Before(at) {
				lost = append(lost, k)
				delete(w.lostAt, k)
			}
		}
		w.mu.Unlock()
		for _, k := range due {
			w.retry(k, now)
		}
		for _, k := range lost {
			w.wakeLost(k)
		}
	}
}

// connected ends k's outstanding wake: the device is online (SPEC 5:
// connecting cancels any pending wake). Its wakes of the last hour stay
// counted against the cap, but the interval it was waiting out is over:
// a message after it goes offline again wakes it at once. Before, the
// state stayed until the retry tick found it due, and a device woken,
// back online and offline again got no wake for up to the interval
// (doubled at every round, up to 30 min).
func (w *waker) connected(k wakeKey) {
	now := w.g.cfg.Clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.devices[k]
	switch {
	case st == nil || st.idle:
	case st.inFlight:
		st.answered = true // finished makes it idle
	default:
		w.idleLocked(k, st, now)
	}
}

// idleLocked makes k's state idle (nothing outstanding), keeping only
// the wakes of the last hour for the cap, or drops it if there are none.
// The caller holds w.mu.
func (w *waker) idleLocked(k wakeKey, st *wakeState, now time.Time) {
	st.recent(now)
	if len(st.sent) > 0 {
		*st = wakeState{idle: true, sent: st.sent, stored: st.stored, next: st.sent[len(st.sent)-1].Add(time.Hour)}
	} else {
		w.dropLocked(k, st)
	}
}

// forget drops the wake state of a deleted user (or of every user of a
// deleted app, user ""): a user or app created again under the same ids
// starts afresh. Their stored wake times went with the store's records.
func (w *waker) forget(app, user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.devices {
		if k.app == app && (user == "" || k.user == user) {
			delete(w.devices, k)
		}
	}
	for k := range w.lostAt {
		if k.app == app && (user == "" || k.user == user) {
			delete(w.lostAt, k)
		}
	}
	if user == "" {
		if p, ok := w.provs[app]; ok {
			p.close()
			delete(w.provs, app)
		}
	}
}

// reconnecting reports whether k's wake waits for the restart grace: the
// gateway started less than RestartWakeGrace ago and k's session was up
// when the previous process ended (its record says Connected, from a bind
// before this start; a session of this process that lost its connection
// has the lost-connection grace instead). It then looks again once the
// grace is over (wakeLost), as for a connection lost.
func (w *waker) reconnecting(k wakeKey) bool {
	grace := w.g.cfg.RestartWakeGrace
	if grace == 0 {
		grace = defaultRestartWakeGrace
	}
	until := w.g.started.Add(grace)
	if grace < 0 || !time.Now().Before(until) {
		return false
	}
	d, err := w.g.q.Device(context.Background(), queue.DeviceRef{App: k.app, User: k.user, Device: k.device})
	if err != nil || !d.Connected || !d.LastSeen.Before(w.g.startedAt) {
		return false
	}
	w.mu.Lock()
	if old, ok := w.lostAt[k]; !ok || until.Before(old) {
		w.lostAt[k] = until
	}
	w.mu.Unlock()
	return true
}

const defaultRestartWakeGrace = 30 * time.Second

// lost notes that k's session lost its connection (or ended) with
// messages unacknowledged, or got one while waiting for resumption: once
// the session's grace for resuming has passed, wakeLost looks again.
// (Wall-clock time: the grace is the session's, not the queue's clock.)
func (w *waker) lost(k wakeKey) {
	at := time.Now().Add(w.g.sessions.LostWakeGrace() + wakeTick)
	w.mu.Lock()
	if old, ok := w.lostAt[k]; !ok || at.Before(old) {
		w.lostAt[k] = at
	}
	w.mu.Unlock()
}

// wakeLost wakes k if it did not come back and messages still wait for it,
// as an enqueue for an offline device would.
func (w *waker) wakeLost(k wakeKey) {
	pending, reg := w.waiting(k)
	if reg == nil {
		return
	}
	prio, expires := wake.PriorityNormal, time.Time{}
	for _, m := range pending {
		if m.Priority == queue.PriorityHigh {
			prio = wake.PriorityHigh
		}
		if m.ExpiresAt.After(expires) {
			expires = m.ExpiresAt
		}
	}
	w.consider(k, reg, prio, expires, len(pending), w.pool.Submit)
}

// waiting returns the messages pending for k (up to 100) and its push
// registration, or a nil registration when a wake has no point: the
// device is live, nothing waits, or it has no registration.
func (w *waker) waiting(k wakeKey) ([]*queue.Message, *queue.PushRegistration) {
	if w.g.live(k.app, k.user, k.device) {
		return nil, nil
	}
	ctx := context.Background()
	dev := queue.DeviceRef{App: k.app, User: k.user, Device: k.device}
	pending, err := w.g.q.Pending(ctx, dev, 0, 100)
	if err != nil || len(pending) == 0 {
		return nil, nil
	}
	d, err := w.g.q.Device(ctx, dev)
	if err != nil || d.Push == nil {
		return nil, nil
	}
	return pending, d.Push
}

func (w *waker) retry(k wakeKey, now time.Time) {
	w.mu.Lock()
	if st := w.devices[k]; st != nil && st.idle {
		// Only kept for the hourly cap: drop it once its last wake is an
		// hour old.
		st.recent(now)
		if len(st.sent) == 0 {
			w.dropLocked(k, st)
		} else {
			st.next = st.sent[len(st.sent)-1].Add(time.Hour)
		}
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	// forget ends the outstanding wake. The wakes of the last hour stay
	// counted (the cap holds across connects); the entry goes once the
	// last of them is an hour old.
	forget := func() {
		w.mu.Lock()
		if st := w.devices[k]; st != nil {
			w.idleLocked(k, st, now)
		}
		w.mu.Unlock()
	}
	pending, reg := w.waiting(k)
	if reg == nil {
		forget() // connected (the wake is answered), nothing pending, or no registration
		return
	}
	w.mu.Lock()
	st := w.devices[k]
	prio, expires := wake.PriorityNormal, time.Time{}
	if st != nil {
		prio, expires = st.priority, st.expires
		if !expires.After(now) {
			expires = pending[0].ExpiresAt
			st.expires = expires
		}
		st.pending = len(pending)
	}
	w.mu.Unlock()
	w.consider(k, reg, prio, expires, 0, w.pool.Submit)
}

// fallback sends a message's SMS through the app's provider
// (queue.FallbackSender), counting outcomes in tether_sms_total.
type fallback struct{ g *Gateway }

var errNoSMS = errors.New("no SMS provider configured")

func (f fallback) SendFallback(ctx context.Context, m *queue.Message) (string, string, error) {
	p := f.g.waker.providers(m.App)
	if p == nil || p.sms == nil {
		f.g.waker.sms.WithLabelValues("none", "failed").Inc()
		return "", errNoSMS.Error(), errNoSMS
	}
	from := ""
	if p.rec.SMS != nil {
		from = p.rec.SMS.From
	}
	provider, detail, err := p.sms.Send(ctx, wake.SMS{To: m.Fallback.To, From: from, Text: m.Fallback.Text, MessageID: m.ID})
	result := "sent"
	if err != nil {
		result = "failed"
		if retry, after := wake.SMSRetryable(err); retry {
			// The queue sends it again later, or records the failure
			// after its last attempt.
			result = "retried"
			err = &queue.TryLaterError{After: after, Err: err}
		}
	}
	f.g.waker.sms.WithLabelValues(p.sms.Provider(), result).Inc()
	return provider, detail, err
}
