package sdkproto

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a device's XMPP session to the gateway, with stream management,
// resumption and reconnection. See the package documentation for its
// lifecycle.
//
// All methods are safe for concurrent use. Each connection has one reader
// goroutine, which calls Config.OnMessage, OnDisconnect and OnConnect; the
// callbacks may call any method, except that Close and Drop called from a
// callback do not wait for the reader to finish, and the calls that wait
// for the server's answer (Send, Ping, RegisterPush and the other IQs)
// return ErrInCallback at once: the answer would be read by the goroutine
// that waits for it. Ack and MarkRead never wait.
type Client struct {
	cfg     Config
	to      string // the app domain
	tlsCfg  *tls.Config
	backoff Backoff
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	closing chan struct{} // closed by Close
	kick    chan struct{} // wakes the reconnect loop early

	idPrefix string
	idSeq    atomic.Uint64

	// Owned by the goroutine reading the current connection (or by the
	// connecting goroutine while none reads).
	dd      *dedupe
	inH     atomic.Uint32 // inbound stanzas counted (XEP-0198 h)
	ackedIn atomic.Uint32 // last h we sent in <a/>
	readerG atomic.Uint64 // goroutine id of the reader, 0 if none
	loseIn  atomic.Int32  // tests: discard this many inbound stanzas unread

	ackTimer *time.Timer
	reqTimer *time.Timer // asks the server for an <a/> after AckRequestInterval
	stats    struct {
		received, duplicates, reconnects, resumes, resumeFailures, sent atomic.Uint64
	}
	wg sync.WaitGroup // the reader goroutine

	mu          sync.Mutex // guards everything below and serialises writes
	sess        *session
	closed      bool
	connecting  bool  // a Connect or Resume is negotiating
	loopRunning bool  // a reader goroutine owns reconnection
	stopErr     error // the final error the Client stopped on, until a session is up again
	everUp      bool
	up          chan struct{} // closed while a session is established
	lastResumed bool
	jid         string
	smOn        bool          // stream management enabled on the last session
	smID        string        // resumption id, "" if not resumable
	known       knownFeatures // the server's features, for pipelining (negotiate)
	outH        uint32        // our stanzas sent since <enable/> (or resume)
	outAcked    uint32        // last h the server acknowledged
	unacked     []*outEntry
	rPending    bool // an <r/> is outstanding
	reqArmed    bool // reqTimer runs
	// While the reader dispatches a stanza, what the callbacks write waits
	// in deferred and goes out in one write with the reader's <a/> once the
	// stanza is handled (flushDeferred): a receipt, a read marker and the
	// acknowledgement of the message they answer make one TCP segment, and
	// one wake-up of the server's session, instead of three.
	deferring bool
	deferred  [][]byte
	ackBuf    []byte // the last <a/> written (ackFrameLocked)
	seq       uint64
	iqs       map[string]chan *Element
	sends     map[string]*pendingSend
}

// session is one established connection.
type session struct {
	tr   transport
	done chan struct{} // closed once the reader has finished with it
}

type entryKind uint8

const (
	kindMessage entryKind = iota
	kindIQ
	kindPresence
)

// outEntry is one stanza we send and keep until the server acknowledges it
// (or, while disconnected, until it can be sent).
type outEntry struct {
	seq     uint64
	data    []byte
	kind    entryKind
	dropped bool // a Send given up by its caller: not sent again (under c.mu)
}

type pendingSend struct {
	entry *outEntry
	done  chan error // buffered 1
}

// Stats counts what a Client did. All counters only grow.
type Stats struct {
	Received       uint64 // messages handed to OnMessage
	Duplicates     uint64 // redelivered messages dropped by id
	Sent           uint64 // Send calls confirmed by the gateway's receipt
	Reconnects     uint64 // sessions re-established after a loss (resumed or not)
	Resumes        uint64 // of those, XEP-0198 resumptions
	ResumeFailures uint64 // resumptions the server refused (then bound afresh)
	Unacked        int    // our stanzas not yet acknowledged by the server (now)
}

// New checks cfg and returns a Client that is not connected yet. It does
// not block.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var rnd [6]byte
	rand.Read(rnd[:])
	c := &Client{
		cfg:      cfg,
		to:       cfg.domain(),
		tlsCfg:   cfg.tlsConfig(),
		backoff:  Backoff{Min: cfg.ReconnectMin, Max: cfg.ReconnectMax},
		closing:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		idPrefix: fmt.Sprintf("%x-", rnd),
		dd:       newDedupe(cfg.DedupeWindow),
		up:       make(chan struct{}),
		iqs:      make(map[string]chan *Element),
		sends:    make(map[string]*pendingSend),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ackTimer = time.AfterFunc(time.Hour, c.ackTimerFired)
	c.ackTimer.Stop()
	c.reqTimer = time.AfterFunc(time.Hour, c.reqTimerFired)
	c.reqTimer.Stop()
	return c, nil
}

// Dial is New followed by Connect. On error no goroutine is left behind.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Connect establishes the first session: dial, TLS, SASL, bind, stream
// management, initial presence. It blocks until then or until ctx is done,
// and starts the reader goroutine. It fails with ErrAlreadyConnected if the
// Client has a session or is connecting; use Resume after a loss.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.connect(ctx, false)
	return err
}

// Resume re-establishes a lost session, trying XEP-0198 resumption first
// and binding afresh if the server refuses; it reports whether the session
// was resumed. After a resumption the server resends what we did not
// acknowledge and we resend what it did not; after a fresh bind the
// gateway's queue redelivers unacknowledged messages (dropped as
// duplicates by id) and the Client resends its unconfirmed messages,
// receipts and markers.
//
// With AutoReconnect on and the reconnect loop running, Resume cuts its
// backoff short and waits (until ctx is done) for the session. Resume
// blocks; it returns ErrAlreadyConnected if a session is up and the Client
// is not reconnecting by itself.
func (c *Client) Resume(ctx context.Context) (resumed bool, err error) {
	c.mu.Lock()
	if c.loopRunning && !c.closed {
		if c.sess != nil {
			r := c.lastResumed
			c.mu.Unlock()
			return r, nil
		}
		up := c.up
		c.mu.Unlock()
		select {
		case c.kick <- struct{}{}:
		default:
		}
		select {
		case <-up:
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.lastResumed, nil
		case <-c.closing:
			return false, ErrClosed
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	c.mu.Unlock()
	return c.connect(ctx, true)
}

func (c *Client) connect(ctx context.Context, tryResume bool) (bool, error) {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return false, ErrClosed
	case c.sess != nil || c.connecting || c.loopRunning:
		c.mu.Unlock()
		return false, ErrAlreadyConnected
	}
	c.connecting = true
	c.mu.Unlock()
	if !c.onReader() {
		c.wg.Wait() // a previous reader may still be finishing
	}

	s, hs, err := c.handshake(ctx, tryResume)
	c.mu.Lock()
	c.connecting = false
	if err == nil && c.closed {
		err = ErrClosed
		s.tr.drop()
	}
	if err != nil {
		c.mu.Unlock()
		return false, err
	}
	if c.everUp {
		c.stats.reconnects.Add(1)
	}
	c.install(s, hs)
	c.loopRunning = c.cfg.AutoReconnect
	c.wg.Add(1)
	c.mu.Unlock()
	go c.run(s)
	return hs.resumed, nil
}

// Close ends the session cleanly: it acknowledges what was received, ends
// the stream (</stream:stream>, or <close/> on WebSocket), waits briefly
// for the server to end its side, closes the connection and stops
// reconnecting. Pending Send and IQ calls fail with ErrClosed and anything
// still queued is dropped. Close blocks until the reader goroutine has
// exited (unless called from a callback) and is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if !c.onReader() {
			c.wg.Wait()
		}
		return nil
	}
	c.closed = true
	c.cancel()
	close(c.closing)
	s := c.sess
	if s != nil {
		frames := c.takeDeferredLocked()
		if a := c.ackFrameLocked(false); a != nil {
			frames = append(frames, a)
		}
		if len(frames) > 0 {
			s.tr.write(frames...)
		}
		s.tr.writeClose()
	}
	c.mu.Unlock()

	if s != nil && !c.onReader() {
		t := time.NewTimer(closeWait)
		select {
		case <-s.done:
		case <-t.C:
			s.tr.drop()
		}
		t.Stop()
	} else if s != nil {
		s.tr.drop()
	}
	if !c.onReader() {
		c.wg.Wait()
	}
	c.ackTimer.Stop()
	c.reqTimer.Stop()

	c.mu.Lock()
	for id, p := range c.sends {
		p.done <- ErrClosed
		delete(c.sends, id)
	}
	for id, ch := range c.iqs {
		close(ch)
		delete(c.iqs, id)
	}
	c.unacked = nil
	c.mu.Unlock()
	return nil
}

// Drop closes the network connection abruptly, without ending the stream,
// as a lost network would; the server keeps the session resumable. It is
// meant for tests of resumption. With AutoReconnect the Client then
// reconnects by itself; otherwise call Resume. Drop blocks until the reader
// has processed the loss (unless called from a callback); it does nothing
// without a session.
func (c *Client) Drop() {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return
	}
	s.tr.drop()
	if !c.onReader() {
		<-s.done
	}
}

// Connected reports whether the Client has an established session now.
// It does not block.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// SMID returns the XEP-0198 resumption id of the current (or last lost)
// session, "" if stream management is off or the session is not
// resumable. It does not block.
func (c *Client) SMID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.smID
}

// JID returns the full JID bound by the last session (user@app.domain/device).
// It does not block.
func (c *Client) JID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.jid
}

// Stats returns the Client's counters. It does not block.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	n := len(c.unacked)
	c.mu.Unlock()
	return Stats{
		Received:       c.stats.received.Load(),
		Duplicates:     c.stats.duplicates.Load(),
		Sent:           c.stats.sent.Load(),
		Reconnects:     c.stats.reconnects.Load(),
		Resumes:        c.stats.resumes.Load(),
		ResumeFailures: c.stats.resumeFailures.Load(),
		Unacked:        n,
	}
}

// Ack sends an XEP-0184 receipt for message id: the gateway marks it
// delivered for this device. Stream management already acknowledges every
// received stanza; Ack is the explicit, per-message form. While the Client
// is disconnected (after a first Connect) the receipt is queued and sent on
// the next session. Ack does not wait for the server; it blocks only on
// the write.
func (c *Client) Ack(id string) error {
	return c.sendTracked(appendMarker(nil, c.to, "received", NSReceipts, id))
}

// MarkRead sends an XEP-0333 displayed marker for message id: the gateway
// marks it read. Queued while disconnected, like Ack.
func (c *Client) MarkRead(id string) error {
	return c.sendTracked(appendMarker(nil, c.to, "displayed", NSMarkers, id))
}

func (c *Client) sendTracked(data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return err
	}
	return c.writeLocked(c.newEntry(data, kindMessage))
}

// usableLocked reports whether stanzas may be sent or queued now.
func (c *Client) usableLocked() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.sess == nil && !c.everUp && !c.connecting:
		return ErrNotConnected
	case c.sess == nil && c.stopErr != nil && !c.connecting && !c.loopRunning:
		return c.stopErr // stopped for good until the app connects again
	}
	return nil
}

// Send sends a message to the app's backend (a message.inbound event) and
// waits for the gateway's receipt, which it sends once the message is
// stored durably. It returns the message's stanza id. While disconnected
// the message is queued and sent on the next session; if a session is lost
// before the receipt, the message is sent again (with the same id) on the
// next one; the gateway stores a device's message id once (within 24 h),
// so the backend sees it once. Send blocks until the receipt
// or until ctx is done; a Send given up by ctx may still be delivered.
func (c *Client) Send(ctx context.Context, o Outbound) (string, error) {
	if o.Body == "" && len(o.Data) == 0 {
		return "", fmt.Errorf("%w: Outbound needs a Body or Data", ErrConfig)
	}
	if len(o.Data) > 0 && !json.Valid(o.Data) {
		return "", fmt.Errorf("%w: Outbound.Data is not valid JSON", ErrConfig)
	}
	id := o.ID
	if id == "" {
		id = c.newID()
	}
	data := appendOutbound(nil, c.to, id, &o)
	if len(data) > MaxStanzaBytes {
		// The gateway would end the stream (policy-violation), and the
		// stanza, sent again on every reconnect, would end each one.
		return id, fmt.Errorf("%w: %d bytes", ErrOutboundTooLarge, len(data))
	}
	if c.onReader() {
		return id, ErrInCallback
	}
	p := &pendingSend{done: make(chan error, 1)}
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return id, err
	}
	if _, dup := c.sends[id]; dup {
		c.mu.Unlock()
		return id, fmt.Errorf("%w: a Send with id %q is pending", ErrConfig, id)
	}
	p.entry = c.newEntry(data, kindMessage)
	c.sends[id] = p
	c.undeferLocked()
	err := c.writeLocked(p.entry)
	c.mu.Unlock()
	if err != nil {
		c.forgetSend(id, p)
		return id, err
	}
	select {
	case err := <-p.done:
		if err == nil {
			c.stats.sent.Add(1)
		}
		return id, err
	case <-ctx.Done():
		c.forgetSend(id, p)
		return id, ctx.Err()
	}
}

// failSendsLocked ends every pending Send with err, when the Client stops
// for good (a final error: conflict, bad credentials); they are not sent
// again if the app connects once more. It holds c.mu.
func (c *Client) failSendsLocked(err error) {
	c.stopErr = err
	for id, p := range c.sends {
		delete(c.sends, id)
		p.entry.dropped = true
		p.done <- err // buffered
	}
}

// forgetSend drops a Send its caller gave up on: it is not sent again on
// a later session (one the gateway refused would be refused at every
// reconnect).
func (c *Client) forgetSend(id string, p *pendingSend) {
	c.mu.Lock()
	if c.sends[id] == p {
		delete(c.sends, id)
	}
	if p.entry != nil {
		p.entry.dropped = true
	}
	c.mu.Unlock()
}

// RegisterPush registers this device's push token with the gateway
// (provider "apns" or "fcm"; "none" removes the registration). topic and
// environment ("production" or "sandbox") may be empty. It blocks until the
// server answers or ctx is done; it needs a live session.
func (c *Client) RegisterPush(ctx context.Context, provider, token, topic, environment string) error {
	b := []byte("<push xmlns='" + NSPush + "' provider='")
	b = appendEscaped(b, provider, true)
	for _, a := range [...]struct{ k, v string }{{"token", token}, {"topic", topic}, {"environment", environment}} {
		if a.v == "" {
			continue
		}
		b = append(b, "' "+a.k+"='"...)
		b = appendEscaped(b, a.v, true)
	}
	b = append(b, "'/>"...)
	_, err := c.iq(ctx, "set", string(b))
	return err
}

// ClientConfig fetches the app's client_config JSON. It blocks until the
// server answers or ctx is done; it needs a live session.
func (c *Client) ClientConfig(ctx context.Context) (json.RawMessage, error) {
	e, err := c.iq(ctx, "get", "<config xmlns='"+NSConfig+"'/>")
	if err != nil {
		return nil, err
	}
	cfg := e.Child(NSConfig, "config")
	if cfg == nil {
		return nil, fmt.Errorf("%w: config result without <config/>", ErrProtocol)
	}
	if cfg.Text == "" {
		return json.RawMessage("null"), nil
	}
	return json.RawMessage(cfg.Text), nil
}

// Ping sends an XEP-0199 ping and waits for the answer: a round trip to
// the gateway. It blocks until then or ctx is done; it needs a live
// session.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.iq(ctx, "get", "<ping xmlns='"+NSPing+"'/>")
	return err
}

// iq sends an IQ and waits for its result.
func (c *Client) iq(ctx context.Context, typ, payload string) (*Element, error) {
	if c.onReader() {
		return nil, ErrInCallback
	}
	id := c.newID()
	ch := make(chan *Element, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.sess == nil {
		c.mu.Unlock()
		return nil, ErrNotConnected
	}
	c.iqs[id] = ch
	c.undeferLocked()
	err := c.writeLocked(c.newEntry(appendIQ(nil, typ, id, payload), kindIQ))
	c.mu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.iqs, id)
		c.mu.Unlock()
		return nil, err
	}
	select {
	case e := <-ch:
		if e == nil {
			if c.isClosed() {
				return nil, ErrClosed
			}
			return nil, ErrDisconnected
		}
		if e.AttrValue("type") == "error" {
			return nil, parseStanzaError(e)
		}
		return e, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.iqs, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// onReader reports whether the caller is the reader goroutine (in a
// callback), which must not wait for itself.
//
// goid costs a runtime.Stack call (about a microsecond); Send and the
// IQs pay it once each.
func (c *Client) onReader() bool {
	g := c.readerG.Load()
	return g != 0 && g == goid()
}

// goid returns the current goroutine's id, from its stack header
// ("goroutine 123 [running]:"). Close, Drop, Connect, Send and the IQs
// call it.
func goid() uint64 {
	var buf [32]byte
	n := runtime.Stack(buf[:], false)
	b := bytes.TrimPrefix(buf[:n], []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) newID() string {
	return c.idPrefix + strconv.FormatUint(c.idSeq.Add(1), 36)
}

func (c *Client) newEntry(data []byte, kind entryKind) *outEntry {
	c.seq++
	return &outEntry{seq: c.seq, data: data, kind: kind}
}

// writeLocked sends entries on the current session, keeping them for
// retransmission until the server acknowledges them; without a session it
// queues them. It holds c.mu. A failed write breaks the connection, so the
// reader goroutine handles the loss; the error is returned only when the
// stanzas are not kept for a retry. With stream management, while the
// reader dispatches a stanza, the frames wait for flushDeferred.
//
// The Client asks the server to acknowledge its stanzas (<r/>) once
// AckRequestEvery of them are unacknowledged, or AckRequestInterval after
// the first: asking after each one would cost a round trip per receipt.
// What the server has not acknowledged is sent again after a reconnect.
func (c *Client) writeLocked(entries ...*outEntry) error {
	if c.sess == nil {
		c.unacked = append(c.unacked, entries...)
		return nil
	}
	frames := make([][]byte, 0, len(entries)+1)
	for _, e := range entries {
		frames = append(frames, e.data)
	}
	if c.smOn {
		c.unacked = append(c.unacked, entries...)
		c.outH += uint32(len(entries))
		if r := c.requestLocked(false); r != nil {
			frames = append(frames, r)
		}
		if c.deferring {
			c.deferred = append(c.deferred, frames...)
			return nil
		}
	}
	if err := c.sess.tr.write(frames...); err != nil {
		c.sess.tr.drop()
		if c.smOn {
			return nil
		}
		return fmt.Errorf("sdkproto: write: %w", err)
	}
	return nil
}

var smRequest = []byte("<r xmlns='" + NSSM + "'/>")

// requestLocked returns an <r/> to send if one is due (always, if timer:
// AckRequestInterval passed), and otherwise arms reqTimer while stanzas
// are unacknowledged. It holds c.mu, with stream management on.
func (c *Client) requestLocked(timer bool) []byte {
	if c.rPending || len(c.unacked) == 0 {
		return nil
	}
	if timer || len(c.unacked) >= c.cfg.AckRequestEvery {
		c.rPending = true
		if c.reqArmed {
			c.reqTimer.Stop()
			c.reqArmed = false
		}
		return smRequest
	}
	if !c.reqArmed {
		c.reqArmed = true
		c.reqTimer.Reset(c.cfg.AckRequestInterval)
	}
	return nil
}

func (c *Client) reqTimerFired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqArmed = false
	if c.sess == nil || !c.smOn {
		return
	}
	if r := c.requestLocked(true); r != nil {
		c.sendLocked(r)
	}
}

// sendLocked writes frames on the current session (c.sess is set). A
// failed write drops the connection, so the reader handles the loss. It
// holds c.mu.
func (c *Client) sendLocked(frames ...[]byte) {
	if err := c.sess.tr.write(frames...); err != nil {
		c.sess.tr.drop()
	}
}

// ackFrameLocked returns the <a/> for the stanzas received and records it
// as sent: nil without stream management or, unless force, when nothing
// is new since the last one. The frame is c.ackBuf, valid until the next
// call; writes are synchronous under c.mu, which the caller holds.
func (c *Client) ackFrameLocked(force bool) []byte {
	if !c.smOn {
		return nil
	}
	h := c.inH.Load()
	if !force && h == c.ackedIn.Load() {
		return nil
	}
	c.ackedIn.Store(h)
	c.ackBuf = appendSMAck(c.ackBuf[:0], h)
	return c.ackBuf
}

// undeferLocked writes the deferred frames now and ends deferral: a call
// that waits for the server's answer (Send, an IQ) from a callback must
// not leave its stanza waiting for the end of the callback.
func (c *Client) undeferLocked() {
	if !c.deferring {
		return
	}
	if f := c.takeDeferredLocked(); len(f) > 0 && c.sess != nil {
		c.sendLocked(f...)
	}
}

// takeDeferredLocked ends deferral and returns the frames it held.
func (c *Client) takeDeferredLocked() [][]byte {
	c.deferring = false
	f := c.deferred
	c.deferred = nil
	return f
}

// ackOutLocked processes the server's h: drops what it acknowledged.
func (c *Client) ackOutLocked(h uint32) {
	n := int(h - c.outAcked)
	if n < 0 || n > len(c.unacked) {
		// An h from before our last one or beyond what we sent: ignore
		// rather than lose stanzas.
		return
	}
	clear(c.unacked[:n])
	c.unacked = c.unacked[n:]
	if len(c.unacked) == 0 {
		c.unacked = nil
	}
	c.outAcked = h
}

// settleSendsLocked completes the pending Sends that the server's
// <resumed h/> covers: the gateway counts a stanza as it handles it, so
// such a message is stored; its receipt went with the old connection (the
// gateway does not keep the receipts it wrote for a resumption), and
// without this the Send waited until its context ended, or, resent on a
// later fresh session, reached the backend twice. It holds c.mu.
func (c *Client) settleSendsLocked(h uint32) {
	n := int(h - c.outAcked)
	if n <= 0 || n > len(c.unacked) || len(c.sends) == 0 {
		return
	}
	covered := make(map[*outEntry]bool, n)
	for _, e := range c.unacked[:n] {
		covered[e] = true
	}
	for id, p := range c.sends {
		if covered[p.entry] {
			delete(c.sends, id)
			p.done <- nil // buffered
		}
	}
}

// install makes s the current session and sends what must follow the
// handshake: retransmissions and, on a fresh session, initial presence.
// It holds c.mu.
func (c *Client) install(s *session, hs handshakeResult) {
	c.sess = s
	c.everUp = true
	c.stopErr = nil
	c.lastResumed = hs.resumed
	c.rPending = false
	if hs.jid != "" {
		c.jid = hs.jid
	}
	if hs.resumed {
		c.stats.resumes.Add(1)
		c.settleSendsLocked(hs.h)
		c.ackOutLocked(hs.h)
		c.outH = hs.h
		resend := slices.DeleteFunc(c.unacked, func(e *outEntry) bool { return e.dropped })
		c.unacked = nil
		if len(resend) > 0 {
			c.writeLocked(resend...)
		}
	} else {
		if hs.failedH != nil && c.smOn {
			c.ackOutLocked(*hs.failedH)
		}
		// A fresh session: resend our unconfirmed messages (receipts,
		// markers, Sends without a receipt), in their original order.
		// IQs died with the old session.
		var resend []*outEntry
		in := make(map[*outEntry]bool, len(c.unacked))
		for _, e := range c.unacked {
			if e.kind == kindMessage && !e.dropped {
				resend = append(resend, e)
				in[e] = true
			}
		}
		for _, p := range c.sends {
			if !in[p.entry] {
				resend = append(resend, p.entry)
			}
		}
		slices.SortFunc(resend, func(a, b *outEntry) int { return cmp.Compare(a.seq, b.seq) })
		c.unacked = nil
		c.smOn = hs.smEnabled
		c.smID = hs.smID
		c.outH, c.outAcked = 0, 0
		c.inH.Store(0)
		c.ackedIn.Store(0)
		entries := append([]*outEntry{c.newEntry([]byte("<presence/>"), kindPresence)}, resend...)
		c.writeLocked(entries...)
	}
	close(c.up)
}

// run is the reader goroutine: it reads the session until it ends, then,
// with AutoReconnect, reconnects and goes on reading.
func (c *Client) run(s *session) {
	defer c.wg.Done()
	g := goid()
	c.readerG.Store(g)
	defer c.readerG.CompareAndSwap(g, 0)
	for s != nil {
		err := c.read(s)
		if !c.lost(s, err) {
			return
		}
		s = c.reconnect()
	}
}

// read handles elements until the stream ends; nil means a clean end.
func (c *Client) read(s *session) error {
	for {
		e, err := s.tr.next()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := c.handle(s, e); err != nil {
			return err
		}
	}
}

// handle processes one element from the server in the reader goroutine.
func (c *Client) handle(s *session, e *Element) error {
	if c.loseIn.Load() > 0 && (isStanza(e, "message") || isStanza(e, "iq") || isStanza(e, "presence")) {
		c.loseIn.Add(-1) // as if lost in flight (export_test.go)
		return nil
	}
	switch {
	case isStanza(e, "message"):
		c.setDeferring()
		c.handleMessage(e)
		c.flushDeferred()
	case isStanza(e, "iq"):
		c.setDeferring()
		c.handleIQ(e)
		c.flushDeferred()
	case isStanza(e, "presence"):
		c.flushDeferred() // counts it; no callback writes
	case e.Is(NSSM, "r"):
		c.sendAck(true)
	case e.Is(NSSM, "a"):
		h, err := strconv.ParseUint(e.AttrValue("h"), 10, 32)
		if err != nil {
			return fmt.Errorf("%w: bad <a h=%q/>", ErrProtocol, e.AttrValue("h"))
		}
		c.mu.Lock()
		c.ackOutLocked(uint32(h))
		c.rPending = false
		c.mu.Unlock()
	case isStreamError(e):
		return parseStreamError(e)
	}
	return nil
}

func (c *Client) handleMessage(e *Element) {
	if e.AttrValue("type") == "error" {
		c.finishSend(e.AttrValue("id"), parseStanzaError(e))
		return
	}
	if r := e.Child(NSReceipts, "received"); r != nil {
		id := r.AttrValue("id")
		if id == "" {
			id = e.AttrValue("id")
		}
		c.finishSend(id, nil)
	}
	m, ok := ParseMessage(e)
	if !ok {
		return
	}
	if m.ID != "" && c.dd.seen(m.ID, c.cfg.DedupeWindow) {
		c.stats.duplicates.Add(1)
		return
	}
	c.stats.received.Add(1)
	if c.cfg.OnMessage != nil {
		c.cfg.OnMessage(m)
	}
}

func (c *Client) finishSend(id string, err error) {
	if id == "" {
		return
	}
	c.mu.Lock()
	p := c.sends[id]
	delete(c.sends, id)
	c.mu.Unlock()
	if p != nil {
		p.done <- err
	}
}

func (c *Client) handleIQ(e *Element) {
	id := e.AttrValue("id")
	switch e.AttrValue("type") {
	case "result", "error":
		c.mu.Lock()
		ch := c.iqs[id]
		delete(c.iqs, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- e
		}
	case "get", "set":
		// Answer pings; refuse anything else, as RFC 6120 requires.
		ping := e.AttrValue("type") == "get" && e.Child(NSPing, "ping") != nil
		b := []byte("<iq type='result' id='")
		if !ping {
			b = []byte("<iq type='error' id='")
		}
		b = appendEscaped(b, id, true)
		if from := e.AttrValue("from"); from != "" {
			b = append(b, "' to='"...)
			b = appendEscaped(b, from, true)
		}
		if ping {
			b = append(b, "'/>"...)
		} else {
			b = append(b, "'><error type='cancel'><service-unavailable xmlns='"+NSStanzas+"'/></error></iq>"...)
		}
		c.mu.Lock()
		if c.sess != nil {
			c.writeLocked(c.newEntry(b, kindIQ))
		}
		c.mu.Unlock()
	}
}

func (c *Client) setDeferring() {
	c.mu.Lock()
	c.deferring = true
	c.mu.Unlock()
}

// flushDeferred counts the inbound stanza just handled for XEP-0198 and
// sends what the callbacks wrote meanwhile, with an <a/> if the server's
// stanzas need acknowledging: in that write if there is one, at once after
// AckEvery stanzas, otherwise after AckInterval of quiet.
func (c *Client) flushDeferred() {
	h := c.inH.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	frames := c.takeDeferredLocked()
	if c.sess == nil {
		return // they are in unacked, for the next session
	}
	if c.smOn && h != c.ackedIn.Load() {
		if len(frames) > 0 || h-c.ackedIn.Load() >= uint32(c.cfg.AckEvery) {
			frames = append(frames, c.ackFrameLocked(false))
			c.ackTimer.Stop()
		} else {
			c.ackTimer.Reset(c.cfg.AckInterval)
		}
	}
	if len(frames) == 0 {
		return
	}
	c.sendLocked(frames...)
	clear(frames)
	c.deferred = frames[:0] // reused by the next stanza's callbacks
}

func (c *Client) ackTimerFired() { c.sendAck(false) }

// sendAck sends <a h/> if stream management is on and there is something
// new to acknowledge (always, if force: the server asked with <r/>).
func (c *Client) sendAck(force bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return
	}
	if a := c.ackFrameLocked(force); a != nil {
		c.sendLocked(a)
	}
}

// lost handles the end of session s; it reports whether to reconnect.
func (c *Client) lost(s *session, err error) bool {
	c.ackTimer.Stop()
	var se *StreamError
	clean := err == nil
	isStreamErr := errors.As(err, &se)

	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.up = make(chan struct{})
	}
	for id, ch := range c.iqs {
		close(ch)
		delete(c.iqs, id)
	}
	c.rPending = false
	c.takeDeferredLocked() // they are in unacked
	if c.reqArmed {
		c.reqTimer.Stop()
		c.reqArmed = false
	}
	if clean || isStreamErr {
		c.smID = "" // the server discarded the session
	}
	closed := c.closed
	again := c.cfg.AutoReconnect && !closed && (!isStreamErr || se.Temporary())
	c.loopRunning = again
	if isStreamErr && !se.Temporary() && !closed {
		c.failSendsLocked(err) // final: nothing will send them
	}
	c.mu.Unlock()

	if clean {
		s.tr.close()
	} else {
		s.tr.drop()
	}
	if !closed && c.cfg.OnDisconnect != nil {
		c.cfg.OnDisconnect(err)
	}
	close(s.done)
	return again
}

// reconnect retries with backoff until a session is up (returned), or the
// Client is closed or the error is final (nil).
func (c *Client) reconnect() *session {
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(c.backoff.Delay(attempt))
		select {
		case <-t.C:
		case <-c.kick:
			t.Stop()
		case <-c.closing:
			t.Stop()
			return c.stopLoop()
		}
		s, hs, err := c.handshake(c.ctx, true)
		if err == nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				s.tr.drop()
				return c.stopLoop()
			}
			c.install(s, hs)
			c.mu.Unlock()
			c.stats.reconnects.Add(1)
			if c.cfg.OnConnect != nil {
				c.cfg.OnConnect(hs.resumed)
			}
			return s
		}
		if c.isClosed() {
			return c.stopLoop()
		}
		if isFinal(err) {
			c.mu.Lock()
			c.failSendsLocked(err) // nothing will send them
			c.mu.Unlock()
			c.stopLoop()
			if c.cfg.OnDisconnect != nil {
				c.cfg.OnDisconnect(err)
			}
			return nil
		}
	}
}

func (c *Client) stopLoop() *session {
	c.mu.Lock()
	c.loopRunning = false
	c.mu.Unlock()
	return nil
}

// isFinal reports whether reconnecting after err would only repeat it.
func isFinal(err error) bool {
	var (
		se  *StreamError
		sa  *SASLError
		sta *StanzaError
	)
	switch {
	case errors.As(err, &se):
		return !se.Temporary()
	case errors.As(err, &sa):
		return sa.Condition != "temporary-auth-failure"
	case errors.As(err, &sta):
		return true
	case errors.Is(err, ErrServerSignature), errors.Is(err, ErrMechanism), errors.Is(err, ErrConfig):
		return true
	}
	return false
}
