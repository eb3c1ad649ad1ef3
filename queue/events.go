package queue

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"
)

// Events returns up to limit events of app after cursor after, oldest
// first, as stored JSON, and the cursor to pass next time. With wait > 0
// and nothing new, it blocks until an event arrives, wait passes or ctx is
// done; readers are woken by the writers, the store is not polled.
func (q *Queue) Events(ctx context.Context, app string, after uint64, limit int, wait time.Duration) ([]json.RawMessage, uint64, error) {
	if limit <= 0 {
		limit = 1000
	}
	var timer <-chan time.Time
	for {
		// Take the notification channel before reading, so an event
		// committed after the read still wakes us.
		ch := q.feed.wait(app)
		out, next, err := q.readEvents(app, after, limit)
		if err != nil || len(out) > 0 || wait <= 0 {
			return out, next, err
		}
		if timer == nil {
			tm := time.NewTimer(wait)
			defer tm.Stop()
			timer = tm.C
		}
		select {
		case <-ch:
		case <-timer:
			return nil, after, nil
		case <-ctx.Done():
			return nil, after, nil
		case <-q.stop:
			return nil, after, nil
		}
	}
}

// eventChunk is the size of readEvents' chunks of JSON.
const eventChunk = 64 << 10

func (q *Queue) readEvents(app string, after uint64, limit int) ([]json.RawMessage, uint64, error) {
	var out []json.RawMessage
	// The events' JSON, one after another in chunks: out's items are
	// slices of them, one allocation for a few hundred events.
	var buf []byte
	next := after
	// Only up to the gate's limit: a later event may be visible while an
	// earlier one is still being committed (eventgate.go).
	upTo := q.gate.limit(app, q.db.LastSeq)
	err := q.db.ScanEvents(app, after, func(seq uint64, v []byte) bool {
		if seq > upTo {
			return false
		}
		next = seq
		if cap(buf)-len(buf) < 2*len(v)+256 {
			buf = make([]byte, 0, max(eventChunk, 2*len(v)+256))
		}
		start := len(buf)
		b, err := renderEvent(buf, app, seq, v)
		if err != nil {
			// Not one our codec wrote: skipped, or it would stop the feed
			// (and the app's webhook) for good.
			q.log.Error("queue: unreadable event skipped", zap.String("app", app), zap.String("event", EventID(seq)), zap.Error(err))
			q.m.badEvents.Inc()
			return true
		}
		// Should the JSON outgrow the chunk, append moves buf; the
		// slices taken keep the old array, whose bytes do not change.
		buf = b
		out = append(out, json.RawMessage(buf[start:len(buf):len(buf)]))
		return len(out) < limit
	})
	return out, next, err
}
