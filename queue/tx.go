package queue

import (
	"errors"
	"slices"
	"sync"
	"time"

	"tether/internal/bufpool"
	"tether/storage"
)

// Timer kinds in the store's timer index.
const (
	timerExpire   byte = 1 // message expiry (and fallback at expiry); value: app, user
	timerFallback byte = 2 // sms_fallback.after; value: app, user
	timerStatusGC byte = 3 // drop a status record; value: app
	timerIdemGC   byte = 4 // forget an idempotency key; value: app, key hash
	timerRecheck  byte = 5 // a message waits only for devices that turn stale by then; value: app, user
)

// tx is one atomic change: a store batch plus what to do once it is
// committed (hand messages to sessions, withdraw them, wake feed readers,
// count metrics). It is used by one goroutine, under the user locks it
// touches.
type tx struct {
	q     *Queue
	b     *storage.Batch
	now   time.Time
	depth int64
	apps  []string
	after []func()
	err   error
	// statuses written, for the status cache once committed.
	statuses []cachedStatus
	scratch  *[]byte    // an event's encoding, copied into the batch (scratchBuf)
	events   []eventRef // event ids pending in the feed's gate until the commit
	// collapse holds the collapse mappings this tx read or wrote (key:
	// app, user and collapse key), so that changes to one mapping in
	// the same tx see each other rather than the store.
	collapse map[string][]uint64
	// firstSeq is the first seq of the messages an Enqueue puts in this
	// tx (0 in any other tx).
	firstSeq uint64
}

type cachedStatus struct {
	app string
	seq uint64
	v   []byte
}

func (q *Queue) begin() *tx {
	t := txPool.Get().(*tx)
	t.q, t.b, t.now = q, q.db.NewBatch(), q.now()
	return t
}

// txPool holds the tx values of the hot paths (Enqueue, mark), which free
// them when done: each POST and each acknowledgement allocated one, with
// its slices (5 % of the gateway's allocations in the soak). A tx not
// freed is collected as usual.
var txPool = sync.Pool{New: func() any { return new(tx) }}

// free returns t to txPool, its slices emptied and kept when small. Only
// for a tx that was committed or aborted and is not touched again.
func (t *tx) free() {
	clear(t.after)
	clear(t.statuses)
	clear(t.apps)
	clear(t.events)
	*t = tx{
		apps:     shortOrNil(t.apps),
		after:    shortOrNil(t.after),
		statuses: shortOrNil(t.statuses),
		events:   shortOrNil(t.events),
	}
	txPool.Put(t)
}

// shortOrNil empties s, or drops it if it grew large.
func shortOrNil[T any](s []T) []T {
	if cap(s) > 64 {
		return nil
	}
	return s[:0]
}

// scratchPool holds the buffers events are encoded into before the batch
// copies them: a tx writes a few events, and growing a fresh buffer for
// each was a tenth of the queue's allocations.
var scratchPool = bufpool.New(512, 64<<10)

// scratchBuf returns t's scratch buffer, empty, for an encoding the batch
// then copies; the caller keeps what it appended in *t.scratch, so that a
// grown buffer serves the next encoding.
func (t *tx) scratchBuf() []byte {
	if t.scratch == nil {
		t.scratch = scratchPool.Get()
	}
	return (*t.scratch)[:0]
}

// release returns t's scratch buffer to the pool.
func (t *tx) release() {
	if t.scratch != nil {
		scratchPool.Put(t.scratch)
		t.scratch = nil
	}
}

// commit writes the batch (synced or not) and then runs the post-commit
// actions. On error nothing is applied and nothing is announced.
func (t *tx) commit(sync bool) error {
	defer t.release()
	if t.err != nil {
		t.b.Close()
		t.q.gate.done(t.events)
		return t.err
	}
	if t.b.Empty() {
		t.b.Close()
	} else if err := t.b.Commit(sync); err != nil {
		t.q.gate.done(t.events)
		for _, c := range t.statuses {
			t.q.stats.del(c.app, c.seq) // the store may or may not hold it
		}
		return err
	}
	t.q.gate.done(t.events) // visible now: before the readers are woken
	for _, c := range t.statuses {
		t.q.stats.put(c.app, c.seq, c.v)
	}
	t.q.depth.Add(t.depth)
	for _, app := range t.apps {
		t.q.feed.notify(app)
	}
	for _, f := range t.after {
		f()
	}
	return nil
}

func (t *tx) abort() {
	t.b.Close()
	t.q.gate.done(t.events)
	t.release()
}

func (t *tx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// event appends e to its app's feed.
func (t *tx) event(e *Event) {
	seq, err := t.q.gate.next(e.App, func() (uint64, error) { return t.q.db.NextSeq(1) })
	if err != nil {
		t.fail(err)
		return
	}
	t.events = append(t.events, eventRef{e.App, seq})
	e.Seq, e.ID = seq, EventID(seq)
	if e.At.IsZero() {
		e.At = t.now
	}
	v, err := encodeEvent(t.scratchBuf(), e)
	if err != nil {
		t.fail(err)
		return
	}
	*t.scratch = v
	t.b.PutEvent(e.App, seq, v)
	if len(t.apps) == 0 || t.apps[len(t.apps)-1] != e.App {
		t.apps = append(t.apps, e.App)
	}
	t.q.m.events.WithLabelValues(e.Type).Inc()
}

func (t *tx) putStatus(st *Status) {
	v := encodeStatus(make([]byte, 0, 128), st)
	t.b.PutStatus(st.App, st.Seq, v)
	t.statuses = append(t.statuses, cachedStatus{st.App, st.Seq, v})
}

// statusEvent appends the event announcing that st (or one device of it)
// reached state s.
func (t *tx) statusEvent(st *Status, s State, device, reason string) {
	e := &Event{
		Type: eventType(s), App: st.App, MessageID: st.ID, User: st.User,
		Device: device, Ref: st.Ref, Status: s.String(), Reason: reason,
	}
	if s == StateFallbackSent || s == StateFallbackFailed {
		e.Fallback = st.Fallback
	}
	t.event(e)
}

// setDevice moves device dev of st to state s if that is progress, with
// its event, and updates the overall status. It reports whether anything
// changed.
func (t *tx) setDevice(st *Status, dev string, s State) bool {
	d := st.device(dev)
	if d == nil {
		st.Devices = append(st.Devices, DeviceStatus{Device: dev, Status: StateEnqueued})
		d = &st.Devices[len(st.Devices)-1]
	}
	if d.Status >= s {
		return false
	}
	d.Status, d.At = s, t.now
	t.statusEvent(st, s, dev, "")
	if st.Status.Final() || st.Status >= s {
		return true
	}
	st.Status = s
	t.q.m.messages.WithLabelValues(s.String()).Inc()
	switch s {
	case StateSent:
		st.SentAt = t.now
	case StateDelivered:
		st.DeliveredAt = t.now
		t.q.m.latency.Observe(t.now.Sub(st.CreatedAt).Seconds())
	case StateRead:
		st.ReadAt = t.now
	}
	return true
}

// done removes the payload of st from the store: no device needs it any
// more. The status record is kept for the retention period.
func (t *tx) done(st *Status) {
	if !st.DoneAt.IsZero() {
		return
	}
	st.DoneAt = t.now
	if fb := st.Fallback; fb != nil && fb.Status == "pending" && st.Status.Acked() {
		fb.Status = "not_needed" // delivered: no SMS will be sent
	}
	t.b.DeleteMessage(st.App, st.User, st.Seq)
	t.depth--
	t.b.DeleteTimerOnce(st.ExpiresAt.UnixMilli(), timerExpire, st.Seq)
	if st.CollapseKey != "" {
		if cur := t.collapseSeqs(st.App, st.User, st.CollapseKey); slices.Contains(cur, st.Seq) {
			t.setCollapse(st.App, st.User, st.CollapseKey, slices.DeleteFunc(slices.Clone(cur), func(s uint64) bool { return s == st.Seq }))
		}
	}
	t.b.PutTimer(t.now.Add(t.q.cfg.StatusRetention).UnixMilli(), timerStatusGC, st.Seq, timerValue(st.App, ""))
}

// finalize puts st in final state s, drops its payload and withdraws it
// from live sessions.
func (t *tx) finalize(st *Status, s State, reason string) {
	if fb := st.Fallback; fb != nil && fb.Status == "pending" && s != StateFallbackSent && s != StateFallbackFailed {
		fb.Status = "not_needed" // cancelled, collapsed or expired without one: no SMS will be sent
	}
	st.Status, st.FinalAt, st.Reason = s, t.now, reason
	t.q.m.messages.WithLabelValues(s.String()).Inc()
	wasDone := !st.DoneAt.IsZero()
	t.done(st)
	t.statusEvent(st, s, "", reason)
	t.putStatus(st)
	if !wasDone {
		app, user, seq := st.App, st.User, st.Seq
		t.after = append(t.after, func() { t.q.withdraw(app, user, "", seq) })
	}
}

// loadStatus reads the status record of seq of app, from the status cache
// when it holds it.
func (q *Queue) loadStatus(app string, seq uint64) (*Status, error) {
	st := new(Status)
	if err := q.loadStatusInto(app, seq, st); err != nil {
		return nil, err
	}
	return st, nil
}

// loadStatusInto is loadStatus into st, whose Devices array is reused.
func (q *Queue) loadStatusInto(app string, seq uint64, st *Status) error {
	v, ok := q.stats.get(app, seq)
	if !ok {
		var err error
		v, err = q.db.GetStatus(app, seq)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
	}
	*st = Status{Devices: st.Devices[:0]}
	if err := decodeStatus(v, st); err != nil {
		return ErrCorrupt
	}
	st.App, st.Seq = app, seq
	return nil
}

// statusPool holds the Status values Queue.mark decodes into, one per
// call: every acknowledgement and read marker allocated one (about 350
// bytes, 6 % of the gateway's allocations in the soak). Nothing mark
// calls keeps the Status: events copy its strings, the record is
// re-encoded, and the deferred withdrawals take ids.
var statusPool = sync.Pool{New: func() any { return new(Status) }}

// timerValue encodes the app (and user or key) a timer is about.
func timerValue(app, user string) []byte {
	v := make([]byte, 0, 2+len(app)+len(user))
	v = append(v, byte(len(app)))
	v = append(v, app...)
	v = append(v, byte(len(user)))
	return append(v, user...)
}

func parseTimerValue(v []byte) (app, user string, ok bool) {
	if len(v) < 1 || int(v[0])+1 >= len(v)+1 {
		return "", "", false
	}
	n := int(v[0])
	if len(v) < 1+n+1 {
		return "", "", false
	}
	app = string(v[1 : 1+n])
	rest := v[1+n:]
	m := int(rest[0])
	if len(rest) != 1+m {
		return "", "", false
	}
	return app, string(rest[1:]), true
}

// collapseSeqs returns the messages mapped to a collapse key of app/user,
// as this tx left them.
func (t *tx) collapseSeqs(app, user, key string) []uint64 {
	k := collapseMapKey(app, user, key)
	if seqs, ok := t.collapse[k]; ok {
		return seqs
	}
	seqs, _ := t.q.db.GetCollapse(app, user, key) // none, or unreadable: no mapping
	if t.collapse == nil {
		t.collapse = make(map[string][]uint64)
	}
	t.collapse[k] = seqs
	return seqs
}

// collapseMapKey is the key of tx.collapse.
func collapseMapKey(app, user, key string) string { return app + "\x00" + user + "\x00" + key }

// setCollapse maps a collapse key of app/user to seqs (none: no mapping).
func (t *tx) setCollapse(app, user, key string, seqs []uint64) {
	if t.collapse == nil {
		t.collapse = make(map[string][]uint64)
	}
	t.collapse[collapseMapKey(app, user, key)] = seqs
	if len(seqs) == 0 {
		t.b.DeleteCollapse(app, user, key)
		return
	}
	t.b.PutCollapse(app, user, key, seqs)
}
