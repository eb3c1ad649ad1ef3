package queue

import (
	"context"
	"crypto/sha256"
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
	// Connected: a session of the device was bound and had not ended when
	// the record was last written. A crash or a shutdown leaves it set,
	// so after a restart the gateway knows which devices will reconnect
	// by themselves and holds their wakes for a while (gateway's
	// RestartWakeGrace).
	Connected bool `json:"connected,omitempty"`
}

// Devices lists the devices of app/user in id order. The records are the
// caller's to change. Safe for concurrent use; it reads the device cache,
// and on a miss takes the user's lock and fills it with one store scan.
func (q *Queue) Devices(ctx context.Context, app, user string) ([]Device, error) {
	if e, ok := q.deviceShard(app, user).get(userKey{app, user}); ok && !e.big {
		return cloneDevices(e.devs), nil
	}
	unlock := q.lockUser(app, user)
	defer unlock()
	devs, err := q.devicesLocked(app, user)
	if err != nil {
		return nil, err
	}
	return cloneDevices(devs), nil
}

// Device returns one device record, or ErrNotFound. The record is the
// caller's to change. Safe for concurrent use; on a cache miss it takes the
// user's lock, as Devices does.
func (q *Queue) Device(ctx context.Context, dev DeviceRef) (*Device, error) {
	e, ok := q.deviceShard(dev.App, dev.User).get(userKey{dev.App, dev.User})
	switch {
	case ok && e.big:
		return q.readDevice(dev)
	case ok:
		return findDevice(e.devs, dev.Device)
	}
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	return q.deviceLocked(dev)
}

// deviceLocked is Device for a caller that holds the user's lock.
func (q *Queue) deviceLocked(dev DeviceRef) (*Device, error) {
	if e, ok := q.deviceShard(dev.App, dev.User).get(userKey{dev.App, dev.User}); ok && e.big {
		return q.readDevice(dev)
	}
	devs, err := q.devicesLocked(dev.App, dev.User)
	if errors.Is(err, ErrCorrupt) {
		return q.readDevice(dev) // another device's record is bad, maybe not this one's
	}
	if err != nil {
		return nil, err
	}
	return findDevice(devs, dev.Device)
}

// devicesLocked returns the devices of app/user in id order: the cached
// list, or one read from the store, which fills the cache. The caller holds
// the user's lock and must not modify the list.
func (q *Queue) devicesLocked(app, user string) ([]Device, error) {
	s := q.deviceShard(app, user)
	k := userKey{app, user}
	e, ok := s.get(k)
	if ok && !e.big {
		return e.devs, nil
	}
	tk := s.ticket()
	devs, err := q.scanDevices(app, user)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.fill(k, devs, tk)
	}
	return devs, nil
}

// deviceWritten brings the cached list of dev's user in line with a
// commit that wrote dev's record v (nil: deleted it) and returned err. Each
// device writer calls it after its commit, under the user's lock.
func (q *Queue) deviceWritten(dev DeviceRef, v []byte, err error) {
	s := q.deviceShard(dev.App, dev.User)
	k := userKey{dev.App, dev.User}
	var d *Device
	if err == nil && v != nil {
		// Decoded from what the store holds, so the cache answers what a
		// read of the store would (times in UTC, no monotonic reading).
		d, err = decodeDevice(dev.Device, v)
	}
	if err != nil {
		s.del(k) // the store may or may not hold the write
		return
	}
	s.update(k, func(cur []Device) []Device { return withDevice(cur, dev.Device, d) })
}

// scanDevices reads the devices of app/user from the store, in id order
// (nil if none).
func (q *Queue) scanDevices(app, user string) ([]Device, error) {
	var out []Device
	var derr error
	err := q.db.ScanDevices(app, user, func(id string, v []byte) bool {
		d, err := decodeDevice(id, v)
		if err != nil {
			derr = err
			return false
		}
		out = append(out, *d)
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	// The store keeps ids length first; callers expect id order.
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	return slices.Clip(out), nil
}

// readDevice reads one device record from the store.
func (q *Queue) readDevice(dev DeviceRef) (*Device, error) {
	v, err := q.db.GetDevice(dev.App, dev.User, dev.Device)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return decodeDevice(dev.Device, v)
}

func decodeDevice(id string, v []byte) (*Device, error) {
	d := &Device{ID: id}
	if err := json.Unmarshal(v, d); err != nil {
		return nil, ErrCorrupt
	}
	return d, nil
}

// searchDevice finds device id in devs (in id order): its index, or where
// it would go.
func searchDevice(devs []Device, id string) (int, bool) {
	return slices.BinarySearchFunc(devs, id, func(d Device, id string) int { return strings.Compare(d.ID, id) })
}

// findDevice returns a copy of device id of devs (in id order).
func findDevice(devs []Device, id string) (*Device, error) {
	i, ok := searchDevice(devs, id)
	if !ok {
		return nil, ErrNotFound
	}
	d := devs[i]
	if d.Push != nil {
		p := *d.Push
		d.Push = &p
	}
	return &d, nil
}

// cloneDevices copies devs with their push registrations (two
// allocations).
func cloneDevices(devs []Device) []Device {
	if len(devs) == 0 {
		return nil
	}
	out := slices.Clone(devs)
	n := 0
	for i := range out {
		if out[i].Push != nil {
			n++
		}
	}
	regs := make([]PushRegistration, 0, n)
	for i := range out {
		if p := out[i].Push; p != nil {
			regs = append(regs, *p)
			out[i].Push = &regs[len(regs)-1]
		}
	}
	return out
}

// withDevice returns a new list: devs (in id order, not modified) with
// device id set to d, or removed if d is nil.
func withDevice(devs []Device, id string, d *Device) []Device {
	i, found := searchDevice(devs, id)
	switch {
	case d == nil && !found:
		return devs
	case d == nil:
		if len(devs) == 1 {
			return nil
		}
		out := make([]Device, 0, len(devs)-1)
		return append(append(out, devs[:i]...), devs[i+1:]...)
	case found:
		out := slices.Clone(devs)
		out[i] = *d
		return out
	}
	out := make([]Device, 0, len(devs)+1)
	out = append(append(out, devs[:i]...), *d)
	return append(out, devs[i:]...)
}

// UpdateDevice creates or changes a device record under the user's lock:
// fn gets the current record (nil if none) and returns the new one. It
// reports whether the device was created.
func (q *Queue) UpdateDevice(ctx context.Context, dev DeviceRef, fn func(d *Device) *Device) (created bool, err error) {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	cur, err := q.deviceLocked(dev)
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
	err = b.Commit(true)
	q.deviceWritten(dev, v, err)
	return cur == nil, err
}

// DeleteDevice removes a device and its push registration. Messages that
// waited only for it are then complete. It reports whether it existed.
func (q *Queue) DeleteDevice(ctx context.Context, dev DeviceRef) (bool, error) {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	if _, err := q.deviceLocked(dev); errors.Is(err, ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	t := q.begin()
	t.b.DeleteDevice(dev.App, dev.User, dev.Device)
	err := t.commit(true)
	q.deviceWritten(dev, nil, err) // before recheck reads the list
	if err != nil {
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
	err = t.commit(true)
	q.deviceShard(app, user).del(userKey{app, user}) // none left, or unknown on an error
	return err
}

// Inbound stores a message a device sent to the backend and appends its
// message.inbound event. Durable when it returns.
//
// A message id the device sent before (within the idempotency window)
// is not appended again: an SDK resends its unconfirmed messages, same
// ids, after a session it could not resume, and the backend would get the
// same message twice. The duplicate is answered as the first was.
func (q *Queue) Inbound(ctx context.Context, dev DeviceRef, e *Event) error {
	var key [32]byte
	if e.MessageID != "" {
		unlock := q.lockUser(dev.App, dev.User)
		defer unlock()
		key = sha256.Sum256([]byte("inbound\x00" + dev.User + "\x00" + dev.Device + "\x00" + e.MessageID))
		if _, err := q.db.GetIdem(dev.App, key); err == nil {
			return nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	t := q.begin()
	e.Type, e.App, e.User, e.Device = EventInbound, dev.App, dev.User, dev.Device
	t.event(e)
	if e.MessageID != "" && e.Seq != 0 {
		t.b.PutIdem(dev.App, key, nil)
		t.b.PutTimer(t.now.Add(q.cfg.IdempotencyWindow).UnixMilli(), timerIdemGC, e.Seq, timerValue(dev.App, string(key[:])))
	}
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
	q.devs.clear()
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
	return q.touchDevice(dev, func(d *Device) bool {
		d.Transport, d.LastSeen = transport, q.now()
		return true
	})
}

// DeviceBound is TouchDevice for a session just bound: it also marks the
// device Connected.
func (q *Queue) DeviceBound(ctx context.Context, dev DeviceRef, transport string) error {
	return q.touchDevice(dev, func(d *Device) bool {
		d.Transport, d.LastSeen, d.Connected = transport, q.now(), true
		return true
	})
}

// DeviceUnbound clears Connected, and sets LastSeen, when the device's session ended for good
// (not by the gateway's shutdown). Not synced either: a crash may leave it
// set, which only holds a wake back for a while after the restart.
func (q *Queue) DeviceUnbound(ctx context.Context, dev DeviceRef) error {
	return q.touchDevice(dev, func(d *Device) bool {
		if !d.Connected {
			return false
		}
		// Seen until now: a device online for weeks is not unseen
		// the moment it goes.
		d.Connected, d.LastSeen = false, q.now()
		return true
	})
}

// touchDevice changes a device record (created if needed) with set, under
// the user's lock, without a sync; nothing is written if set returns false.
func (q *Queue) touchDevice(dev DeviceRef, set func(d *Device) bool) error {
	unlock := q.lockUser(dev.App, dev.User)
	defer unlock()
	d, err := q.deviceLocked(dev)
	switch {
	case errors.Is(err, ErrNotFound):
		d = &Device{ID: dev.Device, CreatedAt: q.now(), LastSeen: q.now()}
	case err != nil:
		return err
	}
	if !set(d) {
		return nil
	}
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	b := q.db.NewBatch()
	b.PutDevice(dev.App, dev.User, dev.Device, v)
	err = b.Commit(false)
	q.deviceWritten(dev, v, err)
	return err
}
