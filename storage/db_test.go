package storage_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/storage"
)

// forEachStore runs body against an in-memory store and an on-disk store
// in t.TempDir(): the same contract holds for both.
func forEachStore(t *testing.T, body func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, kind := range []string{"mem", "disk"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			body(t, openStore(t, kind == "mem", storage.Options{}))
		})
	}
}

func openStore(t testing.TB, inMemory bool, opts storage.Options) *storage.DB {
	t.Helper()
	opts.InMemory = inMemory
	opts.CacheSize = 1 << 20
	opts.MemTableSize = 1 << 20
	dir := "mem"
	if !inMemory {
		dir = t.TempDir()
	}
	db, err := storage.Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close: %v", err)
		}
	})
	return db
}

func TestNextSeqConcurrentUniqueAndIncreasing(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		// Start just below a lease boundary so the workers cross it.
		first, err := db.NextSeq(1<<20 - 50)
		require.NoError(t, err)
		require.Equal(t, uint64(1), first)

		const workers, per = 8, 500
		got := make([][][2]uint64, workers) // per worker: [first, n]
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range per {
					n := 1 + (w+i)%3
					s, err := db.NextSeq(n)
					if err != nil {
						t.Error(err)
						return
					}
					got[w] = append(got[w], [2]uint64{s, uint64(n)})
				}
			})
		}
		wg.Wait()

		seen := map[uint64]bool{}
		for w, list := range got {
			var prev uint64
			for _, r := range list {
				require.Greater(t, r[0], prev, "worker %d: not increasing", w)
				for s := r[0]; s < r[0]+r[1]; s++ {
					require.False(t, seen[s], "seq %d handed out twice", s)
					seen[s] = true
				}
				prev = r[0] + r[1] - 1
			}
		}
		require.Len(t, seen, workers*per*2) // n cycles 1,2,3: mean 2
		require.Equal(t, uint64(1<<20-50+workers*per*2), db.LastSeq())
	})
}

func TestNextSeqRejectsNonPositive(t *testing.T) {
	t.Parallel()
	db := openStore(t, true, storage.Options{})
	for _, n := range []int{0, -1} {
		_, err := db.NextSeq(n)
		require.Error(t, err)
	}
	s, err := db.NextSeq(1)
	require.NoError(t, err)
	require.Equal(t, uint64(1), s)
}

func TestNextSeqNeverReusedAfterReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var last uint64
	for round := range 3 {
		db, err := storage.Open(dir, storage.Options{CacheSize: 1 << 20, MemTableSize: 1 << 20})
		require.NoError(t, err)
		for range 100 {
			s, err := db.NextSeq(3)
			require.NoError(t, err)
			require.Greater(t, s, last, "round %d: seq reused", round)
			last = s + 2
		}
		require.NoError(t, db.Close())
	}
}

func TestBatchCommit(t *testing.T) {
	t.Parallel()
	for _, inMem := range []bool{true, false} {
		t.Run(map[bool]string{true: "mem", false: "disk"}[inMem], func(t *testing.T) {
			t.Parallel()
			type commit struct{ sync bool }
			var mu sync.Mutex
			var commits []commit
			db := openStore(t, inMem, storage.Options{OnCommit: func(d time.Duration, sync bool) {
				mu.Lock()
				commits = append(commits, commit{sync})
				mu.Unlock()
			}})

			b := db.NewBatch()
			require.True(t, b.Empty())
			b.PutMessage("acme", "alice", 1, []byte("m1"))
			b.PutStatus("acme", 1, []byte("s1"))
			b.PutTimer(1000, 1, 1, []byte("t1"))
			require.False(t, b.Empty())
			require.Positive(t, b.Len())
			require.NoError(t, b.Commit(true))

			v, err := db.GetMessage("acme", "alice", 1)
			require.NoError(t, err)
			require.Equal(t, "m1", string(v))
			v, err = db.GetStatus("acme", 1)
			require.NoError(t, err)
			require.Equal(t, "s1", string(v))

			b = db.NewBatch()
			b.DeleteMessage("acme", "alice", 1)
			b.PutCursor("acme", "alice", "phone", 2)
			require.NoError(t, b.Commit(false))
			_, err = db.GetMessage("acme", "alice", 1)
			require.ErrorIs(t, err, storage.ErrNotFound)
			c, err := db.GetCursor("acme", "alice", "phone")
			require.NoError(t, err)
			require.Equal(t, uint64(2), c)

			// A closed batch applies nothing.
			b = db.NewBatch()
			b.PutMessage("acme", "alice", 9, []byte("discarded"))
			b.Close()
			_, err = db.GetMessage("acme", "alice", 9)
			require.ErrorIs(t, err, storage.ErrNotFound)

			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, []commit{{true}, {false}}, commits)
		})
	}
}

func TestSyncedBatchSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, err := storage.Open(dir, storage.Options{})
	require.NoError(t, err)
	b := db.NewBatch()
	b.PutMessage("acme", "alice", 5, []byte("payload"))
	b.PutEvent("acme", 6, []byte("event"))
	require.NoError(t, b.Commit(true))
	require.NoError(t, db.Close())

	db, err = storage.Open(dir, storage.Options{})
	require.NoError(t, err)
	defer db.Close()
	v, err := db.GetMessage("acme", "alice", 5)
	require.NoError(t, err)
	require.Equal(t, "payload", string(v))
	n, err := db.CountMessages()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// fillApp writes one record of every app-scoped table for app, with users
// alice and ab.
func fillApp(t *testing.T, db *storage.DB, app string) {
	t.Helper()
	b := db.NewBatch()
	b.PutApp(app, []byte(app))
	for _, u := range []string{"alice", "ab"} {
		b.PutUser(app, u, []byte(app+"/"+u))
		b.PutDevice(app, u, "phone", []byte(app+"/"+u))
		b.PutCursor(app, u, "phone", 3)
		b.PutMessage(app, u, 1, []byte(app+"/"+u))
		b.PutCollapse(app, u, "otp", []uint64{1})
		b.PutWakeTimes(app, u, "phone", []int64{1000, 2000})
	}
	b.PutStatus(app, 1, []byte(app))
	b.PutEvent(app, 2, []byte(app))
	b.PutIdem(app, storage.Hash("k"), []byte(app))
	b.PutAppCursor(app, "webhook", 7)
	require.NoError(t, b.Commit(true))
}

type appView struct {
	App, Status, Idem    string
	Users, Devices, Msgs []string
	Events               []uint64
	Cursor, AppCursor    uint64
	Collapse             uint64
	Wakes                []int64
}

func viewApp(t *testing.T, db *storage.DB, app string) appView {
	t.Helper()
	var v appView
	str := func(b []byte, err error) string {
		if errors.Is(err, storage.ErrNotFound) {
			return ""
		}
		require.NoError(t, err)
		return string(b)
	}
	v.App = str(db.GetApp(app))
	v.Status = str(db.GetStatus(app, 1))
	v.Idem = str(db.GetIdem(app, storage.Hash("k")))
	require.NoError(t, db.ScanUsers(app, "", func(u string, _ []byte) bool { v.Users = append(v.Users, u); return true }))
	for _, u := range v.Users {
		require.NoError(t, db.ScanDevices(app, u, func(d string, _ []byte) bool { v.Devices = append(v.Devices, u+"/"+d); return true }))
	}
	for _, u := range []string{"alice", "ab"} {
		require.NoError(t, db.ScanMessages(app, u, 0, func(_ uint64, m []byte) bool { v.Msgs = append(v.Msgs, string(m)); return true }))
		c, err := db.GetCursor(app, u, "phone")
		require.NoError(t, err)
		v.Cursor += c
		if s, err := db.GetCollapse(app, u, "otp"); err == nil {
			v.Collapse += s[0]
		} else {
			require.ErrorIs(t, err, storage.ErrNotFound)
		}
		w, err := db.GetWakeTimes(app, u, "phone")
		require.NoError(t, err)
		v.Wakes = append(v.Wakes, w...)
	}
	require.NoError(t, db.ScanEvents(app, 0, func(s uint64, _ []byte) bool { v.Events = append(v.Events, s); return true }))
	c, err := db.GetAppCursor(app, "webhook")
	require.NoError(t, err)
	v.AppCursor = c
	return v
}

func TestDeleteAppRemovesOnlyThatApp(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		for _, app := range []string{"a", "ab", "b"} {
			fillApp(t, db, app)
		}
		before := viewApp(t, db, "ab")
		require.Equal(t, "ab", before.App)
		require.Len(t, before.Msgs, 2)

		require.NoError(t, db.DeleteApp("a"))
		require.Equal(t, appView{}, viewApp(t, db, "a"))
		require.Equal(t, before, viewApp(t, db, "ab"))
		require.Equal(t, "b", viewApp(t, db, "b").App)

		var apps []string
		require.NoError(t, db.ScanApps(func(app string, _ []byte) bool { apps = append(apps, app); return true }))
		require.Equal(t, []string{"b", "ab"}, apps, "key order: shorter ids first")
		n, err := db.CountMessages()
		require.NoError(t, err)
		require.EqualValues(t, 4, n)
	})
}

func TestDeleteUserRemovesOnlyThatUser(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		fillApp(t, db, "a")
		fillApp(t, db, "b")
		b := db.NewBatch()
		b.PutUser("a", "abc", nil)
		b.PutMessage("a", "abc", 1, []byte("abc"))
		b.PutDevice("a", "abc", "phone", nil)
		require.NoError(t, b.Commit(true))
		otherApp := viewApp(t, db, "b")

		b = db.NewBatch()
		b.DeleteUser("a", "ab")
		require.NoError(t, b.Commit(true))

		_, err := db.GetUser("a", "ab")
		require.ErrorIs(t, err, storage.ErrNotFound)
		_, err = db.GetDevice("a", "ab", "phone")
		require.ErrorIs(t, err, storage.ErrNotFound)
		c, err := db.GetCursor("a", "ab", "phone")
		require.NoError(t, err)
		require.Zero(t, c)
		_, err = db.GetCollapse("a", "ab", "otp")
		require.ErrorIs(t, err, storage.ErrNotFound)
		_, err = db.GetMessage("a", "ab", 1)
		require.ErrorIs(t, err, storage.ErrNotFound)
		w, err := db.GetWakeTimes("a", "ab", "phone")
		require.NoError(t, err)
		require.Empty(t, w, "wake times go with the user")

		// Status records stay (their own timers remove them); the other
		// users of the app, "abc" included, and the other app are intact.
		_, err = db.GetStatus("a", 1)
		require.NoError(t, err)
		for _, u := range []string{"alice", "abc"} {
			_, err = db.GetUser("a", u)
			require.NoError(t, err, u)
			_, err = db.GetMessage("a", u, 1)
			require.NoError(t, err, u)
			_, err = db.GetDevice("a", u, "phone")
			require.NoError(t, err, u)
		}
		w, err = db.GetWakeTimes("a", "alice", "phone")
		require.NoError(t, err)
		require.Equal(t, []int64{1000, 2000}, w)
		require.Equal(t, otherApp, viewApp(t, db, "b"))

		b = db.NewBatch()
		b.DeleteDevice("a", "alice", "phone")
		require.NoError(t, b.Commit(false))
		_, err = db.GetDevice("a", "alice", "phone")
		require.ErrorIs(t, err, storage.ErrNotFound)
		c, err = db.GetCursor("a", "alice", "phone")
		require.NoError(t, err)
		require.Zero(t, c)
		w, err = db.GetWakeTimes("a", "alice", "phone")
		require.NoError(t, err)
		require.Empty(t, w, "wake times go with the device")
	})
}

func TestWakeTimes(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		w, err := db.GetWakeTimes("a", "u", "d")
		require.NoError(t, err)
		require.Empty(t, w)
		at := []int64{1_700_000_000_000, 1_700_000_060_000, 1_700_000_180_000}
		b := db.NewBatch()
		b.PutWakeTimes("a", "u", "d", at)
		b.PutWakeTimes("a", "u", "dd", at[:1])
		require.NoError(t, b.Commit(false))
		w, err = db.GetWakeTimes("a", "u", "d")
		require.NoError(t, err)
		require.Equal(t, at, w)

		// Replaced, then deleted by an empty list; the other device keeps its own.
		b = db.NewBatch()
		b.PutWakeTimes("a", "u", "d", at[2:])
		require.NoError(t, b.Commit(false))
		w, err = db.GetWakeTimes("a", "u", "d")
		require.NoError(t, err)
		require.Equal(t, at[2:], w)
		b = db.NewBatch()
		b.PutWakeTimes("a", "u", "d", nil)
		require.NoError(t, b.Commit(false))
		w, err = db.GetWakeTimes("a", "u", "d")
		require.NoError(t, err)
		require.Empty(t, w)
		w, err = db.GetWakeTimes("a", "u", "dd")
		require.NoError(t, err)
		require.Equal(t, at[:1], w)
	})
}

func TestEventsScanAndTrim(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		b := db.NewBatch()
		for s := uint64(1); s <= 10; s++ {
			b.PutEvent("a", s, []byte{byte(s)})
			b.PutEvent("ab", s, []byte{byte(s)})
		}
		require.NoError(t, b.Commit(true))

		scan := func(app string, after uint64, limit int) []uint64 {
			var out []uint64
			require.NoError(t, db.ScanEvents(app, after, func(s uint64, v []byte) bool {
				require.Equal(t, []byte{byte(s)}, v)
				out = append(out, s)
				return len(out) < limit
			}))
			return out
		}
		require.Equal(t, []uint64{1, 2, 3}, scan("a", 0, 3))
		require.Equal(t, []uint64{8, 9, 10}, scan("a", 7, 100))
		require.Empty(t, scan("a", 10, 100))
		require.Empty(t, scan("a", math.MaxUint64, 100))

		require.NoError(t, db.TrimEvents("a", 6))
		require.Equal(t, []uint64{6, 7, 8, 9, 10}, scan("a", 0, 100))
		require.Len(t, scan("ab", 0, 100), 10, "another app's feed is not trimmed")
		require.NoError(t, db.TrimEvents("a", math.MaxUint64))
		require.Empty(t, scan("a", 0, 100))
	})
}

func TestScanTimers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		b := db.NewBatch()
		b.PutTimer(300, 1, 3, []byte("c"))
		b.PutTimer(100, 2, 1, []byte("a"))
		b.PutTimer(200, 1, 2, []byte("b"))
		b.PutTimer(200, 1, 9, []byte("b2"))
		require.NoError(t, b.Commit(true))

		scan := func(until int64) []string {
			var out []string
			require.NoError(t, db.ScanTimers(until, func(at int64, kind byte, seq uint64, v []byte) bool {
				out = append(out, string(v))
				return true
			}))
			return out
		}
		require.Empty(t, scan(99))
		require.Equal(t, []string{"a"}, scan(100))
		require.Equal(t, []string{"a", "b", "b2"}, scan(299))
		require.Equal(t, []string{"a", "b", "b2", "c"}, scan(math.MaxInt64))

		b = db.NewBatch()
		b.DeleteTimer(200, 1, 2)
		require.NoError(t, b.Commit(false))
		require.Equal(t, []string{"a", "b2", "c"}, scan(1000))
	})
}

func TestScanUsersPages(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		users := []string{"bob", "alice", "ab", "abc", "a", "zed"}
		b := db.NewBatch()
		for _, u := range users {
			b.PutUser("acme", u, []byte(u))
		}
		b.PutUser("acme2", "x", nil)
		require.NoError(t, b.Commit(true))

		var all []string
		after := ""
		for {
			var page []string
			require.NoError(t, db.ScanUsers("acme", after, func(u string, v []byte) bool {
				require.Equal(t, u, string(v))
				page = append(page, u)
				return len(page) < 2
			}))
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
			after = page[len(page)-1]
		}
		require.Len(t, all, len(users))
		require.ElementsMatch(t, users, all)
		require.False(t, slices.Contains(all, "x"))
	})
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		require.NoError(t, db.Close())
		require.ErrorIs(t, db.Close(), storage.ErrClosed)
		_, err := db.GetMessage("a", "b", 1)
		require.ErrorIs(t, err, storage.ErrClosed)
		_, err = db.NextSeq(1)
		require.ErrorIs(t, err, storage.ErrClosed)
		require.ErrorIs(t, db.ScanEvents("a", 0, func(uint64, []byte) bool { return true }), storage.ErrClosed)
		require.ErrorIs(t, db.Flush(), storage.ErrClosed)
		b := db.NewBatch()
		b.PutMessage("a", "b", 1, nil)
		require.ErrorIs(t, b.Commit(true), storage.ErrClosed)
	})
}

// TestLookupEveryLevel checks the reads of usually absent keys (idempotency
// keys, collapse keys, refused tokens) find what is in the memtable and
// what was compacted into the bottom level, whose filters pebble's Get
// does not read, and nothing else; an empty value is still found.
func TestLookupEveryLevel(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, db *storage.DB) {
		put := func(from, to int) {
			b := db.NewBatch()
			for i := from; i < to; i++ {
				k := fmt.Sprint("key-", i)
				b.PutIdem("app", storage.Hash(k), []byte(k))
				b.PutCollapse("app", "alice", k, []uint64{uint64(i), uint64(i) + 1e9}[:1+i%2])
				b.PutInvalidToken("app", storage.Hash(k), nil)
			}
			require.NoError(t, b.Commit(true))
		}
		put(0, 2000)
		require.NoError(t, db.Flush())
		require.NoError(t, db.CompactAll())
		put(2000, 2100) // in the memtable
		for _, i := range []int{0, 1234, 1999, 2000, 2099} {
			k := fmt.Sprint("key-", i)
			v, err := db.GetIdem("app", storage.Hash(k))
			require.NoError(t, err, k)
			require.Equal(t, k, string(v))
			seqs, err := db.GetCollapse("app", "alice", k)
			require.NoError(t, err, k)
			require.Equal(t, []uint64{uint64(i), uint64(i) + 1e9}[:1+i%2], seqs)
			v, err = db.GetInvalidToken("app", storage.Hash(k))
			require.NoError(t, err, k)
			require.Empty(t, v)
		}
		for _, k := range []string{"key-2100", "key-", "key-12345", "key-0 "} {
			_, err := db.GetIdem("app", storage.Hash(k))
			require.ErrorIs(t, err, storage.ErrNotFound, k)
			_, err = db.GetCollapse("app", "alice", k)
			require.ErrorIs(t, err, storage.ErrNotFound, k)
			_, err = db.GetInvalidToken("app", storage.Hash(k))
			require.ErrorIs(t, err, storage.ErrNotFound, k)
		}
		// Another app's or user's keys are not found either.
		_, err := db.GetIdem("other", storage.Hash("key-1"))
		require.ErrorIs(t, err, storage.ErrNotFound)
		_, err = db.GetCollapse("app", "bob", "key-1")
		require.ErrorIs(t, err, storage.ErrNotFound)
		_, err = db.GetInvalidToken("other", storage.Hash("key-1"))
		require.ErrorIs(t, err, storage.ErrNotFound)
	})
}

// Flushes pile up in L0 until it holds 8 sublevels before a compaction
// merges them into the level below (l0CompactionThreshold in db.go: keys
// spread over their table made every L0 compaction at 2 sublevels rewrite
// the same files), and then one does.
func TestL0CompactsFromEightSublevels(t *testing.T) {
	t.Parallel()
	db := openStore(t, false, storage.Options{})
	flush := func(round int) {
		b := db.NewBatch()
		for i := range 200 { // idempotency keys: by hash, all over the table
			b.PutIdem("app", storage.Hash(fmt.Sprintf("key-%d-%d", round, i)), make([]byte, 100))
		}
		require.NoError(t, b.Commit(false))
		require.NoError(t, db.Flush())
	}
	for r := range 7 {
		flush(r)
	}
	s := db.Stats()
	require.EqualValues(t, 7, s.L0Sublevels, "seven flushes over one key range, none compacted")
	require.Zero(t, s.Compactions)
	for r := 7; r < 10; r++ {
		flush(r)
	}
	require.Eventually(t, func() bool {
		s := db.Stats()
		return s.Compactions > 0 && s.L0Sublevels < 8
	}, 20*time.Second, 10*time.Millisecond, "L0 at 10 sublevels was never compacted")
}
