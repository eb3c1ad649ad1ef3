package queue

import (
	"strings"
	"sync"
	"unsafe"
)

// deviceCache keeps the decoded device lists of recent users, so that an
// acknowledgement of a message to a whole user (knownDevices) and the
// waker's look-ups after a 202 (Devices, Device) read memory rather than
// scan the store: ScanDevices with its JSON decoding was ~8 % of the
// gateway's CPU in the soak.
//
// It is written through, and every change to it follows the user's lock.
// All device writes run under that lock: UpdateDevice, TouchDevice and
// DeleteDevice replace the user's list after their commit (deviceWritten),
// DropUser drops it, and any of them drops it if the commit failed (the
// store may or may not hold the write). A miss is filled by one ScanDevices
// under the user's lock too (devicesLocked), so no fill can store a list
// older than a write. DropApp holds no user lock: it clears the cache after
// its commit and bumps each shard's generation, and a fill stores its list
// only if the generation is the one it saw before reading the store, so it
// never brings back devices the app's deletion removed. (A writer needs no
// such check: it only replaces a list that is cached, and none can be
// filled while it holds the user's lock.) Hits take only the shard mutex.
// Like the status cache it assumes the queue is the store's only writer.
//
// Cached lists are shared and never modified: writers replace a list with
// a new one, and Devices and Device hand out copies.
//
// Memory (entrySize's estimate): an entry costs ~100 B plus the user's
// key, and per device ~90 B plus its id and transport, and ~65 B plus the
// token and topic if it has a push registration: 0.8–1.5 KiB for a user
// with 3–4 registered devices (APNs or FCM tokens). A list estimated above
// deviceEntryMax (2 KiB) is not kept: a marker sends its readers to the
// store, as before the cache. A shard keeps at most deviceCacheUsers users
// and evicts an arbitrary one when full: 16,384 users, so at most ~32 MiB
// (plus map overhead), ~20 MiB when full of typical users. Against the
// gateway's ~10 KiB per session that is the budget of ~3,000 sessions; the
// soak's 6,000 users fit in ~7 MiB.
type deviceCache struct {
	shards [deviceCacheShards]deviceShard
}

type deviceShard struct {
	mu  sync.Mutex
	gen uint64 // bumped by clear
	m   map[userKey]deviceEntry
}

type userKey struct{ app, user string }

// deviceEntry is a user's device list in id order (nil: none), or a marker
// that the list is too large to keep.
type deviceEntry struct {
	devs []Device
	big  bool
}

const (
	deviceCacheShards = 16
	deviceCacheUsers  = 1024 // per shard
	deviceEntryMax    = 2048 // estimated bytes

	deviceBytes = int(unsafe.Sizeof(Device{}))
	pushBytes   = int(unsafe.Sizeof(PushRegistration{}))
	// entryBytes is an entry's share of its map, with the slice header.
	entryBytes = int(unsafe.Sizeof(userKey{})+unsafe.Sizeof(deviceEntry{})) + 32
)

// deviceShard returns the cache shard of app/user.
func (q *Queue) deviceShard(app, user string) *deviceShard {
	return &q.devs.shards[q.stripe(app, user)%deviceCacheShards]
}

// entrySize estimates the memory an entry holds.
func entrySize(k userKey, devs []Device) int {
	n := entryBytes + len(k.app) + len(k.user)
	for i := range devs {
		d := &devs[i]
		n += deviceBytes + len(d.ID) + len(d.Transport)
		if p := d.Push; p != nil {
			n += pushBytes + len(p.Provider) + len(p.Token) + len(p.Topic) + len(p.Environment)
		}
	}
	return n
}

func newEntry(k userKey, devs []Device) deviceEntry {
	if entrySize(k, devs) > deviceEntryMax {
		return deviceEntry{big: true}
	}
	return deviceEntry{devs: devs}
}

func (s *deviceShard) get(k userKey) (deviceEntry, bool) {
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	return e, ok
}

// ticket returns the shard's generation, to pass to fill: take it before
// reading the store.
func (s *deviceShard) ticket() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// fill stores the list just read from the store for k, which the cache
// then owns, unless the cache was cleared since ticket tk was taken. The
// caller holds the user's lock.
func (s *deviceShard) fill(k userKey, devs []Device, tk uint64) {
	e := newEntry(k, devs)
	s.mu.Lock()
	if s.gen == tk {
		s.storeLocked(k, e)
	}
	s.mu.Unlock()
}

// update replaces k's cached list, if there is one, with fn's result. fn
// must not modify the list it gets. A marker stays: it holds no data. The
// caller holds the user's lock.
func (s *deviceShard) update(k userKey, fn func(cur []Device) []Device) {
	s.mu.Lock()
	if e, ok := s.m[k]; ok && !e.big {
		s.storeLocked(k, newEntry(k, fn(e.devs)))
	}
	s.mu.Unlock()
}

// storeLocked sets k's entry, making room if needed. The caller holds s.mu.
func (s *deviceShard) storeLocked(k userKey, e deviceEntry) {
	if s.m == nil {
		s.m = make(map[userKey]deviceEntry)
	}
	if _, ok := s.m[k]; !ok && len(s.m) >= deviceCacheUsers {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	// The map keeps the key given (also when replacing): don't let it pin
	// the caller's buffers.
	s.m[userKey{strings.Clone(k.app), strings.Clone(k.user)}] = e
}

func (s *deviceShard) del(k userKey) {
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// clear empties the cache and makes the fills under way store nothing.
func (c *deviceCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		s.m = nil
		s.mu.Unlock()
	}
}
