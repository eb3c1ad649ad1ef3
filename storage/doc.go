// Package storage is Tether's durable store: a Pebble database and the key
// schema of everything the gateway keeps. It is the only package that
// imports Pebble, it imports nothing of Tether's, and its values are opaque
// bytes encoded by the callers (queue and gateway).
//
// # Key schema
//
// Every key starts with a one-byte table prefix. Variable-length ids (app,
// user, device, names) are written as a one-byte length followed by the
// bytes, never with a separator, so the key range of one id can never
// contain a key of another (user "ab" and user "abc" have disjoint ranges).
// Sequence numbers and times are 8-byte big-endian, so they sort
// numerically. In the table below, |x| is a length-prefixed component and
// seq, at are 8-byte big-endian integers.
//
//	Z "seq"                      sequence lease: numbers below it are reserved
//	A |app|                      app record (name, settings, secrets)
//	K sha256(api key)            API key record (app, expiry); the key itself is never stored
//	U |app| |user|               user record: SCRAM-SHA-1 and SCRAM-SHA-256 salted keys, never a password
//	D |app| |user| |device|      device record (push registration, last seen)
//	C |app| |user| |device|      device cursor: every message below it is done for the device
//	M |app| |user| seq           the user's message log: payload and delivery options
//	S |app| seq                  message status record, kept 7 days after a final state
//	L |app| |user| |key|         collapse key → seqs (8 bytes each) of the newest POST's messages carrying it
//	T at kind seq                timer index (expiry, fallback, status and idempotency clean-up), due time first
//	E |app| seq                  the app's event feed, oldest first
//	I |app| sha256(key)          idempotency key → the first answer, kept 24 h
//	N |app| sha256(prov:token)   push tokens the provider reported invalid to the app
//	W |app| |name|               per-app consumer cursors (for example the webhook outbox)
//	P |app| |user| |device|      times of the device's recent wake pushes (the hourly cap across restarts)
//
// Sequence numbers come from one allocator (NextSeq) shared by messages and
// events: unique for the store's life, increasing, never reused after a
// crash (a durable lease is taken a million numbers at a time).
//
// A message's log entry (M) and its expiry timer are written once and
// never overwritten, since their keys carry that seq, so they are removed
// with single deletes: a message acknowledged before its memtable is
// flushed leaves nothing on disk, where a Delete leaves a tombstone that
// compactions carry down the LSM (in the churn benchmark flushes and
// compactions write 18 % less with single deletes). Pebble reports a single
// delete that meets a key written twice; the store logs and counts it
// (tether_store_bad_single_deletes_total).
//
// # Durability
//
// Writes go through a Batch that commits atomically. Commit(true) returns
// only after the WAL fsync covering the batch; Pebble's commit pipeline
// makes concurrent synced commits share one fsync (group commit), so many
// enqueues pay for one disk flush. Commit(false) is for state that may be
// redone after a crash (delivery statuses, cursors): it becomes durable with
// the next synced commit, since the WAL is written in order.
//
// Pebble publishes a commit to readers before its fsync returns, so a reader
// can see data that is not yet durable. Callers acknowledge a client only
// after Commit returns.
//
// # Background work
//
// Memtable flushes and compactions write their tables through files that
// call runtime.Gosched after each (4 KiB) write (yield.go): they run in
// the CPU the gateway's foreground work leaves, instead of holding a core
// for the scheduler's 10 ms slices while REST handlers, commit waiters and
// session writers queue behind them. On two cores a flush or compaction
// takes two to four times as long in wall time, and the write-stall
// counter says if they ever fall behind.
//
// # Concurrency
//
// A DB is safe for concurrent use. Reads see a consistent point-in-time view
// per call. Read-modify-write sequences need the caller's own locking (the
// queue serialises per user).
package storage
