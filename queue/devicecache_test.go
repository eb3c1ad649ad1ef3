package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
	"tether/storage"
)

// deviceAnswers is what a queue says of some users' devices: each user's
// list and known devices, and each named device's record (nil: not found).
type deviceAnswers struct {
	Lists  map[string][]queue.Device
	Known  map[string][]string
	Record map[string]*queue.Device
}

// askDevices reads, through q, the devices of users and the records of
// devs (each app/user/device).
func askDevices(t *testing.T, q *queue.Queue, users []queue.DeviceRef, devs []queue.DeviceRef) deviceAnswers {
	t.Helper()
	a := deviceAnswers{Lists: map[string][]queue.Device{}, Known: map[string][]string{}, Record: map[string]*queue.Device{}}
	for _, u := range users {
		k := u.App + "/" + u.User
		list, err := q.Devices(ctxT(t), u.App, u.User)
		require.NoError(t, err)
		a.Lists[k] = list
		known, err := queue.KnownDevices(q, u.App, u.User)
		require.NoError(t, err)
		a.Known[k] = known
	}
	for _, d := range devs {
		rec, err := q.Device(ctxT(t), d)
		if errors.Is(err, queue.ErrNotFound) {
			rec = nil
		} else {
			require.NoError(t, err)
		}
		a.Record[d.App+"/"+d.User+"/"+d.Device] = rec
	}
	return a
}

// requireStoreAnswers checks that e.q (its device cache warm) answers what
// a new queue over the same store (its cache empty) reads from the store.
func requireStoreAnswers(t *testing.T, e *env, users, devs []queue.DeviceRef, msg string) {
	t.Helper()
	cached := askDevices(t, e.q, users, devs)
	fresh, err := queue.New(queue.Config{DB: e.db, Clock: e.clk, TimerInterval: -1})
	require.NoError(t, err)
	defer fresh.Close()
	require.Equal(t, askDevices(t, fresh, users, devs), cached, "after %s", msg)
}

func longToken(i int) string { return fmt.Sprintf("%03d-%s", i, strings.Repeat("t", 160)) }

// TestDeviceCacheWritesThrough: after every kind of device write, made
// while the cache holds the user's list, the queue answers Devices,
// Device and the known devices as a queue reading the store does. A
// writer that left the cached list alone fails here.
func TestDeviceCacheWritesThrough(t *testing.T) {
	t.Parallel()
	stores := []struct {
		name string
		open func(t *testing.T) *storage.DB
	}{
		{"mem", func(t *testing.T) *storage.DB {
			db, err := storage.Open("mem", storage.Options{InMemory: true, CacheSize: 4 << 20, MemTableSize: 4 << 20})
			require.NoError(t, err)
			return db
		}},
		{"disk", func(t *testing.T) *storage.DB {
			db, err := openDisk(t.TempDir())
			require.NoError(t, err)
			return db
		}},
	}
	for _, sc := range stores {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			testDeviceCacheWritesThrough(t, newEnvOn(t, sc.open(t), nil))
		})
	}
}

func testDeviceCacheWritesThrough(t *testing.T, e *env) {
	ctx := ctxT(t)
	ref := func(app, user, device string) queue.DeviceRef {
		return queue.DeviceRef{App: app, User: user, Device: device}
	}
	users := []queue.DeviceRef{ref(app, "alice", ""), ref(app, "bob", ""), ref(app, "big", ""), ref("other", "carol", "")}
	devs := []queue.DeviceRef{
		ref(app, "alice", "phone"), ref(app, "alice", "laptop"), ref(app, "alice", "tablet"), ref(app, "alice", "nope"),
		ref(app, "bob", "phone"), ref(app, "big", "d05"), ref(app, "big", "d19"), ref("other", "carol", "phone"),
	}
	setPush := func(d queue.DeviceRef, token string) func() {
		return func() {
			_, err := e.q.UpdateDevice(ctx, d, func(cur *queue.Device) *queue.Device {
				if cur == nil {
					cur = &queue.Device{}
				}
				cur.Push = &queue.PushRegistration{Provider: "apns", Token: token, Topic: "com.acme"}
				return cur
			})
			require.NoError(t, err)
		}
	}
	touch := func(d queue.DeviceRef, transport string) func() {
		return func() { require.NoError(t, e.q.TouchDevice(ctx, d, transport)) }
	}
	del := func(d queue.DeviceRef, existed bool) func() {
		return func() {
			got, err := e.q.DeleteDevice(ctx, d)
			require.NoError(t, err)
			require.Equal(t, existed, got)
		}
	}
	advance := func(d time.Duration) { e.clk.Advance(d) }
	steps := []struct {
		name string
		do   func()
	}{
		{"create with push", setPush(ref(app, "alice", "phone"), "tok-1")},
		{"create by touch", touch(ref(app, "alice", "laptop"), "ws")},
		{"create another user", touch(ref(app, "bob", "phone"), "xmpp")},
		{"create in another app", setPush(ref("other", "carol", "phone"), "tok-c")},
		{"change push", func() { advance(time.Minute); setPush(ref(app, "alice", "phone"), "tok-2")() }},
		{"remove push", func() {
			_, err := e.q.UpdateDevice(ctx, ref(app, "alice", "phone"), func(d *queue.Device) *queue.Device {
				d.Push = nil
				return d
			})
			require.NoError(t, err)
		}},
		{"update declined", func() {
			_, err := e.q.UpdateDevice(ctx, ref(app, "alice", "laptop"), func(d *queue.Device) *queue.Device {
				d.Transport = "changed but not written"
				return nil
			})
			require.NoError(t, err)
		}},
		{"touch", func() { advance(time.Hour); touch(ref(app, "alice", "laptop"), "xmpp")() }},
		{"touch new", touch(ref(app, "alice", "tablet"), "ws")},
		{"stale", func() {
			// The phone and the tablet go stale: the known devices
			// differ from the list.
			advance(31 * 24 * time.Hour)
			touch(ref(app, "alice", "laptop"), "ws")()
		}},
		{"delete device", del(ref(app, "alice", "tablet"), true)},
		{"delete missing device", del(ref(app, "alice", "nope"), false)},
		{"many devices", func() {
			// Over the size an entry may have: read from the store.
			for i := range 20 {
				setPush(ref(app, "big", fmt.Sprintf("d%02d", i)), longToken(i))()
			}
		}},
		{"many devices: touch", touch(ref(app, "big", "d05"), "ws")},
		{"many devices: delete", del(ref(app, "big", "d19"), true)},
		{"drop user", func() { require.NoError(t, e.q.DropUser(ctx, app, "bob")) }},
		{"recreate dropped user", touch(ref(app, "bob", "phone"), "ws")},
		{"drop app", func() { require.NoError(t, e.q.DropApp(ctx, app)) }},
		{"recreate in dropped app", setPush(ref(app, "alice", "laptop"), "tok-3")},
		{"drop the other app", func() { require.NoError(t, e.q.DropApp(ctx, "other")) }},
	}
	requireStoreAnswers(t, e, users, devs, "nothing")
	for _, s := range steps {
		// askDevices has just filled the cache: the write must change it.
		s.do()
		requireStoreAnswers(t, e, users, devs, s.name)
	}
}

// TestDeviceCacheHandsOutCopies: changing what Devices, Device and
// UpdateDevice's fn got leaves the cached lists alone.
func TestDeviceCacheHandsOutCopies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	phone := dev("alice", "phone")
	_, err := e.q.UpdateDevice(ctxT(t), phone, func(d *queue.Device) *queue.Device {
		return &queue.Device{Push: &queue.PushRegistration{Provider: "fcm", Token: "tok"}}
	})
	require.NoError(t, err)
	e.addDevice(t, "alice", "laptop")
	list, err := e.q.Devices(ctxT(t), app, "alice") // a hit
	require.NoError(t, err)
	list[1].Push.Token = "changed"
	list[0].ID = "changed"
	require.NoError(t, e.q.DropApp(ctxT(t), "elsewhere")) // empties the cache
	list, err = e.q.Devices(ctxT(t), app, "alice")        // a miss, which fills it
	require.NoError(t, err)
	list[1].Push.Token = "changed"
	list[0].ID = "changed"
	d, err := e.q.Device(ctxT(t), phone)
	require.NoError(t, err)
	d.Push.Token, d.Transport = "changed", "changed"
	_, err = e.q.UpdateDevice(ctxT(t), phone, func(d *queue.Device) *queue.Device {
		d.Push.Token = "changed"
		return nil // nothing written
	})
	require.NoError(t, err)

	got, err := e.q.Devices(ctxT(t), app, "alice")
	require.NoError(t, err)
	require.Equal(t, []string{"laptop", "phone"}, []string{got[0].ID, got[1].ID})
	require.Equal(t, "tok", got[1].Push.Token)
	require.Empty(t, got[1].Transport)
	requireStoreAnswers(t, e, []queue.DeviceRef{dev("alice", "")}, []queue.DeviceRef{phone}, "callers changed their copies")
}

// TestDeviceCacheKnownDevicesFollowWrites: a message to a whole user waits
// for the devices written after the cache read the user's list, and stops
// waiting for the ones deleted.
func TestDeviceCacheKnownDevicesFollowWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	phone, tablet := dev("alice", "phone"), dev("alice", "tablet")
	e.addDevice(t, "alice", "phone")
	first := e.sendOne(t, "alice", "1")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, first)) // reads (and caches) the devices
	require.True(t, e.payloadGone(t, "alice", first))

	require.NoError(t, e.q.TouchDevice(ctxT(t), tablet, "ws"))
	second := e.sendOne(t, "alice", "2")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, second))
	require.False(t, e.payloadGone(t, "alice", second), "the tablet touched after the cache read the list is waited for")

	existed, err := e.q.DeleteDevice(ctxT(t), tablet)
	require.NoError(t, err)
	require.True(t, existed)
	require.True(t, e.payloadGone(t, "alice", second), "deleting the tablet completes it")

	// Stale, then seen again: waited for again.
	e.clk.Advance(31 * 24 * time.Hour)
	require.NoError(t, e.q.TouchDevice(ctxT(t), phone, "ws"))
	e.addDevice(t, "alice", "laptop")
	third := e.sendOne(t, "alice", "3")
	require.NoError(t, e.q.MarkDelivered(ctxT(t), phone, third))
	require.False(t, e.payloadGone(t, "alice", third), "the laptop is waited for")
}

// TestDeviceCacheEviction: with more users than the cache keeps, answers
// stay right, for users evicted, refilled and written after eviction, and
// the cache stays within its bound.
func TestDeviceCacheEviction(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the cache beyond its bound")
	}
	t.Parallel()
	e := newEnv(t, nil)
	users := queue.DeviceCacheCap + queue.DeviceCacheCap/4
	user := func(i int) string { return fmt.Sprintf("u%05d", i) }
	// Written straight to the store (one batch), as the queue would.
	b := e.db.NewBatch()
	for i := range users {
		for j := range 1 + i%3 {
			v, err := json.Marshal(queue.Device{Transport: "ws", CreatedAt: start, LastSeen: start.Add(time.Duration(j) * time.Second),
				Push: &queue.PushRegistration{Provider: "apns", Token: fmt.Sprintf("tok-%d-%d", i, j)}})
			require.NoError(t, err)
			b.PutDevice(app, user(i), fmt.Sprintf("d%d", j), v)
		}
	}
	require.NoError(t, b.Commit(false))
	check := func(i int, want int) {
		list, err := e.q.Devices(ctxT(t), app, user(i))
		require.NoError(t, err)
		require.Len(t, list, want, "user %d", i)
		for j, d := range list {
			require.Equal(t, fmt.Sprintf("d%d", j), d.ID)
			require.Equal(t, fmt.Sprintf("tok-%d-%d", i, j), d.Push.Token)
		}
	}
	for i := range users {
		check(i, 1+i%3)
	}
	require.LessOrEqual(t, queue.CachedUsers(e.q), queue.DeviceCacheCap)
	for i := 0; i < users; i += 5 { // hits and misses, refills evicting
		check(i, 1+i%3)
	}
	require.LessOrEqual(t, queue.CachedUsers(e.q), queue.DeviceCacheCap)
	require.Greater(t, queue.CachedUsers(e.q), queue.DeviceCacheCap*3/4, "the cache is used")
	// Writes to users cached and evicted alike.
	for i := 0; i < users; i += 97 {
		existed, err := e.q.DeleteDevice(ctxT(t), dev(user(i), "d0"))
		require.NoError(t, err)
		require.True(t, existed)
		require.NoError(t, e.q.TouchDevice(ctxT(t), dev(user(i), "d0"), "xmpp"))
		d, err := e.q.Device(ctxT(t), dev(user(i), "d0"))
		require.NoError(t, err)
		require.Nil(t, d.Push, "recreated without its registration")
		require.Equal(t, "xmpp", d.Transport)
		known, err := queue.KnownDevices(e.q, app, user(i))
		require.NoError(t, err)
		require.Len(t, known, 1+i%3)
	}
	requireStoreAnswers(t, e, []queue.DeviceRef{dev(user(0), ""), dev(user(97), ""), dev(user(users-1), "")},
		[]queue.DeviceRef{dev(user(0), "d0"), dev(user(1), "d1")}, "eviction")
}

// TestDeviceCacheConcurrent: goroutines touch, register, delete and drop
// devices while others read them and acknowledge messages to their users;
// once the writes are done the queue answers what the store holds.
func TestDeviceCacheConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	const nUsers, nDevices = 4, 5
	user := func(i int) string { return fmt.Sprintf("u%d", i) }
	device := func(i int) string { return fmt.Sprintf("d%d", i) }
	var msgs []string
	for i := range 40 {
		msgs = append(msgs, e.sendOne(t, user(i%nUsers), "x"))
	}
	stop := make(chan struct{})
	var writers, readers sync.WaitGroup
	for w := range 4 {
		writers.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 300 {
				d := dev(user(r.IntN(nUsers)), device(r.IntN(nDevices)))
				var err error
				switch r.IntN(10) {
				case 0, 1, 2, 3:
					err = e.q.TouchDevice(ctx, d, "ws")
				case 4, 5:
					_, err = e.q.UpdateDevice(ctx, d, func(cur *queue.Device) *queue.Device {
						if cur == nil {
							cur = &queue.Device{}
						}
						cur.Push = &queue.PushRegistration{Provider: "fcm", Token: fmt.Sprintf("tok-%d", r.IntN(100))}
						return cur
					})
				case 6, 7, 8:
					_, err = e.q.DeleteDevice(ctx, d)
				default:
					switch r.IntN(4) {
					case 0:
						err = e.q.DropUser(ctx, app, d.User)
					case 1:
						err = e.q.DropApp(ctx, "elsewhere") // clears the whole cache
					default:
						e.clk.Advance(time.Second)
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for r := range 4 {
		readers.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := user((r + i) % nUsers)
				var err error
				switch i % 3 {
				case 0:
					_, err = e.q.Devices(ctx, app, u)
				case 1:
					_, err = e.q.Device(ctx, dev(u, device(i%nDevices)))
					if errors.Is(err, queue.ErrNotFound) {
						err = nil
					}
				default:
					err = e.q.MarkDelivered(ctx, dev(u, device(i%nDevices)), msgs[i%len(msgs)])
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()

	var users, devs []queue.DeviceRef
	for i := range nUsers {
		users = append(users, dev(user(i), ""))
		for j := range nDevices {
			devs = append(devs, dev(user(i), device(j)))
		}
	}
	requireStoreAnswers(t, e, users, devs, "concurrent writes")
}
