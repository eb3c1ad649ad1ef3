package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/internal/clock"
	"tether/queue"
	"tether/storage"
)

const app = "acme"

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is a queue over a real in-memory Pebble store, driven by a manual
// clock: tests call RunTimers instead of sleeping.
type env struct {
	q   *queue.Queue
	db  *storage.DB
	clk *clock.Manual
}

// newEnv opens a queue; cfg (may be nil) adjusts its config.
func newEnv(t testing.TB, cfg func(*queue.Config)) *env {
	t.Helper()
	db, err := storage.Open("mem", storage.Options{InMemory: true, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	return newEnvOn(t, db, cfg)
}

func newEnvOn(t testing.TB, db *storage.DB, cfg func(*queue.Config)) *env {
	t.Helper()
	clk := clock.NewManual(start)
	c := queue.Config{DB: db, Clock: clk, TimerInterval: -1}
	if cfg != nil {
		cfg(&c)
	}
	q, err := queue.New(c)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, q.Close())
		if err := db.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close store: %v", err)
		}
	})
	return &env{q: q, db: db, clk: clk}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func to(rs ...string) []queue.Recipient {
	out := make([]queue.Recipient, len(rs))
	for i, r := range rs {
		u, d, _ := cutSlash(r)
		out[i] = queue.Recipient{User: u, Device: d}
	}
	return out
}

func cutSlash(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// send enqueues req (App defaults to app, ExpiresIn to one hour: tests of
// expires_in 0 call Enqueue themselves) and returns the ids.
func (e *env) send(t testing.TB, req queue.EnqueueRequest) []string {
	t.Helper()
	if req.App == "" {
		req.App = app
	}
	if req.ExpiresIn == 0 {
		req.ExpiresIn = time.Hour
	}
	res, err := e.q.Enqueue(ctxT(t), &req)
	require.NoError(t, err)
	require.Len(t, res.Messages, len(req.To))
	ids := make([]string, len(res.Messages))
	for i, m := range res.Messages {
		require.Equal(t, req.To[i].String(), m.To)
		require.Equal(t, queue.StateEnqueued, m.Status)
		require.Len(t, m.ID, queue.IDLen)
		ids[i] = m.ID
	}
	return ids
}

func (e *env) sendOne(t testing.TB, toUser, body string) string {
	t.Helper()
	return e.send(t, queue.EnqueueRequest{To: to(toUser), Body: body})[0]
}

func dev(user, device string) queue.DeviceRef {
	return queue.DeviceRef{App: app, User: user, Device: device}
}

// addDevice creates a device record, so the device is one the user's
// messages wait for.
func (e *env) addDevice(t testing.TB, user, device string) {
	t.Helper()
	created, err := e.q.UpdateDevice(ctxT(t), dev(user, device), func(d *queue.Device) *queue.Device {
		if d == nil {
			d = &queue.Device{Transport: "xmpp"}
		}
		return d
	})
	require.NoError(t, err)
	require.True(t, created)
}

func (e *env) pending(t testing.TB, d queue.DeviceRef) []*queue.Message {
	t.Helper()
	msgs, err := e.q.Pending(ctxT(t), d, 0, 0)
	require.NoError(t, err)
	return msgs
}

func ids(msgs []*queue.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func (e *env) status(t testing.TB, id string) *queue.Status {
	t.Helper()
	st, err := e.q.Status(ctxT(t), app, id)
	require.NoError(t, err)
	return st
}

func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	s, err := queue.ParseMessageID(id)
	require.NoError(t, err)
	return s
}

// payloadGone reports whether the message's payload left the store.
func (e *env) payloadGone(t testing.TB, user, id string) bool {
	t.Helper()
	_, err := e.db.GetMessage(app, user, seqOf(t, id))
	if errors.Is(err, storage.ErrNotFound) {
		return true
	}
	require.NoError(t, err)
	return false
}

// runTimers advances the clock by d and fires the due timers.
func (e *env) runTimers(t testing.TB, d time.Duration) int {
	t.Helper()
	e.clk.Advance(d)
	n, err := e.q.RunTimers(ctxT(t))
	require.NoError(t, err)
	return n
}

// events returns every event of app in the feed (no wait).
func (e *env) events(t testing.TB) []queue.Event {
	t.Helper()
	raw, _, err := e.q.Events(ctxT(t), app, 0, 10000, 0)
	require.NoError(t, err)
	return decodeEvents(t, raw)
}

func decodeEvents(t testing.TB, raw []json.RawMessage) []queue.Event {
	t.Helper()
	out := make([]queue.Event, len(raw))
	for i, r := range raw {
		require.NoError(t, json.Unmarshal(r, &out[i]))
	}
	return out
}

// eventsOf returns the events about message id, as "type" or
// "type@device".
func (e *env) eventsOf(t testing.TB, id string) []string {
	t.Helper()
	var out []string
	for _, ev := range e.events(t) {
		if ev.MessageID != id {
			continue
		}
		s := ev.Type
		if ev.Device != "" {
			s += "@" + ev.Device
		}
		out = append(out, s)
	}
	return out
}

// waitEvent long-polls the feed until an event of type typ about message
// id appears, and returns it.
func (e *env) waitEvent(t testing.TB, typ, id string) queue.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var after uint64
	for {
		raw, next, err := e.q.Events(ctx, app, after, 1000, 10*time.Second)
		require.NoError(t, err)
		for _, ev := range decodeEvents(t, raw) {
			if ev.Type == typ && ev.MessageID == id {
				return ev
			}
		}
		require.NoError(t, ctx.Err(), "no %s event for %s", typ, id)
		after = next
	}
}

// fakeSink records what a live session would get. With write set, it
// takes the direct writes it is offered and calls write from them.
type fakeSink struct {
	mu        sync.Mutex
	delivered []string
	withdrawn []uint64
	offered   []bool // per delivery: whether the write was offered
	write     func()
}

func (s *fakeSink) Deliver(m *queue.Message, direct bool) queue.Writer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delivered = append(s.delivered, m.ID)
	s.offered = append(s.offered, direct)
	if direct && s.write != nil {
		return s
	}
	return nil
}

func (s *fakeSink) WriteQueued() { s.write() }

func (s *fakeSink) Withdraw(seq uint64) {
	s.mu.Lock()
	s.withdrawn = append(s.withdrawn, seq)
	s.mu.Unlock()
}

func (s *fakeSink) Delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.delivered)
}

func (s *fakeSink) Withdrawn() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.withdrawn)
}

func (e *env) subscribe(t testing.TB, user, device string) *fakeSink {
	t.Helper()
	s := &fakeSink{}
	sub := e.q.Subscribe(app, user, device, s)
	t.Cleanup(sub.Close)
	return s
}

func openDisk(dir string) (*storage.DB, error) {
	return storage.Open(dir, storage.Options{CacheSize: 4 << 20, MemTableSize: 4 << 20})
}
