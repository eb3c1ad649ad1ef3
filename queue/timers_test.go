package queue_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
)

func TestExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	sink := e.subscribe(t, "alice", "phone")
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "soon gone", Ref: "r1", ExpiresIn: time.Minute})[0]
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), id))

	require.Zero(t, e.runTimers(t, 59*time.Second))
	require.Equal(t, queue.StateSent, e.status(t, id).Status)

	e.clk.Advance(2 * time.Second)
	require.Empty(t, e.pending(t, dev("alice", "phone")), "past expires_at it is not handed out, even before the timer runs")
	require.Equal(t, 1, e.runTimers(t, 0))

	st := e.status(t, id)
	require.Equal(t, queue.StateExpired, st.Status)
	require.Equal(t, "expired", st.Reason)
	require.True(t, st.FinalAt.Equal(start.Add(61*time.Second)))
	require.True(t, e.payloadGone(t, "alice", id))
	require.Zero(t, e.q.Depth())
	require.Empty(t, e.pending(t, dev("alice", "phone")))
	require.Equal(t, []uint64{seqOf(t, id)}, sink.Withdrawn())
	require.Equal(t, []string{"message.sent@phone", "message.expired"}, e.eventsOf(t, id))
	ev := e.waitEvent(t, queue.EventExpired, id)
	require.Equal(t, "r1", ev.Ref)
	require.Equal(t, "alice", ev.User)

	// Too late for an acknowledgement, and nothing fires twice.
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))
	require.Equal(t, queue.StateExpired, e.status(t, id).Status)
	require.Zero(t, e.runTimers(t, time.Hour))
}

func TestAcknowledgedMessageDoesNotExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "x", ExpiresIn: time.Minute})[0]
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))
	require.Equal(t, []string{id}, ids(e.pending(t, dev("alice", "laptop"))))

	e.runTimers(t, 2*time.Minute)
	st := e.status(t, id)
	require.Equal(t, queue.StateDelivered, st.Status, "a device acknowledged it: not expired")
	require.NotContains(t, e.eventsOf(t, id), queue.EventExpired)
	require.True(t, e.payloadGone(t, "alice", id), "the laptop is out of time")
	require.Empty(t, e.pending(t, dev("alice", "laptop")))
	require.Zero(t, e.q.Depth())
}

func TestExpiresInZero(t *testing.T) {
	t.Parallel()
	t.Run("offline", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		res, err := e.q.Enqueue(ctxT(t), &queue.EnqueueRequest{App: app, To: to("alice"), Body: "now or never", Ref: "r0"})
		require.NoError(t, err)
		id := res.Messages[0].ID
		st := e.status(t, id)
		require.Equal(t, queue.StateExpired, st.Status)
		require.Equal(t, "recipient offline", st.Reason)
		require.Zero(t, e.q.Depth())
		require.Empty(t, e.pending(t, dev("alice", "phone")))
		ev := e.waitEvent(t, queue.EventExpired, id)
		require.Equal(t, "recipient offline", ev.Reason)
		require.Equal(t, "r0", ev.Ref)
	})
	t.Run("offline target device", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		e.subscribe(t, "alice", "laptop")
		res, err := e.q.Enqueue(ctxT(t), &queue.EnqueueRequest{App: app, To: to("alice/phone"), Body: "x"})
		require.NoError(t, err)
		require.Equal(t, queue.StateExpired, e.status(t, res.Messages[0].ID).Status)
	})
	t.Run("online", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil)
		sink := e.subscribe(t, "alice", "phone")
		res, err := e.q.Enqueue(ctxT(t), &queue.EnqueueRequest{App: app, To: to("alice", "alice"), Body: "now"})
		require.NoError(t, err)
		acked, unacked := res.Messages[0].ID, res.Messages[1].ID
		require.Equal(t, []string{acked, unacked}, sink.Delivered())
		require.Equal(t, queue.StateEnqueued, e.status(t, acked).Status)
		require.Equal(t, []string{acked, unacked}, ids(e.pending(t, dev("alice", "phone"))))
		require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), acked))

		// The online grace passes without an acknowledgement.
		e.runTimers(t, 31*time.Second)
		require.Equal(t, queue.StateDelivered, e.status(t, acked).Status)
		require.Equal(t, queue.StateExpired, e.status(t, unacked).Status)
		require.Zero(t, e.q.Depth())
	})
}

func TestStatusRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	delivered := e.sendOne(t, "alice", "a")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), delivered))
	cancelled := e.sendOne(t, "alice", "b")
	_, err := e.q.Cancel(ctxT(t), app, cancelled)
	require.NoError(t, err)
	e.clk.Advance(time.Minute)
	expired := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "c", ExpiresIn: time.Minute})[0]
	e.runTimers(t, time.Minute) // expired now: start+2m

	e.runTimers(t, 7*24*time.Hour-2*time.Minute-time.Millisecond)
	for _, id := range []string{delivered, cancelled, expired} {
		require.NotNil(t, e.status(t, id), "kept for 7 days")
	}
	e.runTimers(t, time.Millisecond)
	for _, id := range []string{delivered, cancelled} {
		_, err := e.q.Status(ctxT(t), app, id)
		require.ErrorIs(t, err, queue.ErrNotFound)
	}
	require.NotNil(t, e.status(t, expired), "done two minutes later")
	e.runTimers(t, 2*time.Minute)
	_, err = e.q.Status(ctxT(t), app, expired)
	require.ErrorIs(t, err, queue.ErrNotFound)
}

func TestTrimEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	b := e.db.NewBatch()
	b.PutApp(app, []byte(`{}`))
	require.NoError(t, b.Commit(true))
	old := e.sendOne(t, "alice", "old")
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), old))
	e.clk.Advance(6 * 24 * time.Hour)
	recent := e.sendOne(t, "alice", "recent")
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), recent))

	e.clk.Advance(24*time.Hour + time.Second)
	require.NoError(t, e.q.TrimEvents())
	evs := e.events(t)
	require.Len(t, evs, 1, "events older than 7 days are dropped")
	require.Equal(t, recent, evs[0].MessageID)
}

// fakeSMS is an in-process FallbackSender that records its calls. onSend,
// if set, runs inside SendFallback.
type fakeSMS struct {
	provider, detail string
	err              error
	onSend           func(m *queue.Message)
	errs             []error // the answers of the first calls, then err

	mu    sync.Mutex
	calls []queue.Message
}

func (f *fakeSMS) SendFallback(ctx context.Context, m *queue.Message) (string, string, error) {
	if f.onSend != nil {
		f.onSend(m)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, *m)
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return f.provider, f.detail, err
	}
	return f.provider, f.detail, f.err
}

func (f *fakeSMS) Calls() []queue.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func TestSMSFallback(t *testing.T) {
	t.Parallel()
	sms := &fakeSMS{provider: "http", detail: "202 accepted"}
	var e *env
	var atSend struct {
		sync.Mutex
		pending   int
		withdrawn []uint64
		status    queue.State
	}
	var sink *fakeSink
	sms.onSend = func(m *queue.Message) {
		// Runs on the sender goroutine: record, assert later.
		atSend.Lock()
		defer atSend.Unlock()
		msgs, err := e.q.Pending(context.Background(), dev("alice", "phone"), 0, 0)
		if err == nil {
			atSend.pending = len(msgs)
		}
		atSend.withdrawn = sink.Withdrawn()
		if st, err := e.q.Status(context.Background(), app, m.ID); err == nil {
			atSend.status = st.Status
		}
	}
	e = newEnv(t, func(c *queue.Config) { c.Fallback = sms })
	sink = e.subscribe(t, "alice", "phone")
	id := e.send(t, queue.EnqueueRequest{
		To: to("alice"), Body: "code 1234", Ref: "r-sms", ExpiresIn: time.Hour,
		Fallback: &queue.SMSFallback{To: "+393331234567", After: 60},
	})[0]
	st := e.status(t, id)
	require.Equal(t, &queue.FallbackInfo{To: "+393331234567", Status: "pending"}, st.Fallback)

	e.runTimers(t, 59*time.Second)
	require.Equal(t, []string{id}, ids(e.pending(t, dev("alice", "phone"))))
	require.Empty(t, sms.Calls())

	e.runTimers(t, time.Second)
	// Withdrawn durably, and sessions told, before the provider is called.
	require.Equal(t, []uint64{seqOf(t, id)}, sink.Withdrawn())
	require.Empty(t, e.pending(t, dev("alice", "phone")))
	require.True(t, e.payloadGone(t, "alice", id))
	require.Zero(t, e.q.Depth())

	ev := e.waitEvent(t, queue.EventFallbackSent, id)
	require.Equal(t, "r-sms", ev.Ref)
	require.NotNil(t, ev.Fallback)
	require.Equal(t, "sent", ev.Fallback.Status)
	require.Equal(t, "http", ev.Fallback.Provider)

	atSend.Lock()
	defer atSend.Unlock()
	require.Zero(t, atSend.pending, "no device could still take it when the SMS went out")
	require.Equal(t, []uint64{seqOf(t, id)}, atSend.withdrawn)
	require.Equal(t, queue.StateEnqueued, atSend.status)
	calls := sms.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, id, calls[0].ID)
	require.Equal(t, "+393331234567", calls[0].Fallback.To)
	require.Equal(t, "code 1234", calls[0].Fallback.Text, "no text: the body")

	st = e.status(t, id)
	require.Equal(t, queue.StateFallbackSent, st.Status)
	require.Equal(t, "sent", st.Fallback.Status)
	require.Equal(t, "http", st.Fallback.Provider)
	require.Equal(t, "202 accepted", st.Fallback.Detail)
	require.Empty(t, st.SMSText, "the SMS text is not kept once handed over")

	// Nothing more happens: no retry, no expiry.
	e.runTimers(t, 2*time.Hour)
	require.Len(t, sms.Calls(), 1)
	require.Equal(t, queue.StateFallbackSent, e.status(t, id).Status)
	require.Len(t, e.eventsOf(t, id), 1)
}

func TestSMSFallbackOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		sender     *fakeSMS // nil: no provider
		fb         queue.SMSFallback
		advance    time.Duration
		wantState  queue.State
		wantDetail string
		wantText   string
	}{
		{"failing provider", &fakeSMS{provider: "vonage", detail: "402 insufficient balance", err: errors.New("sms: 402")},
			queue.SMSFallback{To: "+1", After: 60}, time.Minute, queue.StateFallbackFailed, "402 insufficient balance", "body"},
		{"failing provider without detail", &fakeSMS{provider: "http", err: errors.New("dial tcp: refused")},
			queue.SMSFallback{To: "+1", After: 60}, time.Minute, queue.StateFallbackFailed, "dial tcp: refused", "body"},
		{"no provider", nil, queue.SMSFallback{To: "+1", After: 60}, time.Minute, queue.StateFallbackFailed, "no SMS provider configured", ""},
		{"at expiry by default", &fakeSMS{provider: "http"}, queue.SMSFallback{To: "+1", Text: "sms text"}, time.Hour, queue.StateFallbackSent, "", "sms text"},
		{"after past expiry means at expiry", &fakeSMS{provider: "http"}, queue.SMSFallback{To: "+1", After: 7200}, time.Hour, queue.StateFallbackSent, "", "body"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *queue.Config) {
				if tc.sender != nil {
					c.Fallback = tc.sender
				}
			})
			fb := tc.fb
			id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "body", ExpiresIn: time.Hour, Fallback: &fb})[0]
			e.runTimers(t, tc.advance-time.Millisecond)
			require.Equal(t, queue.StateEnqueued, e.status(t, id).Status)
			e.runTimers(t, time.Millisecond)

			typ := queue.EventFallbackSent
			if tc.wantState == queue.StateFallbackFailed {
				typ = queue.EventFallbackFailed
			}
			ev := e.waitEvent(t, typ, id)
			st := e.status(t, id)
			require.Equal(t, tc.wantState, st.Status)
			require.Equal(t, tc.wantDetail, st.Fallback.Detail)
			require.Equal(t, tc.wantDetail, ev.Fallback.Detail)
			require.NotContains(t, e.eventsOf(t, id), queue.EventExpired, "exactly one final state")
			if tc.wantState == queue.StateFallbackFailed {
				require.Equal(t, "failed", st.Fallback.Status)
				require.Equal(t, tc.wantDetail, st.Reason)
			}
			if tc.sender != nil {
				calls := tc.sender.Calls()
				require.Len(t, calls, 1)
				require.Equal(t, tc.wantText, calls[0].Fallback.Text)
			}
		})
	}
}

func TestNoFallbackOnceDelivered(t *testing.T) {
	t.Parallel()
	sms := &fakeSMS{provider: "http"}
	e := newEnv(t, func(c *queue.Config) { c.Fallback = sms })
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "x", ExpiresIn: time.Hour,
		Fallback: &queue.SMSFallback{To: "+1", After: 60}})[0]
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))

	e.runTimers(t, time.Minute)
	require.NoError(t, e.q.Close()) // waits for any SMS in flight
	require.Empty(t, sms.Calls())
	require.Equal(t, queue.StateDelivered, e.status(t, id).Status)
	// The fallback deadline does not cut the laptop off: it has until expiry.
	require.Equal(t, []string{id}, ids(e.pending(t, dev("alice", "laptop"))))
	require.False(t, e.payloadGone(t, "alice", id))
	require.EqualValues(t, 1, e.q.Depth())
}

// TestManyFallbacksForOneUser fires more fallbacks for one user at once than
// may be in flight, with a provider that holds every send until released.
// The timer goroutine must not wait for a send slot while it holds the
// user's lock: the sends in flight need that lock to finish.
func TestManyFallbacksForOneUser(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 100)
	release := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(release) })
	defer releaseAll() // before the cleanup's Close waits for the senders
	sms := &fakeSMS{provider: "http", onSend: func(*queue.Message) {
		started <- struct{}{}
		<-release
	}}
	e := newEnv(t, func(c *queue.Config) { c.Fallback = sms })
	n := queue.MaxFallbacks + 4
	var sent []string
	for range n {
		sent = append(sent, e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "x", ExpiresIn: time.Hour,
			Fallback: &queue.SMSFallback{To: "+1", After: 60}})[0])
	}
	e.clk.Advance(time.Minute)
	ran := make(chan error, 1)
	go func() {
		_, err := e.q.RunTimers(context.Background())
		ran <- err
	}()
	timeout := time.After(20 * time.Second)
	for range queue.MaxFallbacks {
		select {
		case <-started:
		case <-timeout:
			t.Fatal("the provider was not called")
		}
	}
	releaseAll()
	select {
	case err := <-ran:
		require.NoError(t, err)
	case <-timeout:
		t.Fatal("RunTimers deadlocked with the SMS sends in flight")
	}
	require.NoError(t, e.q.Close())
	require.Len(t, sms.Calls(), n)
	for _, id := range sent {
		require.Equal(t, queue.StateFallbackSent, e.status(t, id).Status)
	}
}

func TestCancelDuringSMSHandOff(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(release) })
	defer releaseAll() // before the cleanup's Close waits for the sender
	started := make(chan struct{}, 1)
	sms := &fakeSMS{provider: "http", onSend: func(*queue.Message) {
		started <- struct{}{}
		<-release
	}}
	e, id := fallbackFired(t, sms, "code")
	<-started

	_, err := e.q.Cancel(ctxT(t), app, id)
	require.ErrorIs(t, err, queue.ErrHandingOver, "the SMS is already on its way")
	releaseAll()
	e.waitEvent(t, queue.EventFallbackSent, id)

	e.runTimers(t, 10*time.Minute) // past the hand-off retry time
	require.NoError(t, e.q.Close())
	require.Len(t, sms.Calls(), 1, "one SMS")
	require.Equal(t, queue.StateFallbackSent, e.status(t, id).Status)
	require.Equal(t, []string{queue.EventFallbackSent}, e.eventsOf(t, id))
}

// TestCancelBetweenSMSRetries: while the SMS waits for its next attempt
// (the provider asked to be tried later), the backend may still cancel the
// message: no more attempts, status cancelled, fallback "cancelled" with
// the attempts made, one message.cancelled event.
func TestCancelBetweenSMSRetries(t *testing.T) {
	t.Parallel()
	sms := &fakeSMS{provider: "http", detail: "HTTP 503", err: &queue.TryLaterError{Err: errors.New("HTTP 503")}}
	e, id := fallbackFired(t, sms, "code")
	e.waitAttempts(t, id, 1)

	st, err := e.q.Cancel(ctxT(t), app, id)
	require.NoError(t, err)
	require.Equal(t, queue.StateCancelled, st.Status)
	require.Equal(t, "cancelled", st.Fallback.Status)
	require.Equal(t, 1, st.Fallback.Attempts)
	_, err = e.q.Cancel(ctxT(t), app, id)
	require.ErrorIs(t, err, queue.ErrFinal, "cancelled once")

	e.runTimers(t, 2*time.Hour) // past every retry and the expiry
	require.NoError(t, e.q.Close())
	require.Len(t, sms.Calls(), 1, "no attempt after the cancel")
	st = e.status(t, id)
	require.Equal(t, queue.StateCancelled, st.Status)
	require.Equal(t, "cancelled", st.Fallback.Status)
	require.Equal(t, []string{queue.EventCancelled}, e.eventsOf(t, id))
}

// fallbackFired sends body to alice with an SMS fallback after a minute
// (expiring in an hour) over a queue handing SMS to sms, and moves the
// clock to the fallback's deadline: the first hand-off starts.
func fallbackFired(t *testing.T, sms *fakeSMS, body string) (*env, string) {
	t.Helper()
	e := newEnv(t, func(c *queue.Config) { c.Fallback = sms })
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: body, ExpiresIn: time.Hour,
		Fallback: &queue.SMSFallback{To: "+1", After: 60}})[0]
	e.runTimers(t, time.Minute)
	return e, id
}

// waitAttempts waits until the status record of id shows n SMS attempts.
func (e *env) waitAttempts(t *testing.T, id string, n int) *queue.Status {
	t.Helper()
	var st *queue.Status
	require.Eventually(t, func() bool {
		st = e.status(t, id)
		return st.Fallback != nil && st.Fallback.Attempts == n
	}, 5*time.Second, 5*time.Millisecond, "attempt %d recorded", n)
	return st
}

// TestSMSFallbackTryLater: a provider that is down or throttling gets the
// same SMS again, 15 s then 30 s later (or after its Retry-After when that
// is longer); meanwhile the backend sees the fallback "sending" with the
// attempts and the last answer, and one fallback_sent event at the end.
func TestSMSFallbackTryLater(t *testing.T) {
	t.Parallel()
	busy := &queue.TryLaterError{Err: errors.New("HTTP 503")}
	throttled := &queue.TryLaterError{After: 3 * time.Minute, Err: errors.New("HTTP 429")}
	sms := &fakeSMS{provider: "http", detail: "HTTP 503", errs: []error{busy, throttled}}
	e, id := fallbackFired(t, sms, "code 1234")
	st := e.waitAttempts(t, id, 1)
	require.Equal(t, queue.FallbackWaiting, st.Fallback.Status, "waiting for the next attempt")
	require.Equal(t, "sending", st.Fallback.PublicStatus())
	require.Equal(t, "HTTP 503", st.Fallback.Detail)
	require.Equal(t, queue.StateEnqueued, st.Status, "not final while retrying")
	require.Empty(t, e.pending(t, dev("alice", "phone")), "withdrawn from the devices")

	e.runTimers(t, 15*time.Second-time.Millisecond)
	require.Len(t, sms.Calls(), 1, "not before 15 s")
	e.runTimers(t, time.Millisecond)
	e.waitAttempts(t, id, 2)
	require.Len(t, sms.Calls(), 2)

	// The second answer asked for 3 minutes, more than the 30 s backoff.
	e.runTimers(t, 3*time.Minute-time.Millisecond)
	require.Len(t, sms.Calls(), 2, "Retry-After respected")
	e.runTimers(t, time.Millisecond)
	e.waitEvent(t, queue.EventFallbackSent, id)
	st = e.status(t, id)
	require.Equal(t, queue.StateFallbackSent, st.Status)
	require.Equal(t, "sent", st.Fallback.Status)
	require.Equal(t, 3, st.Fallback.Attempts)
	calls := sms.Calls()
	require.Len(t, calls, 3)
	for _, c := range calls {
		require.Equal(t, id, c.ID, "the same message id each time")
		require.Equal(t, "code 1234", c.Fallback.Text)
	}
	e.runTimers(t, time.Hour)
	require.Len(t, sms.Calls(), 3, "nothing after success")
	require.Equal(t, []string{queue.EventFallbackSent}, e.eventsOf(t, id))
}

// TestSMSFallbackTryLaterGivesUp: a provider that never takes the SMS gets
// six attempts over about eight minutes, then the message is
// fallback_failed with the last answer; a refusal (not "try later") fails
// at the first.
func TestSMSFallbackTryLaterGivesUp(t *testing.T) {
	t.Parallel()
	sms := &fakeSMS{provider: "http", detail: "unreachable", err: &queue.TryLaterError{Err: errors.New("dial tcp: refused")}}
	e, id := fallbackFired(t, sms, "code")
	e.waitAttempts(t, id, 1)
	for i, wait := range []time.Duration{15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute} {
		e.runTimers(t, wait)
		e.waitAttempts(t, id, i+2)
	}
	e.runTimers(t, 4*time.Minute)
	ev := e.waitEvent(t, queue.EventFallbackFailed, id)
	require.Equal(t, "unreachable", ev.Fallback.Detail)
	st := e.status(t, id)
	require.Equal(t, queue.StateFallbackFailed, st.Status)
	require.Equal(t, "failed", st.Fallback.Status)
	require.Equal(t, 6, st.Fallback.Attempts)
	e.runTimers(t, 2*time.Hour)
	require.Len(t, sms.Calls(), 6)
	require.Equal(t, []string{queue.EventFallbackFailed}, e.eventsOf(t, id))
}
