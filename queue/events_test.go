package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
)

type eventsResult struct {
	raw  []json.RawMessage
	next uint64
	err  error
}

func TestEventsCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	raw, next, err := e.q.Events(ctxT(t), app, 0, 10, 0)
	require.NoError(t, err)
	require.Empty(t, raw)
	require.Zero(t, next)

	for range 5 {
		require.NoError(t, e.q.AppendEvent(ctxT(t), &queue.Event{Type: queue.EventWakeSent, App: app, User: "alice"}))
	}
	require.NoError(t, e.q.AppendEvent(ctxT(t), &queue.Event{Type: queue.EventWakeSent, App: "other", User: "alice"}))
	raw, next, err = e.q.Events(ctxT(t), app, 0, 3, 0)
	require.NoError(t, err)
	first := decodeEvents(t, raw)
	require.Len(t, first, 3)
	require.Equal(t, queue.EventID(next), first[2].ID, "next is the last event's cursor")
	id, err := queue.ParseEventID(first[2].ID)
	require.NoError(t, err)
	require.Equal(t, next, id)

	raw, next2, err := e.q.Events(ctxT(t), app, next, 100, 0)
	require.NoError(t, err)
	rest := decodeEvents(t, raw)
	require.Len(t, rest, 2, "other apps' events are not in the feed")
	require.Greater(t, rest[0].ID, first[2].ID)

	raw, next3, err := e.q.Events(ctxT(t), app, next2, 100, 0)
	require.NoError(t, err)
	require.Empty(t, raw)
	require.Equal(t, next2, next3, "no events: the cursor stays")
}

// TestAppendEvents: a batch lands in order in each app's feed, and wakes
// a feed reader.
func TestAppendEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	require.NoError(t, e.q.AppendEvents(ctxT(t), nil))
	got := make(chan eventsResult, 1)
	go func() {
		raw, next, err := e.q.Events(ctxT(t), app, 0, 10, 5*time.Second)
		got <- eventsResult{raw, next, err}
	}()
	time.Sleep(20 * time.Millisecond) // let the reader wait
	require.NoError(t, e.q.AppendEvents(ctxT(t), []*queue.Event{
		{Type: queue.EventWakeSent, App: app, User: "alice", Device: "a"},
		{Type: queue.EventWakeSent, App: "other", User: "bob", Device: "b"},
		{Type: queue.EventWakeSent, App: app, User: "carol", Device: "c"},
	}))
	r := <-got
	require.NoError(t, r.err)
	raw, _, err := e.q.Events(ctxT(t), app, 0, 10, 0)
	require.NoError(t, err)
	evs := decodeEvents(t, raw)
	require.Len(t, evs, 2)
	require.Equal(t, "alice", evs[0].User)
	require.Equal(t, "carol", evs[1].User)
	require.Less(t, evs[0].ID, evs[1].ID)
}

func TestEventsLongPoll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	require.NoError(t, e.q.AppendEvent(ctxT(t), &queue.Event{Type: queue.EventWakeSent, App: app}))
	_, cursor, err := e.q.Events(ctxT(t), app, 0, 10, 0)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan eventsResult, 1)
	go func() {
		raw, next, err := e.q.Events(ctx, app, cursor, 10, 15*time.Second)
		got <- eventsResult{raw, next, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("returned before any new event: %+v", r)
	default:
	}
	// Events of another app do not wake this reader.
	require.NoError(t, e.q.AppendEvent(ctxT(t), &queue.Event{Type: queue.EventWakeSent, App: "other"}))
	id := e.sendOne(t, "alice", "x")
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), id))

	select {
	case r := <-got:
		require.NoError(t, r.err)
		evs := decodeEvents(t, r.raw)
		require.Len(t, evs, 1)
		require.Equal(t, queue.EventSent, evs[0].Type)
		require.Equal(t, id, evs[0].MessageID)
		require.Greater(t, r.next, cursor)
	case <-ctx.Done():
		t.Fatal("long poll did not return the new event")
	}
}

func TestEventsLongPollTimesOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	raw, next, err := e.q.Events(ctxT(t), app, 7, 10, 20*time.Millisecond)
	require.NoError(t, err)
	require.Empty(t, raw)
	require.Equal(t, uint64(7), next)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	raw, _, err = e.q.Events(ctx, app, 0, 10, time.Hour)
	require.NoError(t, err)
	require.Empty(t, raw, "a done context ends the wait")
}

func TestEventsLongPollEndsOnClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan eventsResult, 1)
	go func() {
		raw, next, err := e.q.Events(ctx, app, 0, 10, time.Hour)
		got <- eventsResult{raw, next, err}
	}()
	require.NoError(t, e.q.Close())
	select {
	case r := <-got:
		require.NoError(t, r.err)
		require.Empty(t, r.raw)
	case <-ctx.Done():
		t.Fatal("Close did not end the long poll")
	}
}
