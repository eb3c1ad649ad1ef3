package queue

import (
	"context"
	"errors"
	"slices"
	"time"
)

// DeviceRef names one device of one user of one app.
type DeviceRef struct {
	App, User, Device string
}

// Pending returns up to limit messages of dev's user that dev has not
// acknowledged, with seq > after, in enqueue order. Messages sent but not
// acknowledged are returned again: the session resends them with the same
// id. Expired messages and messages for another device are skipped. Safe
// for concurrent use; it takes the user's lock while it reads.
func (q *Queue) Pending(ctx context.Context, dev DeviceRef, after uint64, limit int) ([]*Message, error) {
	if limit <= 0 {
		limit = 1000
	}
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	cursor, err := q.db.GetCursor(dev.App, dev.User, dev.Device)
	if err != nil {
		return nil, err
	}
	base := max(cursor, 1) // sequence numbers start at 1
	from := max(base, after+1)
	now := q.now()
	var (
		out     []*Message
		scanErr error
		advance = from == base // the scan starts at the cursor: leading done entries move it
		next    = base
	)
	err = q.db.ScanMessages(dev.App, dev.User, from, func(seq uint64, v []byte) bool {
		if err := ctx.Err(); err != nil {
			scanErr = err
			return false
		}
		m, err := decodeMessage(dev.App, dev.User, seq, v)
		if err != nil {
			scanErr = err
			return false
		}
		need := (m.Device == "" || m.Device == dev.Device) &&
			(m.OnlineOnly == nil || slices.Contains(m.OnlineOnly, dev.Device))
		if need {
			st, err := q.loadStatus(dev.App, seq)
			switch {
			case errors.Is(err, ErrNotFound):
				need = false
			case err != nil:
				scanErr = err
				return false
			default:
				need = !st.Done() && !st.DeviceState(dev.Device).Acked()
			}
		}
		if !need {
			if advance {
				next = seq + 1
			}
			return true
		}
		advance = false
		if !m.ExpiresAt.After(now) {
			return true // the expiry timer is about to finalize it
		}
		out = append(out, m)
		return len(out) < limit
	})
	if err == nil {
		err = scanErr
	}
	if err != nil {
		return nil, err
	}
	if next > base {
		b := q.db.NewBatch()
		b.PutCursor(dev.App, dev.User, dev.Device, next)
		if err := b.Commit(false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MarkSent records that the messages with these ids were written to dev's
// live session (or returned by an HTTP pull). Unknown ids, and ids of
// messages for another user or device, are ignored.
func (q *Queue) MarkSent(ctx context.Context, dev DeviceRef, ids ...string) error {
	return q.mark(dev, StateSent, ids)
}

// MarkDelivered records that dev acknowledged the messages (an XEP-0198
// ack, an XEP-0184 receipt, an HTTP ack), and that they were sent to it if
// that was not recorded yet (sessions mark "sent" late, so that most
// messages get both in one commit). A message is done, and its
// payload dropped, once every known device of the user acknowledged it, or
// the first did for delivery any, which withdraws it from the others.
func (q *Queue) MarkDelivered(ctx context.Context, dev DeviceRef, ids ...string) error {
	return q.mark(dev, StateDelivered, ids)
}

// MarkRead records that dev displayed the messages (XEP-0333). It implies
// delivered.
func (q *Queue) MarkRead(ctx context.Context, dev DeviceRef, ids ...string) error {
	return q.mark(dev, StateRead, ids)
}

// AckUpTo marks delivered every message pending for dev with seq <= upTo.
func (q *Queue) AckUpTo(ctx context.Context, dev DeviceRef, upTo uint64) error {
	var ids []string
	for {
		msgs, err := q.Pending(ctx, dev, 0, 1000)
		if err != nil {
			return err
		}
		n := len(ids)
		for _, m := range msgs {
			if m.Seq <= upTo {
				ids = append(ids, m.ID)
			}
		}
		if len(ids) == n || len(msgs) < 1000 {
			break
		}
		if err := q.mark(dev, StateDelivered, ids[n:]); err != nil {
			return err
		}
	}
	return q.mark(dev, StateDelivered, ids)
}

func (q *Queue) mark(dev DeviceRef, to State, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	t := q.begin()
	defer t.free()
	var known []string // the user's known devices, read once if needed
	knownRead := false
	seen := make(map[string]bool, len(ids))
	st := statusPool.Get().(*Status) // loadStatusInto resets it
	defer func() {
		if cap(st.Devices) <= 64 {
			statusPool.Put(st)
		}
	}()
	for _, id := range ids {
		// Statuses are read from the store, not from the batch: a repeated
		// id would be applied twice (two events, the depth counted down
		// twice).
		if seen[id] {
			continue
		}
		seen[id] = true
		seq, err := ParseMessageID(id)
		if err != nil {
			continue
		}
		err = q.loadStatusInto(dev.App, seq, st)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.abort()
			return err
		}
		if st.ID != id || st.User != dev.User || (st.Device != "" && st.Device != dev.Device) || st.Status.Final() {
			continue
		}
		if to >= StateDelivered && st.Delivery == DeliveryAny && !st.DoneAt.IsZero() && !st.DeviceState(dev.Device).Acked() {
			// Another device completed it first: it was withdrawn from
			// this one, whose late receipt or marker records nothing.
			continue
		}
		if to >= StateDelivered && st.Fallback.underway() {
			// Its SMS fallback fired and withdrew it from every device:
			// exactly one of device delivery and SMS (SPEC §8).
			continue
		}
		changed := false
		if to >= StateDelivered && st.DeviceState(dev.Device) < StateSent {
			// Acknowledged before its "sent" was recorded (the session
			// marks "sent" late, to record both in this one commit).
			changed = t.setDevice(st, dev.Device, StateSent)
		}
		if to >= StateDelivered && st.DeviceState(dev.Device) < StateDelivered {
			changed = t.setDevice(st, dev.Device, StateDelivered) || changed
		}
		changed = t.setDevice(st, dev.Device, to) || changed
		if !changed {
			continue
		}
		if to >= StateDelivered && st.DoneAt.IsZero() {
			if !knownRead && st.Delivery == DeliveryAll && st.Device == "" {
				if known, err = q.knownDevices(t, dev.App, dev.User); err != nil {
					t.abort()
					return err
				}
				knownRead = true
			}
			if q.complete(st, known) {
				t.done(st)
				if st.Delivery == DeliveryAny {
					app, user, device, seq := dev.App, dev.User, dev.Device, seq
					t.after = append(t.after, func() { q.withdraw(app, user, device, seq) })
				}
			} else if err := q.armRecheck(t, st); err != nil {
				t.abort()
				return err
			}
		}
		t.putStatus(st)
	}
	return t.commit(false)
}

// armRecheck sets a timer for the moment the first offline device that st
// still waits for turns stale (unseen for DeviceStale), if that comes
// before st expires: the devices that are left may all have acknowledged
// it by then, and it is done. (A device online now that goes away without
// acknowledging is not looked at: the message then waits until expiry.)
// The caller holds the user's lock.
func (q *Queue) armRecheck(t *tx, st *Status) error {
	if st.Delivery != DeliveryAll || st.Device != "" {
		return nil
	}
	devs, err := q.devicesLocked(st.App, st.User)
	if err != nil {
		return err
	}
	var at time.Time
	for i := range devs {
		d := &devs[i]
		if d.Connected || st.DeviceState(d.ID).Acked() || t.now.Sub(d.LastSeen) >= q.cfg.DeviceStale {
			continue
		}
		if s := d.LastSeen.Add(q.cfg.DeviceStale); at.IsZero() || s.Before(at) {
			at = s
		}
	}
	if !at.IsZero() && at.Before(st.ExpiresAt) {
		// A millisecond on: the timer's time is truncated to one.
		t.b.PutTimer(at.UnixMilli()+1, timerRecheck, st.Seq, timerValue(st.App, st.User))
	}
	return nil
}

// fireRecheck is an armRecheck timer: st is done if every device still
// known has acknowledged it, else the timer is set again for the next
// device to turn stale.
func (q *Queue) fireRecheck(d dueTimer) error {
	unlock := q.lockUser(d.app, d.user)
	defer unlock()
	t := q.begin()
	t.b.DeleteTimer(d.at, d.kind, d.seq)
	st, err := q.loadStatus(d.app, d.seq)
	if errors.Is(err, ErrNotFound) || err == nil && (st.Done() || st.User != d.user) {
		return t.commit(false)
	}
	if err != nil {
		t.abort()
		return err
	}
	known, err := q.knownDevices(t, d.app, d.user)
	if err != nil {
		t.abort()
		return err
	}
	if st.Status.Acked() && q.complete(st, known) {
		t.done(st)
		t.putStatus(st)
	} else if err := q.armRecheck(t, st); err != nil {
		t.abort()
		return err
	}
	return t.commit(false)
}

// complete reports whether st needs no more acknowledgements.
func (q *Queue) complete(st *Status, known []string) bool {
	if st.Delivery == DeliveryAny || st.Device != "" {
		return slices.ContainsFunc(st.Devices, func(d DeviceStatus) bool { return d.Status.Acked() })
	}
	for _, d := range known {
		if !st.DeviceState(d).Acked() {
			return false
		}
	}
	return true
}

// knownDevices lists the devices of app/user online or seen within the
// stale period,
// from the device cache. The caller holds the user's lock.
func (q *Queue) knownDevices(t *tx, app, user string) ([]string, error) {
	devs, err := q.devicesLocked(app, user)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range devs {
		if devs[i].Connected || t.now.Sub(devs[i].LastSeen) < q.cfg.DeviceStale {
			out = append(out, devs[i].ID)
		}
	}
	return out, nil
}

// Status returns the status record of message id of app. ErrNotFound if
// there is none (or it is another app's).
func (q *Queue) Status(ctx context.Context, app, id string) (*Status, error) {
	seq, err := ParseMessageID(id)
	if err != nil {
		return nil, ErrNotFound
	}
	st, err := q.loadStatus(app, seq)
	if err != nil {
		return nil, err
	}
	if st.ID != id {
		return nil, ErrNotFound
	}
	return st, nil
}

// Cancel withdraws a message that no device acknowledged yet: its status
// becomes cancelled. ErrFinal (with the current status) if it was already
// delivered or final. A message whose SMS fallback waits for a retry is
// cancelled with it (fallback status "cancelled", no more attempts);
// ErrHandingOver while an attempt is under way or was interrupted by a
// crash, since the provider may have taken the SMS. Durable when it
// returns.
func (q *Queue) Cancel(ctx context.Context, app, id string) (*Status, error) {
	st, err := q.Status(ctx, app, id)
	if err != nil {
		return nil, err
	}
	unlock := q.lockUser(app, st.User)
	defer unlock()
	if st, err = q.Status(ctx, app, id); err != nil {
		return nil, err
	}
	if st.Status.Final() || st.Status >= StateDelivered {
		return st, ErrFinal
	}
	fb := st.Fallback
	waiting := fb != nil && fb.Status == FallbackWaiting
	switch {
	case fb != nil && fb.Status == "sending":
		return st, ErrHandingOver
	case st.Done() && !waiting:
		return st, ErrFinal
	}
	t := q.begin()
	if waiting {
		// Between attempts: no SMS goes out any more. The devices'
		// queues were emptied when the fallback started.
		t.b.DeleteTimer(st.FallbackRetry, timerFallback, st.Seq)
		fb.Status = "cancelled"
		st.FallbackRetry, st.SMSText = 0, ""
	}
	t.finalize(st, StateCancelled, "cancelled by the backend")
	return st, t.commit(true)
}
