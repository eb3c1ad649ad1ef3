package queue_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
	"tether/storage"
)

func TestEnqueueInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	many := make([]queue.Recipient, queue.MaxRecipients+1)
	for i := range many {
		many[i] = queue.Recipient{User: fmt.Sprintf("u%d", i)}
	}
	for _, tc := range []struct {
		name string
		req  queue.EnqueueRequest
	}{
		{"no recipients", queue.EnqueueRequest{App: app, Body: "x", ExpiresIn: time.Hour}},
		{"too many recipients", queue.EnqueueRequest{App: app, To: many, Body: "x", ExpiresIn: time.Hour}},
		{"negative expiry", queue.EnqueueRequest{App: app, To: to("alice"), Body: "x", ExpiresIn: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.q.Enqueue(ctxT(t), &tc.req)
			require.ErrorIs(t, err, queue.ErrInvalid)
		})
	}
	require.Zero(t, e.q.Depth())
	require.Zero(t, e.db.LastSeq(), "nothing allocated")
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	sink := e.subscribe(t, "alice", "phone")
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "x", Ref: "r9"})[0]
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), id))

	st, err := e.q.Cancel(ctxT(t), app, id)
	require.NoError(t, err)
	require.Equal(t, queue.StateCancelled, st.Status)
	st = e.status(t, id)
	require.Equal(t, queue.StateCancelled, st.Status)
	require.True(t, st.FinalAt.Equal(start))
	require.Empty(t, e.pending(t, dev("alice", "phone")))
	require.True(t, e.payloadGone(t, "alice", id))
	require.Zero(t, e.q.Depth())
	require.Equal(t, []uint64{seqOf(t, id)}, sink.Withdrawn())
	ev := e.waitEvent(t, queue.EventCancelled, id)
	require.Equal(t, "r9", ev.Ref)

	st, err = e.q.Cancel(ctxT(t), app, id)
	require.ErrorIs(t, err, queue.ErrFinal)
	require.Equal(t, queue.StateCancelled, st.Status)

	delivered := e.sendOne(t, "alice", "y")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), delivered))
	st, err = e.q.Cancel(ctxT(t), app, delivered)
	require.ErrorIs(t, err, queue.ErrFinal, "409: already delivered")
	require.Equal(t, queue.StateDelivered, st.Status)

	other := e.send(t, queue.EnqueueRequest{App: "other", To: to("alice"), Body: "z"})[0]
	forged := []byte(other)
	forged[15] = map[bool]byte{true: 'a', false: 'b'}[forged[15] != 'a'] // same seq, other random part
	for _, tc := range []struct{ name, app, id string }{
		{"unknown id", app, queue.NewMessageID(1 << 40)},
		{"another app's id", app, other},
		{"forged id", "other", string(forged)},
		{"malformed id", app, "hello"},
		{"upper case", app, "ABCDEFGHIJKLMNOPQRSTU"},
		{"empty", app, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.q.Cancel(ctxT(t), tc.app, tc.id)
			require.ErrorIs(t, err, queue.ErrNotFound)
			_, err = e.q.Status(ctxT(t), tc.app, tc.id)
			require.ErrorIs(t, err, queue.ErrNotFound)
		})
	}
	st, err = e.q.Status(ctxT(t), "other", other)
	require.NoError(t, err)
	require.Equal(t, queue.StateEnqueued, st.Status)
}

func TestCollapse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	sink := e.subscribe(t, "alice", "phone")
	first := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 1", CollapseKey: "otp"})[0]
	bobs := e.send(t, queue.EnqueueRequest{To: to("bob"), Body: "code 1", CollapseKey: "otp"})[0]
	second := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 2", CollapseKey: "otp"})[0]

	st := e.status(t, first)
	require.Equal(t, queue.StateCollapsed, st.Status)
	require.Equal(t, "replaced by "+second, st.Reason)
	require.Equal(t, []string{queue.EventCollapsed}, e.eventsOf(t, first))
	require.Equal(t, []string{second}, ids(e.pending(t, dev("alice", "phone"))))
	require.Equal(t, []uint64{seqOf(t, first)}, sink.Withdrawn())
	require.True(t, e.payloadGone(t, "alice", first))
	require.Equal(t, queue.StateEnqueued, e.status(t, bobs).Status, "another user's message with the same key stays")
	require.EqualValues(t, 2, e.q.Depth())

	// A sent but unacknowledged message is still replaced.
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), second))
	third := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 3", CollapseKey: "otp"})[0]
	require.Equal(t, queue.StateCollapsed, e.status(t, second).Status)
	require.Equal(t, []string{third}, ids(e.pending(t, dev("alice", "phone"))))

	// Once delivered, a message is not collapsed.
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), third))
	fourth := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 4", CollapseKey: "otp"})[0]
	require.Equal(t, queue.StateDelivered, e.status(t, third).Status)
	require.NotContains(t, e.eventsOf(t, third), queue.EventCollapsed)
	require.Equal(t, []string{fourth}, ids(e.pending(t, dev("alice", "phone"))))

	// Another key, or none, does not collapse.
	e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "other", CollapseKey: "news"})
	e.sendOne(t, "alice", "plain")
	require.Equal(t, queue.StateEnqueued, e.status(t, fourth).Status)
}

// TestCollapseUserNamedTwice: a POST that names a user twice ("alice" and
// "alice/phone") with a collapse key keeps both messages (they do not
// replace each other), and the next POST with that key replaces both; once
// both are acknowledged in one ack, nothing is left for a later POST to
// replace.
func TestCollapseUserNamedTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	first := e.send(t, queue.EnqueueRequest{To: to("alice", "alice/phone"), Body: "code 1", CollapseKey: "otp"})
	for _, id := range first {
		require.Equal(t, queue.StateEnqueued, e.status(t, id).Status)
	}
	second := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 2", CollapseKey: "otp"})[0]
	for _, id := range first {
		require.Equal(t, queue.StateCollapsed, e.status(t, id).Status, id)
		require.Equal(t, "replaced by "+second, e.status(t, id).Reason)
	}
	require.Equal(t, []string{second}, ids(e.pending(t, dev("alice", "phone"))))

	third := e.send(t, queue.EnqueueRequest{To: to("alice/phone", "alice"), Body: "code 3", CollapseKey: "otp"})
	require.Equal(t, queue.StateCollapsed, e.status(t, second).Status)
	require.Equal(t, third, ids(e.pending(t, dev("alice", "phone"))))
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), third...))
	fourth := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code 4", CollapseKey: "otp"})[0]
	for _, id := range third {
		require.Equal(t, queue.StateDelivered, e.status(t, id).Status)
		require.NotContains(t, e.eventsOf(t, id), queue.EventCollapsed)
	}
	require.Equal(t, []string{fourth}, ids(e.pending(t, dev("alice", "phone"))))
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	h1, h2 := storage.Hash("request 1"), storage.Hash("request 2")
	req := func(h [32]byte) *queue.EnqueueRequest {
		return &queue.EnqueueRequest{App: app, To: to("alice", "bob/phone"), Body: "once", ExpiresIn: 72 * time.Hour,
			IdempotencyKey: "key-1", RequestHash: h}
	}
	res1, err := e.q.Enqueue(ctxT(t), req(h1))
	require.NoError(t, err)
	require.False(t, res1.Replayed)
	depth, lastSeq := e.q.Depth(), e.db.LastSeq()

	e.clk.Advance(23 * time.Hour)
	e.runTimers(t, 0)
	res2, err := e.q.Enqueue(ctxT(t), req(h1))
	require.NoError(t, err)
	require.True(t, res2.Replayed)
	require.Equal(t, res1.Messages, res2.Messages, "the first answer")
	require.Equal(t, depth, e.q.Depth(), "nothing enqueued")
	require.Equal(t, lastSeq, e.db.LastSeq())
	require.Len(t, e.pending(t, dev("alice", "phone")), 1)

	_, err = e.q.Enqueue(ctxT(t), req(h2))
	require.ErrorIs(t, err, queue.ErrIdempotencyMismatch)

	// Keys are per app.
	other := req(h2)
	other.App = "other"
	res3, err := e.q.Enqueue(ctxT(t), other)
	require.NoError(t, err)
	require.False(t, res3.Replayed)

	// After the 24 h window the key is forgotten.
	e.runTimers(t, time.Hour)
	res4, err := e.q.Enqueue(ctxT(t), req(h2))
	require.NoError(t, err)
	require.False(t, res4.Replayed)
	require.NotEqual(t, res1.Messages[0].ID, res4.Messages[0].ID)
}

// A claimed key is read once and stays locked until the claim is used:
// a second request with the key waits, then gets the first answer.
func TestIdempotencyClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	h := storage.Hash("request")
	res, claim, err := e.q.ClaimIdempotency(app, "key-c", h)
	require.NoError(t, err)
	require.Nil(t, res)
	require.NotNil(t, claim)

	type answer struct {
		res   *queue.EnqueueResult
		claim *queue.IdemClaim
		err   error
	}
	second := make(chan answer, 1)
	go func() {
		res, c, err := e.q.ClaimIdempotency(app, "key-c", h)
		second <- answer{res, c, err}
	}()
	select {
	case a := <-second:
		t.Fatalf("a second claim of a held key returned: %+v", a)
	case <-time.After(50 * time.Millisecond):
	}
	req := &queue.EnqueueRequest{App: app, To: to("alice"), Body: "once", ExpiresIn: time.Hour, Claim: claim}
	res1, err := e.q.Enqueue(ctxT(t), req)
	require.NoError(t, err)
	require.False(t, res1.Replayed)
	a := <-second
	require.NoError(t, a.err)
	require.Nil(t, a.claim)
	require.True(t, a.res.Replayed)
	require.Equal(t, res1.Messages, a.res.Messages)

	// A claim is used once; Release after Enqueue does nothing.
	claim.Release()
	_, err = e.q.Enqueue(ctxT(t), req)
	require.ErrorIs(t, err, queue.ErrInvalid)

	// A released claim (the request was refused) leaves the key free.
	_, c2, err := e.q.ClaimIdempotency(app, "key-d", h)
	require.NoError(t, err)
	c2.Release()
	_, c3, err := e.q.ClaimIdempotency(app, "key-d", storage.Hash("another request"))
	require.NoError(t, err, "nothing was stored for the key")
	c3.Release()

	_, _, err = e.q.ClaimIdempotency(app, "key-c", storage.Hash("another request"))
	require.ErrorIs(t, err, queue.ErrIdempotencyMismatch)
}

func TestEnqueueTenThousandRecipients(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	rcpts := make([]queue.Recipient, queue.MaxRecipients)
	for i := range rcpts {
		rcpts[i] = queue.Recipient{User: fmt.Sprintf("user%05d", i)}
	}
	res, err := e.q.Enqueue(ctxT(t), &queue.EnqueueRequest{App: app, To: rcpts, Body: "broadcast", ExpiresIn: time.Hour})
	require.NoError(t, err)
	require.Len(t, res.Messages, queue.MaxRecipients)
	seen := make(map[string]bool, len(res.Messages))
	for i, m := range res.Messages {
		require.False(t, seen[m.ID], "duplicate id %s", m.ID)
		seen[m.ID] = true
		require.Equal(t, rcpts[i].User, m.To)
	}
	require.EqualValues(t, queue.MaxRecipients, e.q.Depth())
	for i, r := range rcpts {
		msgs := e.pending(t, dev(r.User, "phone"))
		require.Len(t, msgs, 1, r.User)
		require.Equal(t, res.Messages[i].ID, msgs[0].ID)
		require.Equal(t, "broadcast", msgs[0].Body)
	}
}

func TestParseMessageIDOfEnqueuedIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	got := e.send(t, queue.EnqueueRequest{To: to("a", "b", "c"), Body: "x"})
	for i, id := range got {
		seq, err := queue.ParseMessageID(id)
		require.NoError(t, err)
		if i > 0 {
			require.Equal(t, seqOf(t, got[i-1])+1, seq, "one sequence block per enqueue")
			require.Greater(t, id, got[i-1], "ids sort in enqueue order")
		}
		_, err = e.db.GetMessage(app, string(rune('a'+i)), seq)
		require.NoError(t, err, "the id names the stored message")
	}
}
