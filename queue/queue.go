package queue

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"tether/internal/clock"
	"tether/storage"
)

// Config configures a Queue. New copies it; zero values are defaults.
type Config struct {
	// DB is the store. Required.
	DB *storage.DB
	// Clock drives expiry and timestamps. Nil means the wall clock.
	Clock clock.Clock
	// Logger. Nil means no logging.
	Logger *zap.Logger
	// TimerInterval is how often due timers (expiry, fallback, clean-up)
	// are processed. Zero value means 200 ms. Negative disables the
	// background loop (tests call RunTimers).
	TimerInterval time.Duration
	// StatusRetention is how long status records stay after a message is
	// done. Zero value means 7 days.
	StatusRetention time.Duration
	// EventRetention is how long events stay in the feed. Zero value means
	// 7 days.
	EventRetention time.Duration
	// DeferTimers keeps New from starting the timer loop: the caller
	// calls StartTimers once what the timers call (Fallback) is ready.
	DeferTimers bool
	// IdempotencyWindow is how long an idempotency key is remembered. Zero
	// value means 24 hours.
	IdempotencyWindow time.Duration
	// DeviceStale is how long a device may go unseen before it stops being
	// a known device that messages wait for. Zero value means 30 days.
	DeviceStale time.Duration
	// OnlineGrace is the life given to an expires_in 0 message that found
	// its device online, for the device to acknowledge it. Zero value
	// means 30 s.
	OnlineGrace time.Duration
	// Fallback sends the SMS of a message whose fallback deadline passed.
	// Nil means every fallback fails with reason "no SMS provider".
	Fallback FallbackSender
}

const (
	defaultTimerInterval     = 200 * time.Millisecond
	defaultStatusRetention   = 7 * 24 * time.Hour
	defaultEventRetention    = 7 * 24 * time.Hour
	defaultIdempotencyWindow = 24 * time.Hour
	defaultDeviceStale       = 30 * 24 * time.Hour
	defaultOnlineGrace       = 30 * time.Second
	lockStripes              = 4096
)

func (c *Config) setDefaults() {
	c.Clock = clock.Or(c.Clock)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.TimerInterval == 0 {
		c.TimerInterval = defaultTimerInterval
	}
	if c.StatusRetention == 0 {
		c.StatusRetention = defaultStatusRetention
	}
	if c.EventRetention == 0 {
		c.EventRetention = defaultEventRetention
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = defaultIdempotencyWindow
	}
	if c.DeviceStale == 0 {
		c.DeviceStale = defaultDeviceStale
	}
	if c.OnlineGrace == 0 {
		c.OnlineGrace = defaultOnlineGrace
	}
}

// FallbackSender hands a message's SMS to the app's provider. It is called
// after the message was durably withdrawn from every device queue, from the
// queue's timer goroutine: it should not block for long.
type FallbackSender interface {
	SendFallback(ctx context.Context, m *Message) (provider, detail string, err error)
}

// Sink receives messages for a live session. Both methods are called from
// the goroutine that changed the queue (Deliver under the user's lock) and
// must not block: a session only enqueues into its outbound buffer.
type Sink interface {
	// Deliver hands over a message newly enqueued for the session's device.
	// With direct set, the caller offers its own goroutine for the write:
	// the sink may return a Writer, which the caller then runs once, soon
	// and outside its locks (Enqueue does, for the first few deliveries of
	// a POST). Otherwise, and when it returns nil, the sink writes on its
	// own.
	Deliver(m *Message, direct bool) Writer
	// Withdraw tells the session that message seq is no longer to be
	// delivered (another device took it, or it expired or was cancelled).
	Withdraw(seq uint64)
}

// Queue is the set of per-recipient durable queues. All methods are safe for
// concurrent use.
//
// Every change to one user's queue runs under that user's lock (a striped
// mutex), so sequence allocation, commit and the hand-off to live sessions
// happen in enqueue order per user. Locks of several users are taken in
// stripe order; the lock order is stripe locks, then the subscription
// shard, then the event notifier. The mutexes of the status and device
// cache shards are leaves: nothing is locked while one is held.
type Queue struct {
	depth atomic.Int64 // messages in all logs

	cfg   Config
	db    *storage.DB
	clk   clock.Clock
	log   *zap.Logger
	seed  maphash.Seed
	locks [lockStripes]sync.Mutex
	idem  [idemStripes]sync.Mutex
	subs  subscriptions
	feed  notifier
	gate  eventGate
	m     *metrics
	stats statusCache
	devs  deviceCache

	fbOnce sync.Once
	fbSem  chan struct{}

	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
}

// New opens the queue over cfg.DB and starts its timer loop.
func New(cfg Config) (*Queue, error) {
	cfg.setDefaults()
	q := &Queue{
		cfg:  cfg,
		db:   cfg.DB,
		clk:  cfg.Clock,
		log:  cfg.Logger,
		seed: maphash.MakeSeed(),
		stop: make(chan struct{}),
		m:    newMetrics(),
	}
	q.subs.init()
	q.feed.init()
	n, err := q.db.CountMessages()
	if err != nil {
		return nil, err
	}
	q.depth.Store(n)
	if !cfg.DeferTimers {
		q.StartTimers()
	}
	return q, nil
}

// StartTimers starts the timer loop (expiry, fallback, clean-up) if
// TimerInterval is positive; New does, unless Config.DeferTimers. Call it
// once.
func (q *Queue) StartTimers() {
	if q.cfg.TimerInterval > 0 {
		q.wg.Add(1)
		go q.timerLoop()
	}
}

// Close stops the timer loop and waits for it. It does not close the store.
// Idempotent.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		close(q.stop)
		q.feed.closeAll()
	})
	q.wg.Wait()
	return nil
}

// Depth returns the number of messages waiting in all queues.
func (q *Queue) Depth() int64 { return q.depth.Load() }

func (q *Queue) now() time.Time { return q.clk.Now().UTC() }

// Now is the time on the queue's clock, the one expiry is measured on.
func (q *Queue) Now() time.Time { return q.now() }

func (q *Queue) stripe(app, user string) int {
	var h maphash.Hash
	h.SetSeed(q.seed)
	h.WriteString(app)
	h.WriteByte(0)
	h.WriteString(user)
	return int(h.Sum64() % lockStripes)
}

// lockUser takes the lock of app/user and returns its unlock.
func (q *Queue) lockUser(app, user string) func() {
	mu := &q.locks[q.stripe(app, user)]
	mu.Lock()
	return mu.Unlock
}

// lockUsers takes the locks of several users of app, in stripe order.
func (q *Queue) lockUsers(app string, users []string) func() {
	idx := make([]int, 0, len(users))
	for _, u := range users {
		idx = append(idx, q.stripe(app, u))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		q.locks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			q.locks[i].Unlock()
		}
	}
}

// --- subscriptions ----------------------------------------------------------

const subShards = 64

type subKey struct{ app, user string }

type subscriber struct {
	device string
	sink   Sink
}

type subscriptions struct {
	seed   maphash.Seed
	shards [subShards]struct {
		mu sync.RWMutex
		m  map[subKey][]*subscriber
	}
}

func (s *subscriptions) init() {
	s.seed = maphash.MakeSeed()
	for i := range s.shards {
		s.shards[i].m = make(map[subKey][]*subscriber)
	}
}

func (s *subscriptions) shard(k subKey) int {
	return int(maphash.String(s.seed, k.app+"\x00"+k.user) % subShards)
}

// Subscription is a live session's registration for a user's new messages.
type Subscription struct {
	q   *Queue
	k   subKey
	sub *subscriber
}

// Subscribe registers sink for the messages newly enqueued for device of
// app/user (messages to the user and to that device). It does not replay
// pending messages: call Pending after Subscribe, and drop repeats by
// sequence number. Safe for concurrent use; does not block.
func (q *Queue) Subscribe(app, user, device string, sink Sink) *Subscription {
	k := subKey{app, user}
	sub := &subscriber{device: device, sink: sink}
	sh := &q.subs.shards[q.subs.shard(k)]
	sh.mu.Lock()
	sh.m[k] = append(sh.m[k], sub)
	sh.mu.Unlock()
	return &Subscription{q: q, k: k, sub: sub}
}

// Close ends the subscription. Idempotent.
func (s *Subscription) Close() {
	sh := &s.q.subs.shards[s.q.subs.shard(s.k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[s.k]
	for i, x := range list {
		if x == s.sub {
			list = slices.Delete(slices.Clone(list), i, i+1)
			break
		}
	}
	if len(list) == 0 {
		delete(sh.m, s.k)
	} else {
		sh.m[s.k] = list
	}
}

// Online reports whether device of app/user has a live subscription; with
// device empty, whether any device of the user has one.
func (q *Queue) Online(app, user, device string) bool {
	k := subKey{app, user}
	sh := &q.subs.shards[q.subs.shard(k)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for _, s := range sh.m[k] {
		if device == "" || s.device == device {
			return true
		}
	}
	return false
}

// onlineDevices returns the devices of app/user with a live session (only
// device, if it is not empty).
func (q *Queue) onlineDevices(app, user, device string) []string {
	k := subKey{app, user}
	sh := &q.subs.shards[q.subs.shard(k)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var out []string
	for _, s := range sh.m[k] {
		if (device == "" || s.device == device) && !slices.Contains(out, s.device) {
			out = append(out, s.device)
		}
	}
	return out
}

// A Writer writes what a Sink queued, on the goroutine that calls it.
type Writer interface{ WriteQueued() }

// maxDirectWrites is how many deliveries of one Enqueue are written on the
// caller's goroutine (see Sink.Deliver): a message to a user's devices
// goes out right after its commit, rather than after a hand-off to
// another goroutine, which waits for a CPU behind everything runnable
// (on a busy gateway, milliseconds at the median). A fan-out beyond this
// is handed off, so the 202 does not wait for its writes.
const maxDirectWrites = 4

// deliver hands m to the live sessions it is for. It appends to direct
// the writes the sinks left to the caller, while there is room.
func (q *Queue) deliver(m *Message, direct []Writer) []Writer {
	k := subKey{m.App, m.User}
	sh := &q.subs.shards[q.subs.shard(k)]
	sh.mu.RLock()
	list := sh.m[k]
	sh.mu.RUnlock()
	for _, s := range list {
		if m.Device == "" || m.Device == s.device {
			if w := s.sink.Deliver(m, len(direct) < cap(direct)); w != nil {
				direct = append(direct, w)
			}
		}
	}
	return direct
}

// withdraw tells the live sessions of app/user, except device skip, that seq
// is withdrawn.
func (q *Queue) withdraw(app, user, skip string, seq uint64) {
	k := subKey{app, user}
	sh := &q.subs.shards[q.subs.shard(k)]
	sh.mu.RLock()
	list := sh.m[k]
	sh.mu.RUnlock()
	for _, s := range list {
		if s.device != skip {
			s.sink.Withdraw(seq)
		}
	}
}

// --- event feed notification ---------------------------------------------

// notifier wakes long-polling event readers of an app without polling the
// store: each app has a channel that is closed and replaced when events are
// appended.
type notifier struct {
	mu     sync.Mutex
	ch     map[string]chan struct{}
	closed bool
}

func (n *notifier) init() { n.ch = make(map[string]chan struct{}) }

func (n *notifier) wait(app string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c := make(chan struct{})
		close(c)
		return c
	}
	c, ok := n.ch[app]
	if !ok {
		c = make(chan struct{})
		n.ch[app] = c
	}
	return c
}

func (n *notifier) notify(app string) {
	n.mu.Lock()
	if c, ok := n.ch[app]; ok {
		close(c)
		delete(n.ch, app)
	}
	n.mu.Unlock()
}

func (n *notifier) closeAll() {
	n.mu.Lock()
	n.closed = true
	for app, c := range n.ch {
		close(c)
		delete(n.ch, app)
	}
	n.mu.Unlock()
}
