package queue

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/storage"
)

// TestDeviceCacheFillRacingDropApp plays out, step by step, a fill that
// read the store before DropApp deleted the app and stores after DropApp
// cleared the cache: it must store nothing.
func TestDeviceCacheFillRacingDropApp(t *testing.T) {
	db, err := storage.Open("mem", storage.Options{InMemory: true, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	defer db.Close()
	q, err := New(Config{DB: db, TimerInterval: -1})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	dev := DeviceRef{App: "acme", User: "alice", Device: "phone"}
	require.NoError(t, q.TouchDevice(ctx, dev, "ws"))
	s, k := q.deviceShard(dev.App, dev.User), userKey{dev.App, dev.User}
	s.del(k)

	// The fill, as devicesLocked does it, under the user's lock...
	unlock := q.lockUser(dev.App, dev.User)
	tk := s.ticket()
	devs, err := q.scanDevices(dev.App, dev.User)
	require.NoError(t, err)
	require.Len(t, devs, 1)
	// ...while DropApp (which takes no user lock) commits and clears...
	require.NoError(t, q.DropApp(ctx, dev.App))
	// ...then stores what it read.
	s.fill(k, devs, tk)
	unlock()
	_, ok := s.get(k)
	require.False(t, ok, "a fill from before the clear is not kept")
	list, err := q.Devices(ctx, dev.App, dev.User)
	require.NoError(t, err)
	require.Empty(t, list)

	s.fill(k, devs, s.ticket())
	_, ok = s.get(k)
	require.True(t, ok, "a fill after the clear is kept")
}

func TestDeviceShardBounds(t *testing.T) {
	var s deviceShard
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	small := []Device{{ID: "phone", Transport: "ws", LastSeen: at, Push: &PushRegistration{Provider: "apns", Token: strings.Repeat("a", 64)}}}
	for i := range deviceCacheUsers + 100 {
		s.fill(userKey{"acme", fmt.Sprint(i)}, small, 0)
		require.LessOrEqual(t, len(s.m), deviceCacheUsers)
	}
	var big []Device
	for i := range 20 {
		big = append(big, Device{ID: fmt.Sprintf("d%02d", i), Push: &PushRegistration{Provider: "fcm", Token: strings.Repeat("t", 160)}})
	}
	k := userKey{"acme", "big"}
	require.Greater(t, entrySize(k, big), deviceEntryMax)
	s.fill(k, big, 0)
	e, ok := s.get(k)
	require.True(t, ok)
	require.True(t, e.big, "a list too large is a marker")
	require.Nil(t, e.devs)
	require.Less(t, entrySize(userKey{"acme", "alice"}, append(small, small[0], small[0], small[0])), 1500, "4 typical devices")
}

func TestWithDeviceKeepsItsInput(t *testing.T) {
	devs := []Device{{ID: "a"}, {ID: "c"}, {ID: "e"}}
	keep := append([]Device(nil), devs...)
	id := func(l []Device) (out []string) {
		for _, d := range l {
			out = append(out, d.ID+d.Transport)
		}
		return out
	}
	require.Equal(t, []string{"a", "b", "c", "e"}, id(withDevice(devs, "b", &Device{ID: "b"})))
	require.Equal(t, []string{"a", "c", "e", "f"}, id(withDevice(devs[:3:3], "f", &Device{ID: "f"})))
	require.Equal(t, []string{"a", "cx", "e"}, id(withDevice(devs, "c", &Device{ID: "c", Transport: "x"})))
	require.Equal(t, []string{"a", "e"}, id(withDevice(devs, "c", nil)))
	require.Equal(t, []string{"a", "c", "e"}, id(withDevice(devs, "z", nil)))
	require.Nil(t, withDevice(devs[:1], "a", nil))
	require.Equal(t, keep, devs)
}
