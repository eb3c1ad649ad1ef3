package queue

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"tether/storage"
)

// PushRegistration is a device's native push token.
type PushRegistration struct {
	Provider    string `json:"provider"` // "apns" or "fcm"
	Token       string `json:"token"`
	Topic       string `json:"topic,omitempty"`
	Environment string `json:"environment,omitempty"`
}

// Device is a device record: one installation of the app for a user.
type Device struct {
	ID        string            `json:"-"`
	Push      *PushRegistration `json:"push,omitempty"`
	Transport string            `json:"transport,omitempty"` // of the last session
	CreatedAt time.Time         `json:"created_at"`
	LastSeen  time.Time         `json:"last_seen"`
}

// Devices lists the devices of app/user in id order.
func (q *Queue) Devices(ctx context.Context, app, user string) ([]Device, error) {
	var out []Device
	var derr error
	err := q.db.ScanDevices(app, user, func(id string, v []byte) bool {
		var d Device
		if err := json.Unmarshal(v, &d); err != nil {
			derr = ErrCorrupt
			return false
		}
		d.ID = id
		out = append(out, d)
		return true
	})
	// The store keeps ids length first; callers expect id order.
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	return out, errors.Join(err, derr)
}

// Device returns one device record, or ErrNotFound.
func (q *Queue) Device(ctx context.Context, dev DeviceRef) (*Device, error) {
	v, err := q.db.GetDevice(dev.App, dev.User, dev.Device)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	d := &Device{ID: dev.Device}
	if err := json.Unmarshal(v, d); err != nil {
		return nil, ErrCorrupt
	}
	return d, nil
}

// UpdateDevice creates or changes a device record under the user's lock:
// fn gets the current record (nil if none) and returns the new one. It
// reports whether the device was created.
func (q *Queue) UpdateDevice(ctx context.Context, dev DeviceRef, fn func(d *Device) *Device) (created bool, err error) {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	cur, err := q.Device(ctx, dev)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	now := q.now()
	var old *Device
	if cur != nil {
		c := *cur
		old = &c
	}
	d := fn(old)
	if d == nil {
		return false, nil
	}
	if cur == nil {
		d.CreatedAt = now
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = now
	}
	v, err := json.Marshal(d)
	if err != nil {
		return false, err
	}
	b := q.db.NewBatch()
	b.PutDevice(dev.App, dev.User, dev.Device, v)
	return cur == nil, b.Commit(true)
}

// DeleteDevice removes a device and its push registration. Messages that
// waited only for it are then complete. It reports whether it existed.
func (q *Queue) DeleteDevice(ctx context.Context, dev DeviceRef) (bool, error) {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	if _, err := q.Device(ctx, dev); errors.Is(err, ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	t := q.begin()
	t.b.DeleteDevice(dev.App, dev.User, dev.Device)
	if err := t.commit(true); err != nil {
		return false, err
	}
	return true, q.recheck(dev.App, dev.User)
}

// recheck completes the messages of app/user that every remaining known
// device has acknowledged. The caller holds the user's lock.
func (q *Queue) recheck(app, user string) error {
	t := q.begin()
	known, err := q.knownDevices(t, app, user)
	if err != nil {
		t.abort()
		return err
	}
	var serr error
	err = q.db.ScanMessages(app, user, 0, func(seq uint64, v []byte) bool {
		st, err := q.loadStatus(app, seq)
		if err != nil {
			serr = err
			return errors.Is(err, ErrNotFound)
		}
		if !st.Done() && st.Status.Acked() && q.complete(st, known) {
			t.done(st)
			t.putStatus(st)
		}
		return true
	})
	if err = errors.Join(err, serr); err != nil && !errors.Is(err, ErrNotFound) {
		t.abort()
		return err
	}
	return t.commit(false)
}

// DropUser deletes a user with its devices and queue: every message still
// waiting is cancelled (reason "user deleted"), with its event. Durable
// when it returns.
func (q *Queue) DropUser(ctx context.Context, app, user string) error {
	unlock := q.lockUser(app, user)
	defer unlock()
	t := q.begin()
	var serr error
	err := q.db.ScanMessages(app, user, 0, func(seq uint64, v []byte) bool {
		st, err := q.loadStatus(app, seq)
		if errors.Is(err, ErrNotFound) {
			return true
		}
		if err != nil {
			serr = err
			return false
		}
		if !st.Done() {
			if st.Status < StateDelivered {
				t.finalize(st, StateCancelled, "user deleted")
			} else {
				t.done(st)
				t.putStatus(st)
			}
		}
		return true
	})
	if err = errors.Join(err, serr); err != nil {
		t.abort()
		return err
	}
	t.b.DeleteUser(app, user)
	return t.commit(true)
}

// Inbound stores a message a device sent to the backend and appends its
// message.inbound event. Durable when it returns.
func (q *Queue) Inbound(ctx context.Context, dev DeviceRef, e *Event) error {
	t := q.begin()
	e.Type, e.App, e.User, e.Device = EventInbound, dev.App, dev.User, dev.Device
	t.event(e)
	return t.commit(true)
}

// AppendEvent appends an event that is not a message status change
// (device.online, device.offline, device.token_invalid, device.wake_sent).
// Not synced: such events may be lost in a crash.
func (q *Queue) AppendEvent(ctx context.Context, e *Event) error {
	t := q.begin()
	t.event(e)
	return t.commit(false)
}

// AppendEvents appends events as AppendEvent does, in order, in one
// unsynced commit (the waker's device.wake_sent events of a fan-out).
func (q *Queue) AppendEvents(ctx context.Context, es []*Event) error {
	if len(es) == 0 {
		return nil
	}
	t := q.begin()
	for _, e := range es {
		t.event(e)
	}
	return t.commit(false)
}

// DropApp deletes every queue, status record, device and event of app in
// one synced batch, and keeps the depth gauge right. The caller stops
// accepting requests for the app first (the gateway forgets its keys).
func (q *Queue) DropApp(ctx context.Context, app string) error {
	n, err := q.db.CountAppMessages(app)
	if err != nil {
		return err
	}
	err = q.db.DeleteApp(app)
	q.stats.clear() // its records are gone (or may be, on an error)
	if err != nil {
		return err
	}
	q.depth.Add(-n)
	return nil
}

// TouchDevice records that a device was seen on transport now, creating
// its record if needed. Not synced: a crash may lose a last-seen time, never
// a message.
func (q *Queue) TouchDevice(ctx context.Context, dev DeviceRef, transport string) error {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	d, err := q.Device(ctx, dev)
	switch {
	case errors.Is(err, ErrNotFound):
		d = &Device{ID: dev.Device, CreatedAt: q.now()}
	case err != nil:
		return err
	}
	d.Transport, d.LastSeen = transport, q.now()
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	b := q.db.NewBatch()
	b.PutDevice(dev.App, dev.User, dev.Device, v)
	return b.Commit(false)
}
