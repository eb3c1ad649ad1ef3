package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"tether/queue"
	"tether/sdkproto"
)

// State is a bitmask of what a session has negotiated.
type State uint8

// Session states.
const (
	StateSecure State = 1 << iota // TLS (or a trusted WebSocket)
	StateAuthn                    // SASL succeeded
	StateBound                    // a resource (device) is bound
	StateReady                    // initial presence sent: messages flow
)

// CloseReason says why a session ended; it becomes a metric label.
type CloseReason string

// Close reasons.
const (
	ReasonClientClosed   CloseReason = "client_closed"
	ReasonConnLost       CloseReason = "connection_lost"
	ReasonNotWellFormed  CloseReason = "not_well_formed"
	ReasonPolicy         CloseReason = "policy_violation"
	ReasonAuthTimeout    CloseReason = "auth_timeout"
	ReasonIdle           CloseReason = "idle"
	ReasonReplaced       CloseReason = "replaced"
	ReasonShutdown       CloseReason = "shutdown"
	ReasonSlowConsumer   CloseReason = "slow_consumer"
	ReasonHostUnknown    CloseReason = "host_unknown"
	ReasonNotAuthorized  CloseReason = "not_authorized"
	ReasonResumeExpired  CloseReason = "resume_expired"
	ReasonResumed        CloseReason = "resumed_elsewhere"
	ReasonHandledTooHigh CloseReason = "handled_count_too_high" // an XEP-0198 <a h/> above what was sent
	ReasonUnsupported    CloseReason = "unsupported_stanza_type"
	ReasonNamespace      CloseReason = "invalid_namespace"   // a stream header in another namespace
	ReasonVersion        CloseReason = "unsupported_version" // a stream header with version 2.0 or later
)

// streamErrors maps a close reason to the stream error condition sent.
var streamErrors = map[CloseReason]string{
	ReasonNotWellFormed:  "not-well-formed",
	ReasonPolicy:         "policy-violation",
	ReasonAuthTimeout:    "connection-timeout",
	ReasonIdle:           "connection-timeout",
	ReasonReplaced:       "conflict",
	ReasonShutdown:       "system-shutdown",
	ReasonSlowConsumer:   "policy-violation",
	ReasonHostUnknown:    "host-unknown",
	ReasonNotAuthorized:  "not-authorized",
	ReasonHandledTooHigh: "undefined-condition", // with <handled-count-too-high/> (XEP-0198 section 4)
	ReasonUnsupported:    "unsupported-stanza-type",
	ReasonNamespace:      "invalid-namespace",
	ReasonVersion:        "unsupported-version",
}

const writeTimeout = 10 * time.Second

// nsCSI is XEP-0352 client state indication.
const nsCSI = "urn:xmpp:csi:0"

// Session is one device connection: the reader goroutine runs the state
// machine; other goroutines (the queue's hand-off, the flusher) only take
// mu to queue output. Lock order: Server.mu before Session.mu.
type Session struct {
	srv  *Server
	log  *zap.Logger
	id   uint64
	kind string // tls, starttls, websocket

	// Owned by the reader goroutine.
	started   time.Time
	state     State
	app       string
	user      string
	device    string
	domain    string
	streamID  string
	authTries int
	scram     *scramState
	idleTmr   *time.Timer // wakes a parked session at its read deadline

	// An <r/> unanswered: since when (unix ns; 0 when nothing since the
	// last read), and the timer that ends the session after AckTimeout
	// (ackwait.go).
	ackAsked atomic.Int64
	ackTmr   *time.Timer // under mu

	// parked: no reader goroutine; the poller watches the socket.
	parked   atomic.Bool
	readable bool // set by the poller's unpark, for the new reader

	mu           sync.Mutex
	t            transport // nil while detached
	out          [][]byte  // frames waiting for the flusher
	outBufs      []*xmlBuf // the pooled buffers of message frames in out (frames.go)
	outBytes     int
	flushing     bool
	closed       bool
	closeWritten bool
	holdKick     bool // deliver may take the flush for its caller: kickLocked claims it, not starts it
	closeReason  CloseReason
	// Delivery state, under mu.
	sub        *queue.Subscription
	snk        *sink
	loading    bool             // reading pending pages: live messages are held
	held       []*queue.Message // live messages that arrived while loading
	overflow   bool             // held was full: some live messages are only in the store
	lastSeq    uint64           // highest seq queued on this session
	more       bool             // the queue may hold more pending messages
	inflight   []inflight       // messages queued and not yet acknowledged
	sentIDs    []string         // ids in the frames being written (flush)
	sentWait   []string         // written, not yet marked sent nor acknowledged (sentmarks.go)
	smEnabled  bool
	receipts   bool // the device sends XEP-0184 receipts
	smID       string
	hIn        uint32 // stanzas received (XEP-0198 h)
	hOut       uint32 // stanzas sent
	errDetail  string // what follows the condition in the stream error (written by the reader before it ends the session)
	detachedAt time.Time
	resumeTmr  *time.Timer
	lostSent   bool // OnLost was called since the connection was lost
}

type inflight struct {
	h    uint32 // hOut once this message's stanza is counted
	size int    // bytes of its stanza
	msg  *queue.Message
	raw  []byte // instead of msg: another stanza (an IQ result, a receipt), kept for resumption
}

func (s *Session) ref() queue.DeviceRef {
	return queue.DeviceRef{App: s.app, User: s.user, Device: s.device}
}

// run is the reader goroutine: it reads elements and drives the state
// machine until the connection ends.
func (s *Session) run() {
	s.started = time.Now()
	s.t.setReadDeadline(s.started.Add(s.srv.cfg.AuthTimeout))
	if s.t.secure() {
		s.state |= StateSecure
	}
	s.serve()
}

// serve runs the read loop on the calling goroutine, which holds the
// session's WaitGroup ticket: the ticket passes to whichever goroutine
// continues the session, and is given back when it ends.
//
// Once the session is ready the loop moves to another goroutine:
// negotiation (TLS, SASL, the first pending messages) grows a goroutine's
// stack, and the runtime only shrinks a stack whose use falls under a
// quarter of it. A session then parks whenever it has no input (see
// park.go), and its reader runs again on a pooled worker (workers.go).
// Without a poller the reader never parks and keeps a fresh goroutine of
// its own.
func (s *Session) serve() {
	reason, next := s.loop()
	switch next {
	case loopHandoff:
		if s.srv.poll == nil {
			go s.serve()
		} else {
			s.srv.work.run(task{s, taskServe})
		}
		return
	case loopParked:
		return
	}
	if s.idleTmr != nil {
		s.idleTmr.Stop() // else it keeps the session reachable until it fires
	}
	s.srv.forget(s)
	s.end(reason)
	s.srv.wg.Done()
}

type loopNext uint8

const (
	loopEnd     loopNext = iota // the session is over: reason says why
	loopHandoff                 // the session just became ready
	loopParked                  // parked: another goroutine continues
)

// loop returns why the connection ended, or what comes next.
func (s *Session) loop() (reason CloseReason, next loopNext) {
	for {
		s.mu.Lock()
		if s.closeReason != "" {
			r := s.closeReason
			s.mu.Unlock()
			return r, loopEnd
		}
		t := s.t
		s.mu.Unlock()
		if pr, ok := t.(parkable); ok && s.state&StateReady != 0 {
			c := pr.reader()
			parked, err := s.tryPark(c)
			if parked {
				return "", loopParked
			}
			if err != nil {
				return s.readFailure(c.readErr(err)), loopEnd
			}
		}
		e, err := t.next()
		if err != nil {
			return s.readFailure(err), loopEnd
		}
		if s.state&StateAuthn != 0 {
			t.setReadDeadline(time.Now().Add(s.srv.cfg.IdleTimeout))
		}
		if e == keepalive {
			continue
		}
		if s.ackAsked.Load() != 0 {
			s.ackAsked.Store(0) // the device reads: it answered, or sent something of its own
		}
		ready := s.state&StateReady != 0
		r := s.handle(e)
		e.Release() // the handlers keep strings, never the tree
		if r != "" {
			return r, loopEnd
		}
		if !ready && s.state&StateReady != 0 {
			return "", loopHandoff
		}
	}
}

func (s *Session) readFailure(err error) CloseReason {
	s.mu.Lock()
	r := s.closeReason
	s.mu.Unlock()
	if r != "" {
		return r
	}
	var ne net.Error
	switch {
	case errors.Is(err, errTooLarge):
		return ReasonPolicy
	case errors.Is(err, errNotWellFormed):
		return ReasonNotWellFormed
	case errors.Is(err, errStreamEnd):
		return ReasonClientClosed
	case errors.As(err, &ne) && ne.Timeout():
		if s.state&StateAuthn == 0 {
			return ReasonAuthTimeout
		}
		return ReasonIdle
	case errors.Is(err, io.EOF):
		return ReasonConnLost
	}
	return ReasonConnLost
}

// handle processes one element; a non-empty reason ends the connection.
func (s *Session) handle(e *element) CloseReason {
	if e.Name.Space == sdkproto.NSStream && e.Name.Local == streamLocal || e.Name.Space == sdkproto.NSFraming && e.Name.Local == "open" {
		return s.openStream(e)
	}
	if s.domain == "" {
		if e.Name.Local == streamLocal || e.Name.Local == "open" {
			return ReasonNamespace // RFC 6120 4.9.3.10 (RFC 7395 3.3.2: urn:ietf:params:xml:ns:xmpp-framing)
		}
		return ReasonNotWellFormed // a stanza before the stream header
	}
	switch {
	case e.Name.Space == sdkproto.NSTLS && e.Name.Local == "starttls":
		return s.startTLS()
	case e.Name.Space == sdkproto.NSSASL:
		return s.sasl(e)
	case e.Name.Space == sdkproto.NSSM:
		return s.streamManagement(e)
	}
	if s.state&StateAuthn == 0 {
		return ReasonNotAuthorized
	}
	if e.Name.Space == nsCSI && (e.Name.Local == "active" || e.Name.Local == "inactive") {
		// XEP-0352 client state: accepted and ignored (the gateway has
		// nothing to hold back for an inactive client; a wake push only
		// goes to devices offline). Not a stanza: h does not count it.
		return ""
	}
	if e.Name.Space != sdkproto.NSClient && e.Name.Space != "" {
		return ReasonUnsupported // RFC 6120 4.9.3.22
	}
	// XEP-0198 4: h counts the stanzas handled since <enable/>, not those
	// between bind and enable (the legacy session IQ, a roster get): else
	// the client sees an <a h/> above what it sent.
	s.mu.Lock()
	if s.smEnabled {
		s.hIn++
	}
	s.mu.Unlock()
	switch e.Name.Local {
	case "iq":
		return s.iq(e)
	case "presence":
		return s.presence(e)
	case "message":
		return s.message(e)
	}
	return ReasonUnsupported
}

// openStream answers a stream header (or WebSocket <open/>) with ours and
// the features of the current state.
func (s *Session) openStream(e *element) CloseReason {
	if v := e.Value("version"); v != "" && !supportedVersion(v) {
		return ReasonVersion // RFC 6120 4.7.5: a major version above 1
	}
	to := e.Value("to")
	app, ok := strings.CutSuffix(to, "."+s.srv.cfg.Domain)
	if s.domain != "" && to != s.domain {
		ok = false
	}
	s.streamID = randomID()
	if !ok || !s.srv.dir.AppExists(app) {
		s.send(s.t.streamHeader(to, s.streamID))
		return ReasonHostUnknown
	}
	s.domain, s.app = to, app
	var f xmlBuf
	f.WriteString("<stream:features")
	if s.kind == "websocket" {
		f.WriteString(" xmlns:stream='http://etherx.jabber.org/streams'")
	}
	f.WriteString(">")
	switch {
	case s.state&StateSecure == 0:
		f.WriteString("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>")
	case s.state&StateAuthn == 0:
		f.WriteString("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")
		for _, m := range sdkproto.Mechanisms {
			f.WriteString("<mechanism>" + m + "</mechanism>")
		}
		f.WriteString("</mechanisms>")
	default:
		f.WriteString("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>" +
			"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>" +
			"<sm xmlns='urn:xmpp:sm:3'/>")
	}
	f.WriteString("</stream:features>")
	s.send(s.t.streamHeader(s.domain, s.streamID), f.Bytes())
	return ""
}

func (s *Session) startTLS() CloseReason {
	tt, ok := s.t.(*tcpTransport)
	if !ok || s.state&StateSecure != 0 {
		return ReasonPolicy
	}
	if len(bytes.TrimSpace(tt.br.Pending())) > 0 {
		// Cleartext sent behind <starttls/> would be read as if it came
		// inside TLS (RFC 6120 5.4.3.3; the STARTTLS injection of
		// CVE-2011-0411): refuse the stream.
		return ReasonPolicy
	}
	// <proceed/> must reach the client before the handshake starts: write it
	// directly, the flusher has nothing else queued before authentication.
	if err := s.syncWrite([]byte("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")); err != nil {
		return ReasonConnLost
	}
	tt.conn.SetDeadline(time.Now().Add(s.srv.cfg.AuthTimeout))
	if err := tt.startTLS(withStreamName(s.srv.cfg.TLS, s.domain), s.srv.cfg.AuthTimeout); err != nil {
		s.srv.m.handshakes.WithLabelValues(s.kind, "tls_failed").Inc()
		return ReasonConnLost
	}
	tt.setWriteDeadline(time.Time{})
	tt.conn.SetReadDeadline(s.started.Add(s.srv.cfg.AuthTimeout)) // one budget for TLS and SASL
	s.state |= StateSecure
	s.domain = ""
	return ""
}

// syncWrite writes directly on the reader goroutine; only used before any
// other writer can exist (STARTTLS).
func (s *Session) syncWrite(b []byte) error {
	s.mu.Lock()
	for s.flushing {
		s.mu.Unlock()
		time.Sleep(time.Millisecond) // waiting for a flush of pre-TLS output
		s.mu.Lock()
	}
	t := s.t
	s.mu.Unlock()
	return t.write([][]byte{b})
}

// --- output -----------------------------------------------------------------

// send queues frames for the flusher. Safe for concurrent use; never
// blocks on the network.
func (s *Session) send(frames ...[]byte) {
	s.mu.Lock()
	s.enqueueLocked(frames...)
	s.mu.Unlock()
}

// enqueueLocked queues frames for the flusher; false when the session is
// detached or closed and they were dropped.
func (s *Session) enqueueLocked(frames ...[]byte) bool {
	if s.closed || s.t == nil {
		return false // detached: messages are in inflight and go out on resume
	}
	for _, f := range frames {
		s.out = append(s.out, f)
		s.outBytes += len(f)
	}
	if s.outBytes > s.srv.cfg.MaxOutboundBytes && s.closeReason == "" {
		s.closeReason = ReasonSlowConsumer
		if s.t != nil {
			s.wakeReader(s.t)
		}
	}
	s.kickLocked()
	return true
}

// kickLocked starts a flusher if output is waiting and none runs.
func (s *Session) kickLocked() {
	if s.flushing || len(s.out) == 0 || s.t == nil {
		return
	}
	s.flushing = true
	if s.holdKick {
		return // deliver starts it, or leaves it to its caller
	}
	s.srv.work.run(task{s, taskFlush})
}

// flush writes everything queued, then exits: no writer goroutine stays
// parked on an idle session.
func (s *Session) flush() {
	for {
		s.mu.Lock()
		t := s.t
		if len(s.out) == 0 || t == nil {
			s.flushing = false
			// The output has gone out: read on if it was what stopped
			// the read (a backlog of large messages, or a device that
			// neither enables stream management nor sends receipts).
			refill := t != nil && s.claimReadLocked()
			s.mu.Unlock()
			if refill {
				s.loadPending()
			}
			return
		}
		frames, bufs := s.out, s.outBufs
		s.out, s.outBufs, s.outBytes = nil, nil, 0
		sent := s.sentIDs
		s.sentIDs = nil
		s.mu.Unlock()
		t.extendWriteDeadline(time.Now())
		werr := t.write(frames)
		releaseFrames(bufs) // written or failed: the transport holds none
		if werr != nil {
			s.mu.Lock()
			s.flushing = false
			wake := s.t == t && s.closeReason == ""
			if wake {
				t.close() // the reader sees the error and ends or detaches
			}
			s.mu.Unlock()
			if wake {
				s.wakeReader(t)
			}
		}
		if len(sent) > 0 {
			// Marked sent even when the write failed: it fails part way
			// when the connection is closed under it (the reader saw the
			// device go, and detached or ended the session) after the
			// message frames went out, so the device may well have them;
			// skipping them left such messages "enqueued" for good. They
			// stay in flight either way, and go out again on resumption or
			// on the next session. The mark waits for the acknowledgement
			// (sentmarks.go).
			s.sentWritten(sent)
			if werr == nil {
				s.srv.m.messagesOut.Add(float64(len(sent)))
			}
		}
		if werr != nil {
			return
		}
	}
}

// terminate ends the session from another goroutine with reason: the
// stream error goes out, then the connection closes.
func (s *Session) terminate(reason CloseReason) {
	s.mu.Lock()
	if s.closeReason == "" {
		s.closeReason = reason
	}
	t := s.t
	detached := t == nil
	s.mu.Unlock()
	if detached {
		s.end(reason)
		return
	}
	s.wakeReader(t) // the reader wakes and ends the session
}

// end runs once when the session is over for good, or detaches it when it
// can be resumed.
func (s *Session) end(reason CloseReason) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	t := s.t
	resumable := s.smEnabled && s.smID != "" && reason == ReasonConnLost && t != nil
	// Unacknowledged messages: the device is woken if it does not come
	// back (Server.Live), unless the session goes on elsewhere.
	unacked := (s.messagesInFlightLocked() || s.more) && reason != ReasonResumed && reason != ReasonShutdown &&
		s.state&StateBound != 0
	if resumable {
		// Keep the session (and its subscription) for the resume window.
		// Not ending any more: an ack timeout's reason is cleared, or
		// resume would refuse it.
		s.t = nil
		s.closeReason = ""
		s.out, s.outBufs, s.outBytes = nil, nil, 0
		s.detachedAt = time.Now()
		s.lostSent = unacked
		s.resumeTmr = time.AfterFunc(s.srv.cfg.ResumeWindow, func() { s.terminate(ReasonResumeExpired) })
		s.mu.Unlock()
		t.close()
		s.srv.m.closes.WithLabelValues(string(ReasonConnLost)).Inc()
		if unacked {
			s.srv.lost(s)
		}
		return
	}
	s.closed = true
	if s.resumeTmr != nil {
		s.resumeTmr.Stop()
	}
	if s.ackTmr != nil {
		s.ackTmr.Stop()
	}
	sub := s.sub
	s.sub = nil
	bound, ready := s.state&StateBound != 0, s.state&StateReady != 0
	s.mu.Unlock()
	if sub != nil {
		sub.Close()
	}
	s.markSentNow()
	if t != nil {
		s.writeClose(t, reason)
		t.close()
	}
	if bound && reason != ReasonResumed && s.srv.unbind(s) {
		// At a shutdown the device stays marked connected: it will
		// reconnect by itself, as after a crash.
		if reason != ReasonShutdown {
			if err := s.srv.q.DeviceUnbound(context.Background(), s.ref()); err != nil {
				s.log.Warn("device record", zap.Error(err))
			}
		}
		if ready { // device.online was sent (at the presence)
			s.srv.q.AppendEvent(context.Background(), &queue.Event{Type: queue.EventDeviceOffline, App: s.app, User: s.user, Device: s.device, Reason: string(reason)})
		}
	}
	if unacked {
		s.srv.lost(s)
	}
	s.srv.m.closes.WithLabelValues(string(reason)).Inc()
	if s.log.Core().Enabled(zap.DebugLevel) {
		s.log.Debug("session closed", zap.Uint64("conn", s.id), zap.String("reason", string(reason)))
	}
}

// writeClose writes what is still queued, the stream error for reason (if
// any) and the stream close, bounded by the write timeout.
func (s *Session) writeClose(t transport, reason CloseReason) {
	s.mu.Lock()
	if s.closeWritten {
		s.mu.Unlock()
		return
	}
	s.closeWritten = true
	for s.flushing {
		s.mu.Unlock()
		time.Sleep(time.Millisecond) // let a running flush finish
		s.mu.Lock()
	}
	frames, bufs := s.out, s.outBufs
	s.out, s.outBufs = nil, nil
	s.flushing = true // no new flusher from now on
	s.mu.Unlock()
	if cond, ok := streamErrors[reason]; ok {
		var b xmlBuf
		b.WriteString("<stream:error")
		if s.kind == "websocket" {
			b.WriteString(" xmlns:stream='http://etherx.jabber.org/streams'")
		}
		b.WriteString("><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
		if reason == ReasonHandledTooHigh {
			b.WriteString(s.errDetail)
		}
		b.WriteString("</stream:error>")
		frames = append(frames, b.Bytes())
	}
	if s.domain == "" && reason != ReasonHostUnknown {
		// No stream header went out on this stream yet (s.domain is set
		// with ours, and cleared at each stream restart; openStream sends
		// one before <host-unknown/>): RFC 6120 4.9.1.2 wants one first,
		// whatever the error (not-well-formed, connection-timeout, ...).
		// The former test (reason == ReasonHostUnknown && len(frames) == 1)
		// sent a second header once the flusher had written the first.
		frames = append([][]byte{t.streamHeader("", randomID())}, frames...)
	}
	frames = append(frames, t.streamClose())
	t.setWriteDeadline(time.Now().Add(time.Second))
	t.write(frames)
	releaseFrames(bufs)
}

// --- XEP-0198 stream management ------------------------------------------------

// smUnexpected answers a stream-management request out of place: <enable/>
// before bind or twice, <r/> or <a/> before <enable/>, <resume/> on a
// bound stream.
var smUnexpected = []byte("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")

func (s *Session) streamManagement(e *element) CloseReason {
	switch e.Name.Local {
	case "enable":
		if s.state&StateBound == 0 {
			s.send(smUnexpected)
			return ""
		}
		s.mu.Lock()
		if s.smEnabled {
			s.mu.Unlock()
			s.send(smUnexpected)
			return ""
		}
		s.smEnabled = true
		// Messages written before <enabled/> are not counted, so no <a/>
		// can cover them (XEP-0198 counts from here): only a receipt marks
		// them delivered, and if none comes the queue sends them again on
		// the next session.
		s.inflight = nil
		s.smID = randomID() + randomID()
		id := s.smID
		s.mu.Unlock()
		s.srv.mu.Lock()
		s.srv.resumable[id] = s
		s.srv.mu.Unlock()
		var b xmlBuf
		b.WriteString("<enabled xmlns='urn:xmpp:sm:3'")
		b.attr("id", id)
		b.WriteString(" resume='true' max='" + strconv.Itoa(int(s.srv.cfg.ResumeWindow/time.Second)) + "'/>")
		s.send(b.Bytes())
	case "r", "a":
		if !s.smEnabled {
			// XEP-0198 counts from <enable/>: before it, an <a/> would
			// acknowledge messages no count covers.
			s.send(smUnexpected)
			return ""
		}
		if e.Name.Local == "r" {
			s.mu.Lock()
			h := s.hIn
			s.mu.Unlock()
			s.send([]byte("<a xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) + "'/>"))
			return ""
		}
		h, err := strconv.ParseUint(e.Value("h"), 10, 32)
		if err != nil {
			return ReasonNotWellFormed
		}
		return s.acked(uint32(h))
	case "resume":
		return s.resume(e)
	default:
		return ReasonNotWellFormed
	}
	return ""
}

// acked handles <a h='N'/>: every message counted up to N is delivered.
// An N above the stanzas sent ends the stream (XEP-0198 section 4) and
// acknowledges nothing: such a device counts wrong, and would have its
// next messages marked delivered before it has them.
func (s *Session) acked(h uint32) CloseReason {
	s.mu.Lock()
	if int32(h-s.hOut) > 0 {
		s.errDetail = "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(uint64(h), 10) +
			"' send-count='" + strconv.FormatUint(uint64(s.hOut), 10) + "'/>"
		s.mu.Unlock()
		return ReasonHandledTooHigh
	}
	n := 0
	for n < len(s.inflight) && int32(s.inflight[n].h-h) <= 0 {
		n++
	}
	ids := make([]string, 0, n)
	for _, f := range s.inflight[:n] {
		if f.msg != nil {
			ids = append(ids, f.msg.ID)
			s.sentAckedLocked(f.msg.ID)
		}
	}
	s.inflight = s.inflight[n:]
	if len(s.inflight) == 0 {
		s.inflight = nil
	}
	refill := s.claimReadLocked()
	s.mu.Unlock()
	if len(ids) > 0 {
		if err := s.srv.q.MarkDelivered(context.Background(), s.ref(), ids...); err != nil {
			s.log.Warn("mark delivered", zap.Error(err))
		}
	}
	if refill {
		s.loadPending()
	}
	return ""
}

// resume takes over a detached session (XEP-0198): this connection
// continues it, and unacknowledged messages are sent again, same ids.
func (s *Session) resume(e *element) CloseReason {
	if s.state&StateAuthn == 0 {
		return ReasonNotAuthorized
	}
	if s.state&StateBound != 0 {
		// XEP-0198: a stream that is bound (or resumed) cannot resume.
		s.send(smUnexpected)
		return ""
	}
	prev := e.Value("previd")
	h, err := strconv.ParseUint(e.Value("h"), 10, 32)
	s.srv.mu.Lock()
	old := s.srv.resumable[prev]
	s.srv.mu.Unlock()
	if err != nil || old == nil || old == s || old.app != s.app || old.user != s.user {
		s.send([]byte("<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"))
		s.srv.m.resumes.WithLabelValues("failed").Inc()
		return ""
	}
	// Take the old session over in one step: with both sessions locked,
	// close the old one and point the queue's sink here. A hand-off that
	// finds the old session closed then finds this one in the sink
	// (sink.Deliver retries), and waits on s.mu until this session is set
	// up. Before, the sink moved only after the store write of
	// MarkDelivered below: live messages handed to the closed old session
	// meanwhile were dropped, and the resumed stream never got them.
	s.mu.Lock()
	old.mu.Lock()
	// closeReason set: it is being ended (replaced by a new bind of the
	// device, kicked, expired); taking it over would leave two sessions
	// for the device.
	if old.closed || old.closeReason != "" {
		old.mu.Unlock()
		s.mu.Unlock()
		s.send([]byte("<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"))
		s.srv.m.resumes.WithLabelValues("failed").Inc()
		return ""
	}
	if int32(uint32(h)-old.hOut) > 0 {
		// The device counts more than was sent: nothing it acknowledges
		// can be trusted, and the old session stays as it was (it
		// expires, and a fresh session gets its messages from the queue).
		sent := old.hOut
		old.mu.Unlock()
		s.mu.Unlock()
		s.send([]byte("<failed xmlns='urn:xmpp:sm:3'><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>" +
			"<handled-count-too-high xmlns='urn:xmpp:sm:3' h='" + strconv.FormatUint(h, 10) + "' send-count='" + strconv.FormatUint(uint64(sent), 10) + "'/></failed>"))
		s.srv.m.resumes.WithLabelValues("failed").Inc()
		return ""
	}
	oldT := old.t
	old.t = nil
	old.closed = true
	if old.resumeTmr != nil {
		old.resumeTmr.Stop()
	}
	sub, snk, inflight, lastSeq, more, hIn, smID, receipts := old.sub, old.snk, old.inflight, old.lastSeq, old.more, old.hIn, old.smID, old.receipts
	old.sub, old.snk, old.inflight, old.closeReason = nil, nil, nil, ReasonResumed
	if snk != nil {
		snk.s.Store(s) // the queue's hand-offs now reach this session
	}
	old.mu.Unlock()
	// Ready (delivering) only if the old session was: one whose initial
	// presence never came gets it on this stream, and starts delivery
	// then. Marked ready here, it ignored that presence and got nothing.
	s.device, s.state = old.device, s.state|StateBound
	if snk != nil {
		s.state |= StateReady
	}

	// Messages the client counted are delivered; the rest go out again.
	acked := 0
	for acked < len(inflight) && int32(inflight[acked].h-uint32(h)) <= 0 {
		acked++
	}
	ids := make([]string, 0, acked)
	for _, f := range inflight[:acked] {
		if f.msg != nil {
			ids = append(ids, f.msg.ID)
		}
	}
	var b xmlBuf
	b.WriteString("<resumed xmlns='urn:xmpp:sm:3'")
	b.attr("previd", smID)
	b.attr("h", strconv.FormatUint(uint64(hIn), 10))
	b.WriteString("/>")

	s.smEnabled, s.smID, s.hIn, s.hOut = true, smID, hIn, uint32(h)
	s.lastSeq, s.more, s.receipts = lastSeq, more, receipts
	s.sub, s.snk = sub, snk
	s.enqueueLocked(b.Bytes())
	// Everything the device did not count goes out again, in order:
	// messages, and the other stanzas (XEP-0198 covers them all; a lost
	// IQ result or receipt left the device waiting for it).
	now := s.srv.q.Now()
	for _, f := range inflight[acked:] {
		if f.msg != nil {
			if !f.msg.ExpiresAt.After(now) {
				continue // expired: the expiry timer finalizes it, as Pending would skip it
			}
			s.queueMessageLocked(f.msg, true)
		} else {
			s.queueStanzaLocked(f.raw)
		}
	}
	s.mu.Unlock()
	if oldT != nil {
		oldT.close()
		old.wakeReader(oldT) // a parked reader would not see the close
	}
	if len(ids) > 0 {
		s.srv.q.MarkDelivered(context.Background(), s.ref(), ids...)
	}
	s.srv.mu.Lock()
	s.srv.resumable[smID] = s
	s.srv.setBoundLocked(deviceKey{s.app, s.user, s.device}, s)
	s.srv.mu.Unlock()
	s.srv.m.resumes.WithLabelValues("ok").Inc()
	s.srv.notifyBound(s)
	// The old session may have had more pending than its window, or been
	// reading it when it was taken over (its read stops at the takeover):
	// read on here. Left to the next ack, a resumption that acknowledged
	// everything in flight waited for good, holding live messages too.
	s.mu.Lock()
	refill := s.claimReadLocked()
	s.mu.Unlock()
	if refill {
		s.loadPending()
	}
	return ""
}

// supportedVersion reports whether a stream header's version is one the
// gateway speaks: major version 1 (RFC 6120 4.7.5; "1.1" is fine, the
// minor version is for features the other side may ignore). A version
// that is not two numbers is taken as 1.0, as a missing one would be.
func supportedVersion(v string) bool {
	major, _, ok := strings.Cut(v, ".")
	if !ok {
		return true
	}
	n, err := strconv.Atoi(major)
	return err != nil || n <= 1
}

// withStreamName returns cfg for a STARTTLS handshake on a stream to
// domain: a client that sends no SNI (xmpp.js does not, over STARTTLS) is
// served the certificate for the stream header's to, which it verifies
// against.
func withStreamName(cfg *tls.Config, domain string) *tls.Config {
	get := cfg.GetCertificate
	if get == nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if h.ServerName == "" {
			named := *h
			named.ServerName = domain
			h = &named
		}
		return get(h)
	}
	return cfg
}

func randomID() string {
	var b [9]byte
	randRead(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
