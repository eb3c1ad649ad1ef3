package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// Sentinel errors.
var (
	// ErrNotFound is returned by the Get methods for a missing key.
	ErrNotFound = errors.New("storage: not found")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("storage: closed")
)

// Options configures Open. The zero value is a usable on-disk store.
type Options struct {
	// InMemory keeps the store in memory (tests). Zero value: on disk.
	InMemory bool
	// CacheSize is the block cache size in bytes. Zero value means 64 MiB.
	CacheSize int64
	// MemTableSize is the size of one memtable. Zero value means 32 MiB.
	MemTableSize uint64
	// WALMinSyncInterval delays WAL syncs to batch more commits per fsync.
	// Zero value means no delay: concurrent commits already share fsyncs.
	WALMinSyncInterval time.Duration
	// Logger receives Pebble's log lines. Nil means no logging.
	Logger *zap.Logger
	// OnCommit, when set, is called after every commit with its duration
	// and whether it was synced (for metrics). It must not block.
	OnCommit func(d time.Duration, sync bool)
}

const (
	defaultCacheSize    = 64 << 20
	defaultMemTableSize = 32 << 20

	// L0 is compacted into the level below once it holds 8 sublevels
	// (Pebble compacts at half the threshold), where Pebble's default
	// compacts at 2. Each such compaction rewrites every file of the
	// level below that its keys overlap, and some tables take keys all
	// over their range: idempotency keys (by hash), the queues of
	// offline users, device records. At 2 sublevels those files were
	// rewritten every other flush: in the soak, compactions wrote
	// 1,710-1,910 bytes per message, 4.6-5.1 times what flushes wrote;
	// at 8, 720-920 (docs/benchmarks.md, session 30); with MinLZ (Open),
	// the queue's BenchmarkSoakMixWrites spends 12 % less CPU per POST,
	// its compactions 63 % fewer bytes. Reads pay with up to 8
	// sublevels: point reads pass most by their bloom filters, scans
	// merge them. Commits stop at 24 sublevels (Pebble's default 12), as
	// compactions start later and take more at once.
	l0CompactionThreshold = 16
	l0StopWritesThreshold = 24

	// seqLeaseBlock is how many sequence numbers one durable lease covers.
	seqLeaseBlock = 1 << 20
)

// DB is the Tether store. All methods are safe for concurrent use.
type DB struct {
	seq         atomic.Uint64 // last sequence number handed out
	syncCommits atomic.Uint64 // synced commits since open
	pdb         *pebble.DB
	onCommit    func(time.Duration, bool)
	closed      atomic.Bool // set by Close; Pebble panics on a closed DB
	stalls      *stalls
	// badSingleDels counts single deletes that met a key written more
	// than once (Batch.singleDel): a bug of ours if ever non-zero.
	badSingleDels *atomic.Uint64

	leaseMu sync.Mutex
	lease   atomic.Uint64 // sequence numbers below this are durably reserved
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.CacheSize == 0 {
		opts.CacheSize = defaultCacheSize
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = defaultMemTableSize
	}
	// Pebble reserves the memory of every memtable (the one being
	// written, those waiting for or in a flush, one kept for reuse) out of
	// the block cache. A cache of CacheSize alone was left with no room at
	// all once two 32 MiB memtables existed, and every read went to the
	// files: the reservations are added on top, so that blocks get
	// CacheSize. Reservations are not allocations: the process only grows
	// by the blocks actually cached.
	const memTables = 4 // MemTableStopWritesThreshold
	cache := pebble.NewCache(opts.CacheSize + memTables*int64(opts.MemTableSize))
	defer cache.Unref()
	st := &stalls{}
	bad := new(atomic.Uint64)
	po := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                opts.MemTableSize,
		MemTableStopWritesThreshold: memTables,
		FormatMajorVersion:          pebble.FormatNewest,
		L0CompactionThreshold:       l0CompactionThreshold,
		L0StopWritesThreshold:       l0StopWritesThreshold,
		Logger:                      pebbleLogger{zapOrNop(opts.Logger).Sugar()},
		EventListener:               eventListener(zapOrNop(opts.Logger), st, bad),
	}
	// Pebble's fastest compression on every level (DBCompressionFastest):
	// MinLZ on amd64, in place of its default, Snappy (which it keeps on
	// arm64, where Snappy has assembly and MinLZ has not). MinLZ's tables
	// are smaller too: flushes wrote 7 % fewer bytes in the soak.
	po.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionFastest })
	// Bloom filters on every level: many point reads on the hot paths
	// (idempotency keys, collapse keys, statuses of older messages) look
	// for keys that are not in most tables, and without a filter each
	// table on the way costs an index and a data block.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	if opts.WALMinSyncInterval > 0 {
		d := opts.WALMinSyncInterval
		po.WALMinSyncInterval = func() time.Duration { return d }
	}
	fs := vfs.Default
	if opts.InMemory {
		fs = vfs.NewMem()
	}
	po.FS = yieldingFS{fs, runtime.Gosched, &st.on}
	pdb, err := pebble.Open(dir, po)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("storage: open %s: the store is locked: another process (a gateway still running?) uses this data dir: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	db := &DB{pdb: pdb, onCommit: opts.OnCommit, stalls: st, badSingleDels: bad}
	if err := db.loadSeq(); err != nil {
		pdb.Close()
		return nil, err
	}
	return db, nil
}

func zapOrNop(l *zap.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return l
}

// stalls counts Pebble's write stalls: commits held until a flush or a
// compaction catches up, which every POST waiting for its 202 feels.
// Pebble reports a stall's beginning and end one after the other; both
// are rare, and read once per scrape.
type stalls struct {
	on    atomic.Bool // a stall is in progress (read by yieldingFile)
	mu    sync.Mutex
	n     uint64
	held  time.Duration // in the stalls that ended
	since time.Time     // when the stall in progress began; zero: none
}

func (s *stalls) begin(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.since = now
	s.on.Store(true)
}

func (s *stalls) end(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on.Store(false)
	if !s.since.IsZero() {
		s.held += max(0, now.Sub(s.since))
		s.since = time.Time{}
	}
}

// read returns the stalls so far and the time they held commits, the
// stall in progress counted up to now.
func (s *stalls) read(now time.Time) (uint64, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.held
	if !s.since.IsZero() {
		held += max(0, now.Sub(s.since))
	}
	return s.n, held
}

// eventListener logs and counts write stalls, which show up as enqueue
// latency, and single deletes that met a key written more than once,
// which may bring the key back (see Batch.singleDel).
func eventListener(l *zap.Logger, s *stalls, badSingleDels *atomic.Uint64) *pebble.EventListener {
	return &pebble.EventListener{
		PossibleAPIMisuse: func(info pebble.PossibleAPIMisuseInfo) {
			// An ineffectual single delete (one that met a Delete or
			// another single delete, as when an expiry timer that fired
			// is deleted again) is harmless.
			if info.Kind == pebble.NondeterministicSingleDelete {
				badSingleDels.Add(1)
				l.Error("store: a single delete met a key written more than once", zap.Binary("key", info.UserKey))
			}
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			s.begin(time.Now())
			l.Warn("store write stall", zap.String("reason", info.Reason))
		},
		WriteStallEnd: func() {
			s.end(time.Now())
			l.Info("store write stall ended")
		},
	}
}

type pebbleLogger struct{ s *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.s.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) { l.s.Fatalf(format, args...) }

// Close flushes and closes the store. Methods called after Close returned
// (including a second Close) return ErrClosed; calls racing with Close are
// the caller's bug.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return ErrClosed
	}
	if err := db.pdb.Flush(); err != nil {
		db.pdb.Close()
		return fmt.Errorf("storage: flush: %w", err)
	}
	return db.pdb.Close()
}

// Flush writes the memtable to disk (used by graceful shutdown and the
// space benchmarks). It blocks until done.
func (db *DB) Flush() error {
	if db.closed.Load() {
		return ErrClosed
	}
	return db.pdb.Flush()
}

var seqLeaseKey = []byte{tableMeta, 's', 'e', 'q'}

// loadSeq restores the sequence allocator from the durable lease. After a
// crash the numbers between the last one used and the lease are skipped,
// never reused.
func (db *DB) loadSeq() error {
	v, err := db.get(seqLeaseKey)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case len(v) != 8:
		return fmt.Errorf("storage: corrupt sequence lease")
	default:
		l := binary.BigEndian.Uint64(v)
		db.seq.Store(l)
		db.lease.Store(l)
	}
	return nil
}

// NextSeq reserves n consecutive sequence numbers and returns the first.
// Sequence numbers are unique across the store's life, increase with time,
// and are never reused, even after a crash. Safe for concurrent use; it
// blocks for an fsync once per million numbers.
func (db *DB) NextSeq(n int) (uint64, error) {
	if n < 1 {
		// n == 0 would return a number that the next call hands out again.
		return 0, fmt.Errorf("storage: NextSeq(%d): n must be positive", n)
	}
	if db.closed.Load() {
		return 0, ErrClosed
	}
	last := db.seq.Add(uint64(n))
	if last >= db.lease.Load() {
		db.leaseMu.Lock()
		defer db.leaseMu.Unlock()
		if last >= db.lease.Load() {
			l := last + seqLeaseBlock
			if err := db.pdb.Set(seqLeaseKey, binary.BigEndian.AppendUint64(nil, l), pebble.Sync); err != nil {
				return 0, fmt.Errorf("storage: sequence lease: %w", err)
			}
			db.lease.Store(l)
		}
	}
	return last - uint64(n) + 1, nil
}

// LastSeq returns the last sequence number handed out.
func (db *DB) LastSeq() uint64 { return db.seq.Load() }

// get returns a copy of k's value; ErrNotFound if there is none. For keys
// that are usually there; lookup is for those usually absent.
func (db *DB) get(k []byte) ([]byte, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	v, closer, err := db.pdb.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get: %w", err)
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, nil
}

// lookup is get for keys that are usually absent: a new idempotency key, a
// collapse key not used before, a push token never refused.
//
// Pebble's Get skips the bloom filters of the bottom level, where a store
// some hours old keeps nearly everything, so each miss there loads an
// index and a data block (often reading and decompressing it). lookup
// seeks an iterator that reads the filters of every level instead, and the
// filter answers a miss alone: half the cost of Get for a miss with every
// block cached, 30 % more for a hit (BenchmarkGetMiss, BenchmarkGetHit).
func (db *DB) lookup(k []byte) ([]byte, error) {
	if db.closed.Load() {
		return nil, ErrClosed
	}
	it, err := db.pdb.NewIter(&lookupOptions)
	if err != nil {
		return nil, fmt.Errorf("storage: lookup: %w", err)
	}
	var out []byte
	// With the default comparer a key is its own prefix: a hit is k.
	if it.SeekPrefixGE(k) && bytes.Equal(it.Key(), k) {
		v, verr := it.ValueAndErr()
		out, err = append([]byte{}, v...), verr
	}
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("storage: lookup: %w", err)
	case out == nil:
		return nil, ErrNotFound
	}
	return out, nil
}

var lookupOptions = pebble.IterOptions{UseL6Filters: true}

// scan calls fn for each key in [lower, upper) in order until fn returns
// false. Key and value are only valid during the call.
func (db *DB) scan(lower, upper []byte, fn func(k, v []byte) bool) error {
	if db.closed.Load() {
		return ErrClosed
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("storage: iter: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("storage: iter value: %w", err)
		}
		if !fn(it.Key(), v) {
			break
		}
	}
	return it.Close()
}

// Hash returns the SHA-256 of s, the form in which API keys, idempotency
// keys and push tokens are used in keys.
func Hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// --- apps, keys, users, devices -------------------------------------------

// GetApp returns the app record of app.
func (db *DB) GetApp(app string) ([]byte, error) { return db.get(appPrefix(tableApp, app)) }

// ScanApps calls fn for every app record in key order: shorter ids first,
// ids of equal length bytewise (the length prefix sorts first).
func (db *DB) ScanApps(fn func(app string, v []byte) bool) error {
	return db.scan([]byte{tableApp}, []byte{tableApp + 1}, func(k, v []byte) bool {
		app, _, err := readComponent(k[1:])
		if err != nil {
			return true
		}
		return fn(app, v)
	})
}

// GetAPIKey returns the record stored for the API key with hash h.
func (db *DB) GetAPIKey(h [32]byte) ([]byte, error) {
	return db.get(append([]byte{tableAPIKey}, h[:]...))
}

// GetUser returns the user record of app/user.
func (db *DB) GetUser(app, user string) ([]byte, error) {
	return db.get(userPrefix(tableUser, app, user))
}

// ScanUsers calls fn for the users of app that come after the user after,
// in key order: shorter ids first, ids of equal length bytewise (the length
// prefix sorts first). Passing the last user seen as after pages through
// every user exactly once.
func (db *DB) ScanUsers(app, after string, fn func(user string, v []byte) bool) error {
	p := appPrefix(tableUser, app)
	lower := p
	if after != "" {
		lower = prefixEnd(appendComponent(bytes.Clone(p), after))
	}
	return db.scan(lower, prefixEnd(p), func(k, v []byte) bool {
		user, _, err := readComponent(k[len(p):])
		if err != nil {
			return true
		}
		return fn(user, v)
	})
}

// GetDevice returns the device record app/user/device.
func (db *DB) GetDevice(app, user, device string) ([]byte, error) {
	return db.get(DeviceKey(app, user, device))
}

// ScanDevices calls fn for each device of app/user in key order: shorter
// ids first, ids of equal length bytewise.
func (db *DB) ScanDevices(app, user string, fn func(device string, v []byte) bool) error {
	p := userPrefix(tableDevice, app, user)
	return db.scan(p, prefixEnd(p), func(k, v []byte) bool {
		device, _, err := readComponent(k[len(p):])
		if err != nil {
			return true
		}
		return fn(device, v)
	})
}

// GetCursor returns the delivery cursor of a device: every message of the
// user below it is done for that device. Zero if unset.
func (db *DB) GetCursor(app, user, device string) (uint64, error) {
	v, err := db.get(deviceKey(tableCursor, app, user, device))
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil || len(v) != 8 {
		return 0, errors.Join(err, errBadKey)
	}
	return binary.BigEndian.Uint64(v), nil
}

// GetWakeTimes returns the times (Unix milliseconds, oldest first) of a
// device's recent wake pushes, as PutWakeTimes stored them; none if unset.
func (db *DB) GetWakeTimes(app, user, device string) ([]int64, error) {
	v, err := db.get(deviceKey(tableWake, app, user, device))
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(v)%8 != 0 {
		return nil, errBadKey
	}
	out := make([]int64, 0, len(v)/8)
	for i := 0; i < len(v); i += 8 {
		out = append(out, int64(binary.BigEndian.Uint64(v[i:i+8])))
	}
	return out, nil
}

// GetInvalidToken reports the record of a push token marked invalid.
func (db *DB) GetInvalidToken(app string, h [32]byte) ([]byte, error) {
	return db.lookup(append(appPrefix(tableToken, app), h[:]...))
}

// GetAppCursor returns a per-app consumer cursor (for example the webhook
// outbox position). Zero if unset.
func (db *DB) GetAppCursor(app, name string) (uint64, error) {
	v, err := db.get(appendComponent(appPrefix(tableAppCursor, app), name))
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil || len(v) != 8 {
		return 0, errors.Join(err, errBadKey)
	}
	return binary.BigEndian.Uint64(v), nil
}

// --- messages, statuses, timers, events -----------------------------------

// GetMessage returns message seq of app/user.
func (db *DB) GetMessage(app, user string, seq uint64) ([]byte, error) {
	return db.get(MessageKey(app, user, seq))
}

// ScanMessages calls fn for each message of app/user with seq >= from, in
// sequence order, until fn returns false.
func (db *DB) ScanMessages(app, user string, from uint64, fn func(seq uint64, v []byte) bool) error {
	p := userPrefix(tableMessage, app, user)
	return db.scan(appendUint64(bytes.Clone(p), from), prefixEnd(p), func(k, v []byte) bool {
		return fn(binary.BigEndian.Uint64(k[len(p):]), v)
	})
}

// CountMessages returns the number of messages in every log (the total
// queue depth). It scans the message table once: call it at start only.
func (db *DB) CountMessages() (int64, error) {
	var n int64
	err := db.scan([]byte{tableMessage}, []byte{tableMessage + 1}, func(k, v []byte) bool {
		n++
		return true
	})
	return n, err
}

// GetStatus returns the status record of message seq of app.
func (db *DB) GetStatus(app string, seq uint64) ([]byte, error) {
	return db.get(StatusKey(app, seq))
}

// GetCollapse returns the seqs stored under a collapse key of app/user
// (one or more; records of earlier versions hold one).
func (db *DB) GetCollapse(app, user, key string) ([]uint64, error) {
	v, err := db.lookup(appendComponent(userPrefix(tableCollapse, app, user), key))
	if err != nil {
		return nil, err
	}
	if len(v) == 0 || len(v)%8 != 0 {
		return nil, errBadKey
	}
	seqs := make([]uint64, len(v)/8)
	for i := range seqs {
		seqs[i] = binary.BigEndian.Uint64(v[8*i:])
	}
	return seqs, nil
}

// GetIdem returns the answer stored under an idempotency key hash of app.
func (db *DB) GetIdem(app string, h [32]byte) ([]byte, error) {
	return db.lookup(append(appPrefix(tableIdem, app), h[:]...))
}

// ScanTimers calls fn for each timer due at or before untilMillis, oldest
// first, until fn returns false.
func (db *DB) ScanTimers(untilMillis int64, fn func(atMillis int64, kind byte, seq uint64, v []byte) bool) error {
	upper := []byte{tableTimer + 1} // every timer (untilMillis+1 would overflow)
	if untilMillis < math.MaxInt64 {
		upper = TimerKey(untilMillis+1, 0, 0)
	}
	return db.scan([]byte{tableTimer}, upper, func(k, v []byte) bool {
		at, kind, seq, err := DecodeTimerKey(k)
		if err != nil {
			return true
		}
		return fn(at, kind, seq, v)
	})
}

// ScanEvents calls fn for each event of app with seq > after, oldest first,
// until fn returns false.
func (db *DB) ScanEvents(app string, after uint64, fn func(seq uint64, v []byte) bool) error {
	p := appPrefix(tableEvent, app)
	lower := appendUint64(bytes.Clone(p), after+1)
	if after == ^uint64(0) {
		return nil
	}
	return db.scan(lower, prefixEnd(p), func(k, v []byte) bool {
		return fn(binary.BigEndian.Uint64(k[len(p):]), v)
	})
}

// TrimEvents deletes the events of app with seq < before.
func (db *DB) TrimEvents(app string, before uint64) error {
	if db.closed.Load() {
		return ErrClosed
	}
	p := appPrefix(tableEvent, app)
	return db.pdb.DeleteRange(p, appendUint64(bytes.Clone(p), before), pebble.NoSync)
}

// DeleteApp removes every record of app in one atomic, synced batch. The
// app's API keys and timers are not app-scoped; the callers drop the keys
// themselves, and timers of a deleted app find nothing when they fire.
func (db *DB) DeleteApp(app string) error {
	b := db.pdb.NewBatch()
	defer b.Close()
	for _, t := range appScopedTables {
		p := appPrefix(t, app)
		if err := b.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return err
		}
	}
	return db.commit(b, true)
}

func (db *DB) commit(b *pebble.Batch, sync bool) error {
	if db.closed.Load() {
		return ErrClosed
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	start := time.Now()
	err := b.Commit(opts)
	if sync {
		db.syncCommits.Add(1)
	}
	if db.onCommit != nil {
		db.onCommit(time.Since(start), sync)
	}
	if err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

// Stats are counters read from the store.
type Stats struct {
	Fsyncs       uint64 // WAL fsyncs since open
	SyncCommits  uint64 // synced commits since open; SyncCommits/Fsyncs is the group-commit factor
	WALBytes     uint64 // bytes written to the WAL since open
	FlushedBytes uint64 // bytes written by flushes
	CompactBytes uint64 // bytes written by compactions
	DiskBytes    uint64 // live size of the store on disk (sstables + WAL)
	TableBytes   uint64 // the live sstables alone (DiskBytes without the WAL and files awaiting deletion)

	// The LSM's shape: whether flushes and compactions keep up.
	Flushes        int64         // memtable flushes since open
	Compactions    int64         // compactions since open
	CompactionDebt uint64        // bytes compactions would have to write to bring the LSM back in shape
	L0Sublevels    int32         // L0's read amplification; compacted from 8, writes stall at 24
	L0Tables       int64         // sstables in L0
	MemTableBytes  uint64        // memory in memtables, flushing ones included
	WriteStalls    uint64        // times commits were held for flushes or compactions to catch up
	WriteStallTime time.Duration // time commits were held, the stall in progress included
	BadSingleDels  uint64        // single deletes that met a key written more than once (a bug)
}

// Stats returns the store's counters.
func (db *DB) Stats() Stats {
	if db.closed.Load() {
		return Stats{}
	}
	m := db.pdb.Metrics()
	var s Stats
	s.SyncCommits = db.syncCommits.Load()
	if h := m.LogWriter.FsyncLatency; h != nil {
		var d dto.Metric
		if h.Write(&d) == nil && d.Histogram != nil {
			s.Fsyncs = d.Histogram.GetSampleCount()
		}
	}
	s.WALBytes = m.WAL.BytesWritten
	total := m.Total()
	s.FlushedBytes = m.Levels[0].TableBytesFlushed
	s.CompactBytes = total.TableBytesCompacted
	s.DiskBytes = m.DiskSpaceUsage()
	s.TableBytes = m.Table.Local.LiveSize
	s.Flushes = m.Flush.Count
	s.Compactions = m.Compact.Count
	s.CompactionDebt = m.Compact.EstimatedDebt
	s.L0Sublevels = m.Levels[0].Sublevels
	s.L0Tables = m.Levels[0].TablesCount
	s.MemTableBytes = m.MemTable.Size
	s.WriteStalls, s.WriteStallTime = db.stalls.read(time.Now())
	s.BadSingleDels = db.badSingleDels.Load()
	return s
}
