package storage

import (
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
)

// Batch collects writes that commit atomically. A Batch is not safe for
// concurrent use; Commit or Close it exactly once.
type Batch struct {
	db  *DB
	b   *pebble.Batch
	err error
	// key is scratch space for the keys of the hot writes: Pebble copies
	// a key into the batch, so one buffer serves them all.
	key []byte
}

// NewBatch starts an atomic batch of writes.
func (db *DB) NewBatch() *Batch { return &Batch{db: db, b: db.pdb.NewBatch()} }

// Len reports the batch's encoded size in bytes.
func (b *Batch) Len() int { return b.b.Len() }

// Empty reports whether the batch holds no writes.
func (b *Batch) Empty() bool { return b.b.Empty() }

// Commit applies the batch. With sync, Commit returns only after the WAL
// fsync that covers the batch; concurrent synced commits share one fsync
// (Pebble's commit pipeline). Without sync the batch is durable once any
// later synced commit returns. The batch is closed afterwards.
func (b *Batch) Commit(sync bool) error {
	defer b.b.Close()
	if b.err != nil {
		return b.err
	}
	return b.db.commit(b.b, sync)
}

// Close discards an uncommitted batch.
func (b *Batch) Close() { b.b.Close() }

func (b *Batch) set(k, v []byte) {
	if b.err == nil {
		b.err = b.b.Set(k, v, nil)
	}
}

func (b *Batch) del(k []byte) {
	if b.err == nil {
		b.err = b.b.Delete(k, nil)
	}
}

// singleDel deletes a key written exactly once since it was last deleted
// (Pebble's SingleDelete): when the deletion meets that write in a flush
// or compaction both vanish, where a Delete's tombstone would travel on
// down the LSM. A key written twice and single-deleted may come back, so
// only keys that are never overwritten use it; Pebble reports a breach
// of that rule, which the store logs and counts (EventListener).
func (b *Batch) singleDel(k []byte) {
	if b.err == nil {
		b.err = b.b.SingleDelete(k, nil)
	}
}

func (b *Batch) delRange(start, end []byte) {
	if b.err == nil {
		b.err = b.b.DeleteRange(start, end, nil)
	}
}

func seq8(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// PutApp stores the app record.
func (b *Batch) PutApp(app string, v []byte) { b.set(appPrefix(tableApp, app), v) }

// PutAPIKey stores the record of the API key with hash h.
func (b *Batch) PutAPIKey(h [32]byte, v []byte) { b.set(append([]byte{tableAPIKey}, h[:]...), v) }

// DeleteAPIKey removes the API key with hash h.
func (b *Batch) DeleteAPIKey(h [32]byte) { b.del(append([]byte{tableAPIKey}, h[:]...)) }

// PutUser stores the user record.
func (b *Batch) PutUser(app, user string, v []byte) { b.set(userPrefix(tableUser, app, user), v) }

// DeleteUser removes the user and everything under it: devices, cursors,
// message log, collapse keys and wake times. Status records stay until
// their timers.
func (b *Batch) DeleteUser(app, user string) {
	for _, t := range userScopedTables {
		p := userPrefix(t, app, user)
		b.delRange(p, prefixEnd(p))
	}
}

// PutDevice stores a device record.
func (b *Batch) PutDevice(app, user, device string, v []byte) { b.set(DeviceKey(app, user, device), v) }

// DeleteDevice removes a device record, its cursor and its wake times.
func (b *Batch) DeleteDevice(app, user, device string) {
	b.del(DeviceKey(app, user, device))
	b.del(deviceKey(tableCursor, app, user, device))
	b.del(deviceKey(tableWake, app, user, device))
}

// PutWakeTimes stores the times (Unix milliseconds, oldest first) of a
// device's recent wake pushes, replacing what was there. None deletes the
// record.
func (b *Batch) PutWakeTimes(app, user, device string, atMillis []int64) {
	k := deviceKey(tableWake, app, user, device)
	if len(atMillis) == 0 {
		b.del(k)
		return
	}
	v := make([]byte, 0, 8*len(atMillis))
	for _, at := range atMillis {
		v = appendUint64(v, uint64(max(at, 0)))
	}
	b.set(k, v)
}

// PutCursor sets a device's delivery cursor.
func (b *Batch) PutCursor(app, user, device string, seq uint64) {
	b.set(deviceKey(tableCursor, app, user, device), seq8(seq))
}

// PutMessage stores message seq in the log of app/user.
func (b *Batch) PutMessage(app, user string, seq uint64, v []byte) {
	b.key = appendUint64(appendUserPrefix(b.key[:0], tableMessage, app, user), seq)
	b.set(b.key, v)
}

// DeleteMessage removes message seq from the log of app/user. A message
// is written once (its seq is never reused), so this is a single delete:
// a message acknowledged before its memtable is flushed leaves nothing
// on disk.
func (b *Batch) DeleteMessage(app, user string, seq uint64) {
	b.key = appendUint64(appendUserPrefix(b.key[:0], tableMessage, app, user), seq)
	b.singleDel(b.key)
}

// PutStatus stores the status record of message seq of app.
func (b *Batch) PutStatus(app string, seq uint64, v []byte) {
	b.key = appendUint64(appendAppPrefix(b.key[:0], tableStatus, app), seq)
	b.set(b.key, v)
}

// DeleteStatus removes the status record of message seq of app.
func (b *Batch) DeleteStatus(app string, seq uint64) { b.del(StatusKey(app, seq)) }

// PutCollapse maps a collapse key of app/user to seqs: the messages of
// the newest POST with that key to the user (more than one when the POST
// named the user more than once, e.g. "alice" and "alice/phone").
func (b *Batch) PutCollapse(app, user, key string, seqs []uint64) {
	v := make([]byte, 0, 8*len(seqs))
	for _, s := range seqs {
		v = binary.BigEndian.AppendUint64(v, s)
	}
	b.set(appendComponent(userPrefix(tableCollapse, app, user), key), v)
}

// DeleteCollapse removes a collapse key mapping.
func (b *Batch) DeleteCollapse(app, user, key string) {
	b.del(appendComponent(userPrefix(tableCollapse, app, user), key))
}

// PutTimer schedules a timer of kind for seq at atMillis, carrying v.
func (b *Batch) PutTimer(atMillis int64, kind byte, seq uint64, v []byte) {
	b.key = appendTimerKey(b.key[:0], atMillis, kind, seq)
	b.set(b.key, v)
}

// DeleteTimer removes a timer.
func (b *Batch) DeleteTimer(atMillis int64, kind byte, seq uint64) {
	b.key = appendTimerKey(b.key[:0], atMillis, kind, seq)
	b.del(b.key)
}

// DeleteTimerOnce removes a timer whose key was written once and is
// never written again (a message's expiry), with a single delete, as
// DeleteMessage does. Deleting it twice is harmless.
func (b *Batch) DeleteTimerOnce(atMillis int64, kind byte, seq uint64) {
	b.key = appendTimerKey(b.key[:0], atMillis, kind, seq)
	b.singleDel(b.key)
}

// PutEvent appends event seq to the feed of app.
func (b *Batch) PutEvent(app string, seq uint64, v []byte) {
	b.key = appendUint64(appendAppPrefix(b.key[:0], tableEvent, app), seq)
	b.set(b.key, v)
}

// PutIdem stores the answer for an idempotency key hash of app.
func (b *Batch) PutIdem(app string, h [32]byte, v []byte) {
	b.set(append(appPrefix(tableIdem, app), h[:]...), v)
}

// DeleteIdem forgets an idempotency key hash of app.
func (b *Batch) DeleteIdem(app string, h [32]byte) { b.del(append(appPrefix(tableIdem, app), h[:]...)) }

// PutInvalidToken remembers a push token hash as invalid for app (another
// app's verdict on the same token does not count: SPEC section 1).
func (b *Batch) PutInvalidToken(app string, h [32]byte, v []byte) {
	b.set(append(appPrefix(tableToken, app), h[:]...), v)
}

// PutAppCursor sets a per-app consumer cursor.
func (b *Batch) PutAppCursor(app, name string, seq uint64) {
	b.set(appendComponent(appPrefix(tableAppCursor, app), name), seq8(seq))
}
