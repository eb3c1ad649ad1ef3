package queue

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"tether/storage"
)

// MaxRecipients is the most recipients one Enqueue takes.
const MaxRecipients = 10000

// Recipient is a user, or one device of a user.
type Recipient struct {
	User   string
	Device string // empty: every device of the user
}

// String returns "user" or "user/device".
func (r Recipient) String() string {
	if r.Device != "" {
		return r.User + "/" + r.Device
	}
	return r.User
}

// EnqueueRequest is one backend POST. The gateway validates the fields and
// resolves the app's defaults before calling Enqueue.
type EnqueueRequest struct {
	App       string
	To        []Recipient
	Body      string
	Data      json.RawMessage
	ExpiresIn time.Duration // 0: deliver only to a device online now
	Priority  Priority
	Delivery  Delivery
	// CollapseKey: a newer message with the same key to the same user
	// replaces an older one not yet delivered.
	CollapseKey string
	Ref         string
	Channel     string
	Fallback    *SMSFallback
	// IdempotencyKey, when set, makes a repeat within the idempotency
	// window return the first answer and enqueue nothing. RequestHash
	// identifies the request so a key reused for a different one is
	// refused.
	IdempotencyKey string
	RequestHash    [32]byte
	// Claim, when set, is the key's lookup already made under its lock
	// (ClaimIdempotency): Enqueue neither looks again nor locks, and
	// releases the claim; IdempotencyKey and RequestHash are not used.
	Claim *IdemClaim
}

// idemStripes is how many locks the idempotency keys share. A key's lock is
// held from its lookup through the synced commit of its request, so two
// requests whose keys share a lock wait for each other's fsync: with
// 4,096, 64 concurrent requests rarely meet.
const idemStripes = 4096

func (q *Queue) idemLock(h [32]byte) *sync.Mutex {
	return &q.idem[(int(h[0])<<8|int(h[1]))%idemStripes]
}

// IdemClaim holds the lock of an idempotency key that had no stored answer
// when ClaimIdempotency looked, so that no request with the same key can
// be enqueued until Enqueue (given the claim) or Release.
type IdemClaim struct {
	hash    [32]byte // of the key
	reqHash [32]byte
	mu      *sync.Mutex
}

// Release gives the key's lock back; it does nothing the second time.
func (c *IdemClaim) Release() {
	if c != nil && c.mu != nil {
		c.mu.Unlock()
		c.mu = nil
	}
}

// ClaimIdempotency looks key up under the key's lock: if an earlier
// request stored an answer it returns it, marked Replayed (or
// ErrIdempotencyMismatch); otherwise a claim that keeps the lock until it
// is passed to Enqueue or released. A POST then reads the key once: the
// gateway asks before validating the request, so a repeat gets the first
// answer even if the app's settings changed since.
func (q *Queue) ClaimIdempotency(app, key string, requestHash [32]byte) (*EnqueueResult, *IdemClaim, error) {
	h := storage.Hash(key)
	mu := q.idemLock(h)
	mu.Lock()
	res, err := q.replay(app, h, requestHash)
	if res != nil || err != nil {
		mu.Unlock()
		return res, nil, err
	}
	return nil, &IdemClaim{hash: h, reqHash: requestHash, mu: mu}, nil
}

// Accepted is the answer for one recipient.
type Accepted struct {
	ID     string `json:"id"`
	To     string `json:"to"`
	Status State  `json:"status"`
}

// EnqueueResult is the answer to an Enqueue.
type EnqueueResult struct {
	Messages []Accepted `json:"messages"`
	// Replayed is set when the answer is the stored one of an earlier
	// request with the same idempotency key.
	Replayed bool `json:"-"`
}

type idemRecord struct {
	Hash   []byte          `json:"h"`
	Result json.RawMessage `json:"r"`
}

// appendIdemRecord appends json.Marshal(idemRecord{hash, json.Marshal(res)})
// byte for byte, without reflection: two marshals per POST were 3 % of the
// gateway's allocations in the soak.
func appendIdemRecord(b, hash []byte, res *EnqueueResult) []byte {
	b = append(b, `{"h":"`...)
	b = base64.StdEncoding.AppendEncode(b, hash)
	b = append(b, `","r":`...)
	b = res.AppendJSON(b)
	return append(b, '}')
}

// AppendJSON appends json.Marshal(res) to b, byte for byte, without
// reflection: the REST API's 202 answer and the stored idempotent replay.
func (res *EnqueueResult) AppendJSON(b []byte) []byte {
	b = append(b, `{"messages":`...)
	if res.Messages == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, m := range res.Messages {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = appendJSONString(b, m.ID)
			b = append(b, `,"to":`...)
			b = appendJSONString(b, m.To)
			b = append(b, `,"status":`...)
			b = appendJSONString(b, m.Status.String())
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// Enqueue makes one message per recipient durable and returns only after
// the fsync covering them returned; then it hands them to live sessions.
// Safe for concurrent use; it blocks for one fsync, shared with concurrent
// enqueues.
func (q *Queue) Enqueue(ctx context.Context, req *EnqueueRequest) (*EnqueueResult, error) {
	if len(req.To) == 0 || len(req.To) > MaxRecipients {
		return nil, fmt.Errorf("%w: between 1 and %d recipients", ErrInvalid, MaxRecipients)
	}
	if req.ExpiresIn < 0 {
		return nil, fmt.Errorf("%w: negative expiry", ErrInvalid)
	}
	claim := req.Claim
	switch {
	case claim != nil:
		if claim.mu == nil {
			return nil, fmt.Errorf("%w: idempotency claim already used", ErrInvalid)
		}
	case req.IdempotencyKey != "":
		res, c, err := q.ClaimIdempotency(req.App, req.IdempotencyKey, req.RequestHash)
		if res != nil || err != nil {
			return res, err
		}
		claim = c
	}
	defer claim.Release()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var direct [maxDirectWrites]Writer
	res, writes, err := q.enqueueLocked(req, claim, direct[:0])
	// The writes the sessions left to this goroutine, outside the locks.
	for _, w := range writes {
		w.WriteQueued()
	}
	return res, err
}

// enqueueLocked commits req's messages under their users' locks and hands
// them to the live sessions, which may leave their writes to the caller
// (appended to direct).
func (q *Queue) enqueueLocked(req *EnqueueRequest, claim *IdemClaim, direct []Writer) (*EnqueueResult, []Writer, error) {
	users := make([]string, len(req.To))
	for i, r := range req.To {
		users[i] = r.User
	}
	unlock := q.lockUsers(req.App, users)
	defer unlock()

	first, err := q.db.NextSeq(len(req.To))
	if err != nil {
		return nil, nil, err
	}
	t := q.begin()
	defer t.free()
	t.firstSeq = first
	res := &EnqueueResult{Messages: make([]Accepted, len(req.To))}
	msgs := make([]*Message, 0, len(req.To))
	for i, r := range req.To {
		m := q.newMessage(t.now, req, r, first+uint64(i))
		res.Messages[i] = Accepted{ID: m.ID, To: r.String(), Status: StateEnqueued}
		if q.put(t, m) {
			msgs = append(msgs, m)
		}
	}
	if claim != nil {
		h := claim.hash
		*t.scratch = appendIdemRecord(t.scratchBuf(), claim.reqHash[:], res)
		t.b.PutIdem(req.App, h, *t.scratch) // the batch copies it
		t.b.PutTimer(t.now.Add(q.cfg.IdempotencyWindow).UnixMilli(), timerIdemGC, first, timerValue(req.App, string(h[:])))
	}
	if err := t.commit(true); err != nil {
		return nil, nil, err
	}
	q.m.messages.WithLabelValues(StateEnqueued.String()).Add(float64(len(req.To)))
	for _, m := range msgs {
		direct = q.deliver(m, direct)
	}
	return res, direct, nil
}

func (q *Queue) replay(app string, h, requestHash [32]byte) (*EnqueueResult, error) {
	v, err := q.db.GetIdem(app, h)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec idemRecord
	if json.Unmarshal(v, &rec) != nil {
		return nil, ErrCorrupt
	}
	if string(rec.Hash) != string(requestHash[:]) {
		return nil, ErrIdempotencyMismatch
	}
	res := new(EnqueueResult)
	if json.Unmarshal(rec.Result, res) != nil {
		return nil, ErrCorrupt
	}
	res.Replayed = true
	return res, nil
}

func (q *Queue) newMessage(now time.Time, req *EnqueueRequest, r Recipient, seq uint64) *Message {
	m := &Message{
		Seq: seq, ID: newMessageID(seq), App: req.App, User: r.User, Device: r.Device,
		Body: req.Body, Data: req.Data, Priority: req.Priority, Delivery: req.Delivery,
		CollapseKey: req.CollapseKey, Ref: req.Ref, Channel: req.Channel,
		CreatedAt: now, ExpiresAt: now.Add(req.ExpiresIn),
	}
	if req.Fallback != nil {
		fb := *req.Fallback
		m.Fallback = &fb
	}
	if req.ExpiresIn == 0 {
		m.onlineOnly = true
		m.ExpiresAt = now.Add(q.cfg.OnlineGrace)
	}
	// Millisecond precision, as stored, so every reader sees the same times.
	m.CreatedAt, m.ExpiresAt = m.CreatedAt.Truncate(time.Millisecond), m.ExpiresAt.Truncate(time.Millisecond)
	return m
}

// put writes m, its status record and timers into t, collapsing an older
// message with the same collapse key. It reports whether m went into the
// queue (an expires_in 0 message for an offline recipient expires at once).
func (q *Queue) put(t *tx, m *Message) bool {
	st := &Status{
		ID: m.ID, User: m.User, Device: m.Device, Status: StateEnqueued, Delivery: m.Delivery,
		Ref: m.Ref, CollapseKey: m.CollapseKey, CreatedAt: m.CreatedAt, ExpiresAt: m.ExpiresAt,
		App: m.App, Seq: m.Seq,
	}
	if m.Fallback != nil {
		st.Fallback = &FallbackInfo{To: m.Fallback.To, Status: "pending"}
	}
	fallbackNow := false
	if m.onlineOnly && !q.Online(m.App, m.User, m.Device) && m.Fallback != nil {
		// expires_in 0, nobody to hand it to, and an SMS fallback: the
		// fallback fires at expiry, which is now (at the next timer tick).
		fallbackNow = true
	} else if m.onlineOnly && !q.Online(m.App, m.User, m.Device) {
		// expires_in 0 and nobody to hand it to: expired on arrival.
		st.DoneAt = t.now
		t.b.PutTimer(t.now.Add(q.cfg.StatusRetention).UnixMilli(), timerStatusGC, st.Seq, timerValue(st.App, ""))
		st.Status, st.FinalAt, st.Reason = StateExpired, t.now, "recipient offline"
		q.m.messages.WithLabelValues(StateExpired.String()).Inc()
		t.statusEvent(st, StateExpired, "", st.Reason)
		t.putStatus(st)
		return false
	}
	if m.onlineOnly {
		m.OnlineOnly = q.onlineDevices(m.App, m.User, m.Device)
		if len(m.OnlineOnly) == 0 {
			// Nobody online, an SMS fallback due at the next tick: no
			// device may take it meanwhile ("" names none).
			m.OnlineOnly = []string{""}
		}
	}
	if m.CollapseKey != "" {
		// The messages of an earlier POST with this key to this user are
		// replaced; those of this POST (it may name the user more than
		// once, "alice" and "alice/phone") are kept together, so that the
		// next POST replaces them all.
		prev := t.collapseSeqs(m.App, m.User, m.CollapseKey)
		var mine []uint64
		for _, seq := range prev {
			if seq >= t.firstSeq {
				mine = append(mine, seq)
				continue
			}
			if pst, err := q.loadStatus(m.App, seq); err == nil && !pst.Done() && pst.Status < StateDelivered {
				t.finalize(pst, StateCollapsed, "replaced by "+m.ID)
			}
		}
		t.setCollapse(m.App, m.User, m.CollapseKey, append(mine, m.Seq))
	}
	v, err := m.encode()
	if err != nil {
		t.fail(err)
		return false
	}
	t.b.PutMessage(m.App, m.User, m.Seq, v)
	t.depth++
	t.putStatus(st)
	tv := timerValue(m.App, m.User)
	t.b.PutTimer(m.ExpiresAt.UnixMilli(), timerExpire, m.Seq, tv)
	if fallbackNow {
		t.b.PutTimer(t.now.UnixMilli(), timerFallback, m.Seq, tv)
	} else if fb := m.Fallback; fb != nil && fb.After > 0 {
		if at := m.CreatedAt.Add(time.Duration(fb.After) * time.Second); at.Before(m.ExpiresAt) {
			t.b.PutTimer(at.UnixMilli(), timerFallback, m.Seq, tv)
		}
	}
	return true
}
