package queue_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
	"tether/storage"
)

func TestLifecycleOneRecipient(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	phone := dev("alice", "phone")

	id := e.send(t, queue.EnqueueRequest{
		To: to("alice"), Body: "hello", Data: json.RawMessage(`{"k":1}`),
		Ref: "crm-4711", Channel: "alerts", Priority: queue.PriorityHigh, ExpiresIn: 2 * time.Hour,
	})[0]
	require.EqualValues(t, 1, e.q.Depth())

	msgs := e.pending(t, phone)
	require.Len(t, msgs, 1)
	m := msgs[0]
	require.Equal(t, id, m.ID)
	require.Equal(t, seqOf(t, id), m.Seq)
	require.Equal(t, "hello", m.Body)
	require.JSONEq(t, `{"k":1}`, string(m.Data))
	require.Equal(t, "crm-4711", m.Ref)
	require.Equal(t, "alerts", m.Channel)
	require.Equal(t, queue.PriorityHigh, m.Priority)
	require.Equal(t, "alice", m.To())
	require.True(t, m.CreatedAt.Equal(start))
	require.True(t, m.ExpiresAt.Equal(start.Add(2*time.Hour)))

	st := e.status(t, id)
	require.Equal(t, queue.StateEnqueued, st.Status)
	require.Equal(t, "alice", st.User)
	require.Equal(t, "crm-4711", st.Ref)
	require.True(t, st.CreatedAt.Equal(start))
	require.True(t, st.ExpiresAt.Equal(start.Add(2*time.Hour)))

	e.clk.Advance(time.Second)
	require.NoError(t, e.q.MarkSent(ctxT(t), phone, id))
	st = e.status(t, id)
	require.Equal(t, queue.StateSent, st.Status)
	require.True(t, st.SentAt.Equal(start.Add(time.Second)))
	require.Equal(t, queue.StateSent, st.DeviceState("phone"))
	require.Equal(t, []string{id}, ids(e.pending(t, phone)), "sent but not acknowledged: resent")
	require.False(t, e.payloadGone(t, "alice", id))

	e.clk.Advance(time.Second)
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, id))
	st = e.status(t, id)
	require.Equal(t, queue.StateDelivered, st.Status)
	require.True(t, st.DeliveredAt.Equal(start.Add(2*time.Second)))
	require.True(t, e.payloadGone(t, "alice", id), "payload dropped once delivered")
	require.Zero(t, e.q.Depth())
	require.Empty(t, e.pending(t, phone))

	e.clk.Advance(time.Second)
	require.NoError(t, e.q.MarkRead(ctxT(t), phone, id))
	st = e.status(t, id)
	require.Equal(t, queue.StateRead, st.Status)
	require.True(t, st.ReadAt.Equal(start.Add(3*time.Second)))
	require.Equal(t, []queue.DeviceStatus{{Device: "phone", Status: queue.StateRead, At: start.Add(3 * time.Second)}}, st.Devices)

	evs := e.events(t)
	require.Len(t, evs, 3)
	for i, want := range []string{queue.EventSent, queue.EventDelivered, queue.EventRead} {
		ev := evs[i]
		require.Equal(t, want, ev.Type)
		require.Equal(t, app, ev.App)
		require.Equal(t, id, ev.MessageID)
		require.Equal(t, "alice", ev.User)
		require.Equal(t, "phone", ev.Device)
		require.Equal(t, "crm-4711", ev.Ref)
		require.True(t, ev.At.Equal(start.Add(time.Duration(i+1)*time.Second)))
		if i > 0 {
			require.Greater(t, ev.ID, evs[i-1].ID, "event ids sort in feed order")
		}
	}
	require.Equal(t, []string{"sent", "delivered", "read"}, []string{evs[0].Status, evs[1].Status, evs[2].Status})

	// Repeated acknowledgements change nothing.
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, id))
	require.NoError(t, e.q.MarkSent(ctxT(t), phone, id))
	require.Len(t, e.events(t), 3)
}

func TestReadImpliesDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.sendOne(t, "alice", "hi")
	require.NoError(t, e.q.MarkRead(ctxT(t), dev("alice", "phone"), id))
	require.Equal(t, queue.StateRead, e.status(t, id).Status)
	require.Equal(t, []string{"message.sent@phone", "message.delivered@phone", "message.read@phone"}, e.eventsOf(t, id), "an ack implies sent")
	require.True(t, e.payloadGone(t, "alice", id))
}

func TestDuplicateIDsInOneAckCountOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.sendOne(t, "alice", "hi")
	other := e.sendOne(t, "alice", "other")
	require.EqualValues(t, 2, e.q.Depth())
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id, id, id))
	require.Equal(t, []string{"message.sent@phone", "message.delivered@phone"}, e.eventsOf(t, id))
	require.EqualValues(t, 1, e.q.Depth(), "one message left, not %d", e.q.Depth())
	require.Equal(t, []string{other}, ids(e.pending(t, dev("alice", "phone"))))
}

func TestAcksForOthersAreIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := e.sendOne(t, "alice", "hi")
	for _, tc := range []struct {
		name string
		dev  queue.DeviceRef
		id   string
	}{
		{"another user", dev("bob", "phone"), id},
		{"another app", queue.DeviceRef{App: "other", User: "alice", Device: "phone"}, id},
		{"malformed id", dev("alice", "phone"), "not-an-id"},
		{"unknown id", dev("alice", "phone"), queue.NewMessageID(999999)},
	} {
		require.NoError(t, e.q.MarkDelivered(ctxT(t), tc.dev, tc.id), tc.name)
	}
	require.Equal(t, queue.StateEnqueued, e.status(t, id).Status)
	require.Empty(t, e.events(t))
	require.EqualValues(t, 1, e.q.Depth())
}

func TestPerUserOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	phone := dev("alice", "phone")
	var sent []string
	for _, b := range []string{"m1", "m2", "m3", "m4", "m5"} {
		sent = append(sent, e.sendOne(t, "alice", b))
		e.sendOne(t, "bob", "for bob "+b) // interleaved traffic to another user
	}
	msgs := e.pending(t, phone)
	require.Equal(t, sent, ids(msgs))
	for i, m := range msgs {
		require.Equal(t, []string{"m1", "m2", "m3", "m4", "m5"}[i], m.Body)
		if i > 0 {
			require.Greater(t, m.Seq, msgs[i-1].Seq)
		}
	}

	// after and limit page through the queue.
	page, err := e.q.Pending(ctxT(t), phone, msgs[1].Seq, 2)
	require.NoError(t, err)
	require.Equal(t, sent[2:4], ids(page))

	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, sent[0], sent[1]))
	require.Equal(t, sent[2:], ids(e.pending(t, phone)), "a device that acked some gets only the rest")
	// Acknowledging out of order leaves a gap.
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, sent[3]))
	require.Equal(t, []string{sent[2], sent[4]}, ids(e.pending(t, phone)))
	require.EqualValues(t, 7, e.q.Depth()) // 2 of alice, 5 of bob
}

func TestAckUpTo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	phone := dev("alice", "phone")
	var sent []string
	for range 5 {
		sent = append(sent, e.sendOne(t, "alice", "m"))
	}
	require.NoError(t, e.q.AckUpTo(ctxT(t), phone, seqOf(t, sent[2])))
	require.Equal(t, sent[3:], ids(e.pending(t, phone)))
	for _, id := range sent[:3] {
		require.Equal(t, queue.StateDelivered, e.status(t, id).Status)
	}
}

func TestTwoDevicesEachGetEveryMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	phone, laptop := dev("alice", "phone"), dev("alice", "laptop")
	sent := []string{e.sendOne(t, "alice", "1"), e.sendOne(t, "alice", "2"), e.sendOne(t, "alice", "3")}

	require.Equal(t, sent, ids(e.pending(t, phone)))
	require.Equal(t, sent, ids(e.pending(t, laptop)))

	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, sent...))
	require.Empty(t, e.pending(t, phone))
	require.Equal(t, sent, ids(e.pending(t, laptop)), "the other device still gets them")
	for _, id := range sent {
		require.False(t, e.payloadGone(t, "alice", id), "payload kept until every device acked")
		st := e.status(t, id)
		require.Equal(t, queue.StateDelivered, st.Status, "the furthest any device reached")
		require.Equal(t, queue.StateDelivered, st.DeviceState("phone"))
		require.Equal(t, queue.StateEnqueued, st.DeviceState("laptop"))
	}
	require.EqualValues(t, 3, e.q.Depth())

	require.NoError(t, e.q.MarkDelivered(ctxT(t), laptop, sent[1]))
	require.True(t, e.payloadGone(t, "alice", sent[1]))
	require.False(t, e.payloadGone(t, "alice", sent[0]))
	require.EqualValues(t, 2, e.q.Depth())
	require.Equal(t, []string{sent[0], sent[2]}, ids(e.pending(t, laptop)))
	require.Equal(t, []string{"message.sent@phone", "message.delivered@phone", "message.sent@laptop", "message.delivered@laptop"}, e.eventsOf(t, sent[1]))

	// Removing the laptop completes what only it was missing.
	existed, err := e.q.DeleteDevice(ctxT(t), laptop)
	require.NoError(t, err)
	require.True(t, existed)
	require.True(t, e.payloadGone(t, "alice", sent[0]))
	require.True(t, e.payloadGone(t, "alice", sent[2]))
	require.Zero(t, e.q.Depth())
	existed, err = e.q.DeleteDevice(ctxT(t), laptop)
	require.NoError(t, err)
	require.False(t, existed)
}

func TestStaleDeviceIsNotWaitedFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "old")
	e.clk.Advance(31 * 24 * time.Hour)
	e.addDevice(t, "alice", "phone")
	id := e.sendOne(t, "alice", "hi")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))
	require.True(t, e.payloadGone(t, "alice", id), "a device unseen for 30 days stops being known")
}

func TestDeliveryAnyWithdrawsFromOtherDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	phoneSink, laptopSink := e.subscribe(t, "alice", "phone"), e.subscribe(t, "alice", "laptop")

	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "otp", Delivery: queue.DeliveryAny})[0]
	require.Equal(t, []string{id}, phoneSink.Delivered())
	require.Equal(t, []string{id}, laptopSink.Delivered())
	require.Equal(t, []string{id}, ids(e.pending(t, dev("alice", "laptop"))))

	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))
	st := e.status(t, id)
	require.Equal(t, queue.StateDelivered, st.Status)
	require.Equal(t, queue.DeliveryAny, st.Delivery)
	require.True(t, e.payloadGone(t, "alice", id))
	require.Zero(t, e.q.Depth())
	require.Empty(t, e.pending(t, dev("alice", "laptop")), "withdrawn from the other device")
	require.Equal(t, []uint64{seqOf(t, id)}, laptopSink.Withdrawn())
	require.Empty(t, phoneSink.Withdrawn(), "the device that took it is not told to drop it")
}

func TestTargetedDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	phoneSink, laptopSink := e.subscribe(t, "alice", "phone"), e.subscribe(t, "alice", "laptop")

	id := e.send(t, queue.EnqueueRequest{To: to("alice/phone"), Body: "just the phone"})[0]
	st := e.status(t, id)
	require.Equal(t, "phone", st.Device)
	require.Equal(t, "alice/phone", st.To())
	require.Equal(t, []string{id}, phoneSink.Delivered())
	require.Empty(t, laptopSink.Delivered())
	msgs := e.pending(t, dev("alice", "phone"))
	require.Equal(t, []string{id}, ids(msgs))
	require.Equal(t, "alice/phone", msgs[0].To())
	require.Empty(t, e.pending(t, dev("alice", "laptop")))

	// Another device cannot acknowledge it.
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "laptop"), id))
	require.Equal(t, queue.StateEnqueued, e.status(t, id).Status)

	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), id))
	require.Equal(t, queue.StateDelivered, e.status(t, id).Status)
	require.True(t, e.payloadGone(t, "alice", id), "the target alone completes it")
	require.Empty(t, laptopSink.Withdrawn())
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	before := e.sendOne(t, "alice", "before")
	require.False(t, e.q.Online(app, "alice", ""))

	sink := &fakeSink{}
	sub := e.q.Subscribe(app, "alice", "phone", sink)
	require.True(t, e.q.Online(app, "alice", "phone"))
	require.True(t, e.q.Online(app, "alice", ""))
	require.False(t, e.q.Online(app, "alice", "laptop"))
	require.False(t, e.q.Online(app, "bob", ""))
	require.False(t, e.q.Online("other", "alice", "phone"))

	e.sendOne(t, "bob", "for bob")
	e.send(t, queue.EnqueueRequest{App: "other", To: to("alice"), Body: "other app"})
	e.send(t, queue.EnqueueRequest{To: to("alice/laptop"), Body: "for the laptop"})
	mine := e.sendOne(t, "alice", "for alice")
	target := e.send(t, queue.EnqueueRequest{To: to("alice/phone"), Body: "for the phone"})[0]
	require.Equal(t, []string{mine, target}, sink.Delivered(), "only messages after Subscribe, for this device")
	require.NotContains(t, sink.Delivered(), before)

	// A second session of the same device also gets them.
	sink2 := e.subscribe(t, "alice", "phone")
	third := e.sendOne(t, "alice", "third")
	require.Equal(t, []string{third}, sink2.Delivered())

	sub.Close()
	sub.Close() // idempotent
	require.True(t, e.q.Online(app, "alice", "phone"), "the second session is still there")
	e.sendOne(t, "alice", "after close")
	require.Len(t, sink.Delivered(), 3, "a closed subscription gets nothing")
	require.Len(t, sink2.Delivered(), 2)
}

func TestDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, d := range []string{"b", "aa", "c"} {
		e.addDevice(t, "alice", d)
	}
	e.clk.Advance(time.Minute)
	created, err := e.q.UpdateDevice(ctxT(t), dev("alice", "aa"), func(d *queue.Device) *queue.Device {
		require.NotNil(t, d)
		d.Push = &queue.PushRegistration{Provider: "fcm", Token: "tok"}
		d.LastSeen = time.Time{} // refreshed to now
		return d
	})
	require.NoError(t, err)
	require.False(t, created)

	list, err := e.q.Devices(ctxT(t), app, "alice")
	require.NoError(t, err)
	var names []string
	for _, d := range list {
		names = append(names, d.ID)
	}
	require.Equal(t, []string{"aa", "b", "c"}, names, "id order")
	d, err := e.q.Device(ctxT(t), dev("alice", "aa"))
	require.NoError(t, err)
	require.Equal(t, "tok", d.Push.Token)
	require.True(t, d.CreatedAt.Equal(start))
	require.True(t, d.LastSeen.Equal(start.Add(time.Minute)))

	_, err = e.q.Device(ctxT(t), dev("alice", "zz"))
	require.ErrorIs(t, err, queue.ErrNotFound)
	created, err = e.q.UpdateDevice(ctxT(t), dev("alice", "zz"), func(d *queue.Device) *queue.Device { return nil })
	require.NoError(t, err)
	require.False(t, created)
	_, err = e.q.Device(ctxT(t), dev("alice", "zz"))
	require.ErrorIs(t, err, queue.ErrNotFound, "fn returning nil writes nothing")
}

func TestDropUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	sink := e.subscribe(t, "alice", "phone")
	done := e.sendOne(t, "alice", "done")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), done))
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "laptop"), done))
	half := e.sendOne(t, "alice", "half") // acked by one device only
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("alice", "phone"), half))
	sent := e.sendOne(t, "alice", "sent")
	require.NoError(t, e.q.MarkSent(ctxT(t), dev("alice", "phone"), sent))
	waiting := e.sendOne(t, "alice", "waiting")
	bobs := e.sendOne(t, "bob", "bob's")
	require.EqualValues(t, 4, e.q.Depth())

	require.NoError(t, e.q.DropUser(ctxT(t), app, "alice"))
	for _, id := range []string{sent, waiting} {
		st := e.status(t, id)
		require.Equal(t, queue.StateCancelled, st.Status)
		require.Equal(t, "user deleted", st.Reason)
		require.Contains(t, e.eventsOf(t, id), queue.EventCancelled)
		require.Contains(t, sink.Withdrawn(), seqOf(t, id))
	}
	require.Equal(t, queue.StateDelivered, e.status(t, done).Status)
	require.Equal(t, queue.StateDelivered, e.status(t, half).Status)
	require.NotContains(t, e.eventsOf(t, half), queue.EventCancelled)

	list, err := e.q.Devices(ctxT(t), app, "alice")
	require.NoError(t, err)
	require.Empty(t, list)
	require.Empty(t, e.pending(t, dev("alice", "phone")))
	require.EqualValues(t, 1, e.q.Depth(), "only bob's message is left")
	require.Equal(t, []string{bobs}, ids(e.pending(t, dev("bob", "x"))))
}

func TestInboundAndAppendEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	require.NoError(t, e.q.Inbound(ctxT(t), dev("alice", "phone"), &queue.Event{Body: "hi backend", Channel: "support"}))
	require.NoError(t, e.q.AppendEvent(ctxT(t), &queue.Event{Type: queue.EventDeviceOnline, App: app, User: "alice", Device: "phone", Transport: "xmpp"}))
	evs := e.events(t)
	require.Len(t, evs, 2)
	require.Equal(t, queue.EventInbound, evs[0].Type)
	require.Equal(t, "hi backend", evs[0].Body)
	require.Equal(t, "phone", evs[0].Device)
	require.Equal(t, queue.EventDeviceOnline, evs[1].Type)
	require.True(t, evs[1].At.Equal(start))
}

func TestDepthSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := openDisk(dir)
	require.NoError(t, err)
	e := newEnvOn(t, db, nil)
	id := e.sendOne(t, "alice", "durable")
	e.sendOne(t, "bob", "durable too")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), dev("bob", "x"), e.pending(t, dev("bob", "x"))[0].ID))
	require.NoError(t, e.q.Close())
	require.NoError(t, db.Close())

	db, err = openDisk(dir)
	require.NoError(t, err)
	e2 := newEnvOn(t, db, nil)
	require.EqualValues(t, 1, e2.q.Depth())
	msgs := e2.pending(t, dev("alice", "phone"))
	require.Equal(t, []string{id}, ids(msgs))
	require.Equal(t, "durable", msgs[0].Body)
	// New ids continue above the old ones.
	id2 := e2.sendOne(t, "alice", "after restart")
	require.Greater(t, seqOf(t, id2), seqOf(t, id))
}

// TestStatusCacheWritesThrough: statuses read through the queue's cache are
// the ones in the store, across every kind of change; a queue opened after
// this one (its cache empty) reads the same.
func TestStatusCacheWritesThrough(t *testing.T) {
	db, err := storage.Open("mem", storage.Options{InMemory: true, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	e := newEnvOn(t, db, nil)
	phone := dev("alice", "phone")
	var ids []string
	for range 4 {
		ids = append(ids, e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "x", ExpiresIn: time.Hour})[0])
	}
	require.NoError(t, e.q.MarkSent(ctxT(t), phone, ids...))
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, ids[1], ids[2]))
	require.NoError(t, e.q.MarkRead(ctxT(t), phone, ids[2]))
	_, err = e.q.Cancel(ctxT(t), app, ids[3])
	require.NoError(t, err)
	cached := map[string]*queue.Status{}
	for _, id := range ids {
		cached[id] = e.status(t, id)
	}
	require.Equal(t, queue.StateSent, cached[ids[0]].Status)
	require.Equal(t, queue.StateDelivered, cached[ids[1]].Status)
	require.Equal(t, queue.StateRead, cached[ids[2]].Status)
	require.Equal(t, queue.StateCancelled, cached[ids[3]].Status)
	require.NoError(t, e.q.Close())
	q2, err := queue.New(queue.Config{DB: db, Clock: e.clk, TimerInterval: -1})
	require.NoError(t, err)
	defer q2.Close()
	for _, id := range ids {
		st, err := q2.Status(ctxT(t), app, id)
		require.NoError(t, err)
		require.Equal(t, cached[id], st, "status of %s", id)
	}
}

// A POST's first deliveries may be written on its own goroutine: Enqueue
// offers the write to the first four sinks, runs the writers they return
// after the commit and outside the users' locks, and leaves the rest of a
// fan-out to the sinks.
func TestEnqueueDirectWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
	sinks := make([]*fakeSink, len(users))
	var order []string
	var mu sync.Mutex
	for i, u := range users {
		sinks[i] = e.subscribe(t, u, "phone")
		sinks[i].write = func() {
			// Outside the locks: the same user's queue takes another
			// message (a writer under them would deadlock here).
			done := make(chan error, 1)
			go func() {
				_, err := e.q.Enqueue(context.Background(), &queue.EnqueueRequest{App: app, To: to(u + "/laptop"), Body: "from the writer"})
				done <- err
			}()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Error("an Enqueue to the same user blocked while the writer ran: the writer runs under the user's lock")
			}
			// After the commit: the message is in the store.
			got, err := e.q.Pending(context.Background(), queue.DeviceRef{App: app, User: u, Device: "phone"}, 0, 10)
			require.NoError(t, err)
			require.Len(t, got, 1, "the writer runs after the commit")
			mu.Lock()
			order = append(order, u)
			mu.Unlock()
		}
	}
	e.send(t, queue.EnqueueRequest{To: to(users...), Body: "fan-out"})
	for i, s := range sinks {
		s.mu.Lock()
		require.Equal(t, []bool{i < 4}, s.offered, "sink %d", i)
		s.mu.Unlock()
	}
	require.Equal(t, users[:4], order, "the writers run once each, in delivery order, before Enqueue returns")

	// A sink that does not take the write is written by no one else.
	plain := e.subscribe(t, "v", "phone")
	e.sendOne(t, "v", "single")
	require.Equal(t, []bool{true}, plain.offered)
}
