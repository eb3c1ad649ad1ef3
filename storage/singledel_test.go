package storage_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/storage"
)

// A message and its expiry timer are single-deleted: written once and
// deleted before their memtable is flushed (as a message
// acknowledged within seconds is), they leave nothing in the
// sstables, where a Delete leaves a tombstone for each to carry down the
// LSM. A single delete over a key written twice is counted as the bug it
// would be.
func TestSingleDeletes(t *testing.T) {
	const n = 2000
	payload := bytes.Repeat([]byte("p"), 200)
	// flushed writes n keys with put and deletes them with del, each
	// in a batch of its own, then flushes and returns the bytes the
	// flush wrote.
	flushed := func(put, del func(b *storage.Batch, seq uint64)) (*storage.DB, uint64) {
		db := openStore(t, false, storage.Options{}) // 1 MiB memtables
		for seq := uint64(1); seq <= n; seq++ {
			for _, op := range []func(*storage.Batch, uint64){put, del} {
				b := db.NewBatch()
				op(b, seq)
				require.NoError(t, b.Commit(false))
			}
		}
		require.NoError(t, db.Flush())
		return db, db.Stats().FlushedBytes
	}
	timerAt := func(seq uint64) int64 { return 1_800_000_000_000 + int64(seq) }
	db, single := flushed(func(b *storage.Batch, seq uint64) {
		b.PutMessage("acme", "alice", seq, payload)
		b.PutTimer(timerAt(seq), 'e', seq, []byte("acme"))
	}, func(b *storage.Batch, seq uint64) {
		b.DeleteMessage("acme", "alice", seq)
		b.DeleteTimerOnce(timerAt(seq), 'e', seq)
	})
	_, tombstones := flushed(func(b *storage.Batch, seq uint64) {
		b.PutTimer(timerAt(seq), 'e', seq, []byte("acme"))
	}, func(b *storage.Batch, seq uint64) {
		b.DeleteTimer(timerAt(seq), 'e', seq)
	})
	t.Logf("flushed: %d bytes after single deletes, %d after Deletes", single, tombstones)
	require.Less(t, single, uint64(4096), "single deletes flushed %d bytes: more than one empty table", single)
	require.Greater(t, tombstones, uint64(n*5), "the Delete tombstones of %d timers", n)
	_, err := db.GetMessage("acme", "alice", 7)
	require.ErrorIs(t, err, storage.ErrNotFound)
	require.Zero(t, db.Stats().BadSingleDels)

	// The rule broken: message 1 written twice, then single-deleted.
	for range 2 {
		b := db.NewBatch()
		b.PutMessage("acme", "bob", 1, payload)
		require.NoError(t, b.Commit(true))
	}
	b := db.NewBatch()
	b.DeleteMessage("acme", "bob", 1)
	require.NoError(t, b.Commit(true))
	require.NoError(t, db.Flush())
	require.Equal(t, uint64(1), db.Stats().BadSingleDels)
}
