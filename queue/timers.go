package queue

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

const (
	timerBatch         = 512
	fallbackRetryDelay = 5 * time.Minute
	// An SMS the provider did not take but may later (TryLaterError) is
	// sent again after 15 s, 30 s, 1 min, 2 min and 4 min (or the
	// provider's Retry-After, up to an hour): six attempts over about
	// eight minutes, then fallback_failed.
	maxFallbackAttempts  = 6
	fallbackBackoffFirst = 15 * time.Second
	maxFallbackAfter     = time.Hour
	eventTrimInterval    = 10 * time.Minute
	maxFallbacks         = 16 // SMS sends in flight
)

func (q *Queue) timerLoop() {
	defer q.wg.Done()
	tk := time.NewTicker(q.cfg.TimerInterval)
	defer tk.Stop()
	var lastTrim time.Time
	for {
		select {
		case <-q.stop:
			return
		case <-tk.C:
		}
		if _, err := q.RunTimers(context.Background()); err != nil {
			q.log.Error("queue timers", zap.Error(err))
		}
		if now := q.now(); now.Sub(lastTrim) >= eventTrimInterval {
			lastTrim = now
			if err := q.TrimEvents(); err != nil {
				q.log.Error("queue event trim", zap.Error(err))
			}
		}
	}
}

type dueTimer struct {
	at        int64
	kind      byte
	seq       uint64
	app, user string
}

// RunTimers fires every timer due at the clock's current time: expiry,
// fallback, status and idempotency clean-up. It is what the background
// loop calls; tests with a manual clock call it directly. It returns how
// many timers fired.
func (q *Queue) RunTimers(ctx context.Context) (int, error) {
	n := 0
	for {
		now := q.now().UnixMilli()
		var due []dueTimer
		err := q.db.ScanTimers(now, func(at int64, kind byte, seq uint64, v []byte) bool {
			app, user, ok := parseTimerValue(v)
			if !ok {
				q.log.Error("queue: bad timer value", zap.Uint64("seq", seq))
			}
			due = append(due, dueTimer{at, kind, seq, app, user})
			return len(due) < timerBatch
		})
		if err != nil {
			return n, err
		}
		for _, d := range due {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if err := q.fire(d); err != nil {
				return n, err
			}
			n++
		}
		if len(due) < timerBatch {
			return n, nil
		}
	}
}

var timerKindNames = map[byte]string{timerExpire: "expire", timerFallback: "fallback", timerStatusGC: "status_gc", timerIdemGC: "idempotency_gc", timerRecheck: "recheck"}

func (q *Queue) fire(d dueTimer) error {
	q.m.timers.WithLabelValues(timerKindNames[d.kind]).Inc()
	switch d.kind {
	case timerExpire, timerFallback:
		return q.fireMessage(d)
	case timerRecheck:
		return q.fireRecheck(d)
	case timerStatusGC:
		b := q.db.NewBatch()
		b.DeleteTimer(d.at, d.kind, d.seq)
		if d.app != "" {
			b.DeleteStatus(d.app, d.seq)
			q.stats.del(d.app, d.seq)
		}
		return b.Commit(false)
	case timerIdemGC:
		b := q.db.NewBatch()
		b.DeleteTimer(d.at, d.kind, d.seq)
		if len(d.user) == 32 {
			b.DeleteIdem(d.app, [32]byte([]byte(d.user)))
		}
		return b.Commit(false)
	default:
		b := q.db.NewBatch()
		b.DeleteTimer(d.at, d.kind, d.seq)
		return b.Commit(false)
	}
}

// fireMessage handles a message's expiry or fallback deadline. An SMS
// hand-off starts only after the user's lock is released: waiting for a
// free send slot under the lock would deadlock with the sends in flight,
// which take that lock to record their outcome.
func (q *Queue) fireMessage(d dueTimer) error {
	m, err := q.fireMessageLocked(d)
	if err != nil || m == nil {
		return err
	}
	q.startFallback(m)
	return nil
}

// fireMessageLocked does the store side of fireMessage under the user's
// lock. It returns the SMS to send, if the fallback fired.
func (q *Queue) fireMessageLocked(d dueTimer) (*Message, error) {
	unlock := q.lockUser(d.app, d.user)
	defer unlock()
	t := q.begin()
	t.b.DeleteTimer(d.at, d.kind, d.seq)
	st, err := q.loadStatus(d.app, d.seq)
	if errors.Is(err, ErrNotFound) {
		return nil, t.commit(false)
	}
	if err != nil {
		t.abort()
		return nil, err
	}
	fb := st.Fallback
	switch {
	case fb.underway():
		if d.kind == timerFallback && d.at == st.FallbackRetry {
			// The provider asked to be tried later, or a crash
			// interrupted the hand-off: try again.
			return q.sendFallback(t, st)
		}
		// Another timer of the message, due in the same scan as the one
		// that handed the SMS over (its expiry, deleted since): the
		// hand-off is under way. Retrying here sent the SMS twice.
	case st.Done():
	case st.Status.Acked():
		// Some device has it, so no SMS. At expiry the devices that have
		// not acknowledged it are out of time; at the fallback deadline
		// they still have until expiry.
		if d.kind == timerExpire {
			t.done(st)
			t.putStatus(st)
		}
	case fb != nil && fb.Status == "pending" && (d.kind == timerFallback || d.kind == timerExpire):
		return q.sendFallback(t, st)
	default:
		t.finalize(st, StateExpired, "expired")
	}
	return nil, t.commit(false)
}

// sendFallback withdraws st from every device queue durably and returns the
// SMS for startFallback to hand to the provider once the caller released
// the user's lock.
func (q *Queue) sendFallback(t *tx, st *Status) (*Message, error) {
	if st.SMSText == "" {
		if v, err := q.db.GetMessage(st.App, st.User, st.Seq); err == nil {
			if m, err := decodeMessage(st.App, st.User, st.Seq, v); err == nil {
				st.SMSText = m.Body
				if m.Fallback != nil && m.Fallback.Text != "" {
					st.SMSText = m.Fallback.Text
				}
			}
		}
	}
	wasDone := !st.DoneAt.IsZero()
	t.done(st)
	if st.FallbackRetry != 0 {
		t.b.DeleteTimer(st.FallbackRetry, timerFallback, st.Seq)
	}
	st.Fallback.Status = "sending"
	st.FallbackRetry = t.now.Add(fallbackRetryDelay).UnixMilli()
	t.b.PutTimer(st.FallbackRetry, timerFallback, st.Seq, timerValue(st.App, st.User))
	t.putStatus(st)
	if !wasDone {
		app, user, seq := st.App, st.User, st.Seq
		t.after = append(t.after, func() { q.withdraw(app, user, "", seq) })
	}
	if err := t.commit(true); err != nil {
		return nil, err
	}
	return &Message{Seq: st.Seq, ID: st.ID, App: st.App, User: st.User, Device: st.Device, Body: st.SMSText,
		Ref: st.Ref, Fallback: &SMSFallback{To: st.Fallback.To, Text: st.SMSText}}, nil
}

// startFallback hands m's SMS to the provider in the background, at most
// maxFallbacks at a time, and records the outcome. The caller must not hold
// any user lock.
func (q *Queue) startFallback(m *Message) {
	select {
	case q.fallbackSem() <- struct{}{}:
	case <-q.stop:
		return // the retry timer sends it after restart
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer func() { <-q.fallbackSem() }()
		q.finishFallback(m)
	}()
}

func (q *Queue) fallbackSem() chan struct{} {
	q.fbOnce.Do(func() { q.fbSem = make(chan struct{}, maxFallbacks) })
	return q.fbSem
}

func (q *Queue) finishFallback(m *Message) {
	state, provider, detail := StateFallbackFailed, "", "no SMS provider configured"
	var tryLater *TryLaterError
	if q.cfg.Fallback != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		provider, detail, err = q.cfg.Fallback.SendFallback(ctx, m)
		cancel()
		if err == nil {
			state = StateFallbackSent
		} else {
			if detail == "" {
				detail = err.Error()
			}
			if !errors.As(err, &tryLater) {
				tryLater = nil
			}
		}
	}
	unlock := q.lockUser(m.App, m.User)
	defer unlock()
	st, err := q.loadStatus(m.App, m.Seq)
	if err != nil || st.Fallback == nil || st.Fallback.Status != "sending" {
		return
	}
	t := q.begin()
	st.Fallback.Provider, st.Fallback.Detail, st.Fallback.At = provider, detail, t.now
	st.Fallback.Attempts++
	t.b.DeleteTimer(st.FallbackRetry, timerFallback, st.Seq)
	if tryLater != nil && st.Fallback.Attempts < maxFallbackAttempts {
		// Waiting (the API says "sending"): the timer hands the same SMS
		// over again. Until then the backend may still cancel it.
		st.Fallback.Status = FallbackWaiting
		wait := max(fallbackBackoffFirst<<(st.Fallback.Attempts-1), min(tryLater.After, maxFallbackAfter))
		st.FallbackRetry = t.now.Add(wait).UnixMilli()
		t.b.PutTimer(st.FallbackRetry, timerFallback, st.Seq, timerValue(st.App, st.User))
		t.putStatus(st)
		if err := t.commit(true); err != nil {
			q.log.Error("queue: record fallback retry", zap.String("app", m.App), zap.Error(err))
		}
		return
	}
	st.Fallback.Status = "sent"
	if state == StateFallbackFailed {
		st.Fallback.Status = "failed"
	}
	st.FallbackRetry, st.SMSText = 0, ""
	t.finalize(st, state, detail)
	if err := t.commit(true); err != nil {
		q.log.Error("queue: record fallback", zap.String("app", m.App), zap.Error(err))
	}
}

// TrimEvents drops events older than the retention period from every
// app's feed.
func (q *Queue) TrimEvents() error {
	cutoff := q.now().Add(-q.cfg.EventRetention)
	var apps []string
	if err := q.db.ScanApps(func(app string, _ []byte) bool { apps = append(apps, app); return true }); err != nil {
		return err
	}
	for _, app := range apps {
		var before uint64
		err := q.db.ScanEvents(app, 0, func(seq uint64, v []byte) bool {
			if at, err := eventTime(v); err == nil && !at.Before(cutoff) {
				return false
			}
			before = seq + 1
			return true
		})
		if err != nil {
			return err
		}
		if before > 0 {
			if err := q.db.TrimEvents(app, before); err != nil {
				return err
			}
		}
	}
	return nil
}
