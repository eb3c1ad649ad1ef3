package session

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"tether/queue"
	"tether/sdkproto"
)

// --- IQ -----------------------------------------------------------------------

func (s *Session) iq(e *element) CloseReason {
	typ, id := e.Value("type"), e.Value("id")
	if typ == "result" || typ == "error" {
		return "" // answers to our pings
	}
	if typ != "get" && typ != "set" || id == "" {
		return ReasonNotWellFormed
	}
	if to := e.Value("to"); to != "" && to != s.domain && to != s.jid() && to != s.bareJID() {
		s.iqError(id, "cancel", "service-unavailable")
		return ""
	}
	p := e.FirstChild()
	if p == nil {
		s.iqError(id, "modify", "bad-request")
		return ""
	}
	if s.state&StateBound == 0 {
		if p.Name.Space == sdkproto.NSBind && p.Name.Local == "bind" && typ == "set" {
			return s.bind(id, p)
		}
		s.iqError(id, "wait", "not-authorized")
		return ""
	}
	switch {
	case p.Name.Space == sdkproto.NSSession && typ == "set":
		s.iqResult(id, "")
	case p.Name.Space == sdkproto.NSPing && typ == "get":
		s.iqResult(id, "")
	case p.Name.Space == sdkproto.NSDiscoInfo && typ == "get":
		s.iqResult(id, discoInfo)
	case p.Name.Space == sdkproto.NSRoster && typ == "get":
		s.iqResult(id, "<query xmlns='jabber:iq:roster'/>")
	case p.Name.Space == sdkproto.NSPush && p.Name.Local == "push" && typ == "set":
		s.pushRegistration(id, p)
	case p.Name.Space == sdkproto.NSConfig && p.Name.Local == "config" && typ == "get":
		var b xmlBuf
		b.WriteString("<config xmlns='urn:tether:config:0'>")
		if cfg := s.srv.dir.ClientConfig(s.app); len(cfg) > 0 {
			b.text(string(cfg))
		} else {
			b.WriteString("{}")
		}
		b.WriteString("</config>")
		s.iqResult(id, b.String())
	default:
		s.iqError(id, "cancel", "service-unavailable")
	}
	return ""
}

var discoInfo = "<query xmlns='http://jabber.org/protocol/disco#info'>" +
	"<identity category='server' type='im' name='Tether'/>" +
	"<feature var='http://jabber.org/protocol/disco#info'/>" +
	"<feature var='urn:xmpp:ping'/>" +
	"<feature var='urn:xmpp:sm:3'/>" +
	"<feature var='urn:xmpp:receipts'/>" +
	"<feature var='urn:xmpp:chat-markers:0'/>" +
	"<feature var='urn:xmpp:delay'/>" +
	"<feature var='urn:xmpp:reply:0'/>" +
	"<feature var='jabber:iq:roster'/>" +
	"<feature var='urn:tether:data:0'/>" +
	"<feature var='urn:tether:expire:0'/>" +
	"<feature var='urn:tether:channel:0'/>" +
	"<feature var='urn:tether:push:0'/>" +
	"<feature var='urn:tether:config:0'/>" +
	"</query>"

func (s *Session) jid() string     { return s.user + "@" + s.domain + "/" + s.device }
func (s *Session) bareJID() string { return s.user + "@" + s.domain }

func (s *Session) iqResult(id, payload string) {
	var b xmlBuf
	b.WriteString("<iq type='result'")
	b.attr("id", id)
	if s.state&StateBound != 0 {
		b.attr("to", s.jid())
	}
	if payload == "" {
		b.WriteString("/>")
	} else {
		b.WriteString(">" + payload + "</iq>")
	}
	s.sendStanza(b.Bytes())
}

func (s *Session) iqError(id, typ, cond string) {
	var b xmlBuf
	b.WriteString("<iq type='error'")
	b.attr("id", id)
	b.WriteString("><error type='" + typ + "'><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
	s.sendStanza(b.Bytes())
}

// sendStanza queues a stanza, counting it for stream management.
func (s *Session) sendStanza(b []byte) {
	s.mu.Lock()
	s.queueStanzaLocked(b)
	s.mu.Unlock()
}

// queueStanzaLocked queues a stanza that is not a queued message. With
// stream management it is counted, and kept in flight until acknowledged,
// to go out again on resumption.
func (s *Session) queueStanzaLocked(b []byte) {
	if !s.smEnabled {
		s.enqueueLocked(b)
		return
	}
	s.hOut++
	s.inflight = append(s.inflight, inflight{h: s.hOut, size: len(b), raw: b})
	if len(s.inflight) >= smRequestAbove {
		// Only an <a/> takes these out of flight: ask for one now and
		// then, so that a session of pings and requests alone does not
		// pile them up.
		s.enqueueLocked(b, smRequest)
		s.ackRequestedLocked()
		return
	}
	s.enqueueLocked(b)
}

// messagesInFlightLocked reports whether queued messages are in flight
// (not the other stanzas kept for resumption).
func (s *Session) messagesInFlightLocked() bool {
	for i := range s.inflight {
		if s.inflight[i].msg != nil {
			return true
		}
	}
	return false
}

// bind binds the device id as the resource. The JID comes from the SASL
// identity and the stream's domain, never from the client's stream header.
func (s *Session) bind(id string, p *element) CloseReason {
	res := ""
	if r := p.Child("", "resource"); r != nil {
		res = r.Text
	}
	if res == "" {
		// RFC 6120 7.6: the server generates a resource when the client
		// asks for none. Such a device is new on every login; SDKs bind
		// their device id.
		res = "gen-" + randomID()
	}
	if !validDevice(res) {
		s.iqError(id, "modify", "bad-request")
		return ""
	}
	s.device = res
	if !s.srv.bind(s) {
		// Over the per-user or total session cap: the client may retry.
		s.device = ""
		s.iqError(id, "wait", "resource-constraint")
		return ""
	}
	s.state |= StateBound
	// The device record first: a client that has its bind result finds
	// its device listed (GET .../devices) from then on.
	if err := s.srv.q.DeviceBound(context.Background(), s.ref(), s.kind); err != nil {
		s.log.Warn("device record", zap.Error(err))
	}
	var b xmlBuf
	b.WriteString("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>")
	b.text(s.jid())
	b.WriteString("</jid></bind>")
	s.iqResult(id, b.String())
	s.srv.notifyBound(s)
	s.srv.m.handshakes.WithLabelValues(s.kind, "ok").Inc()
	return ""
}

func (s *Session) pushRegistration(id string, p *element) {
	provider, token := p.Value("provider"), p.Value("token")
	var reg *queue.PushRegistration
	switch provider {
	case "none":
	case "apns", "fcm":
		if token == "" || len(token) > 4096 {
			s.iqError(id, "modify", "bad-request")
			return
		}
		if !s.srv.dir.PushAllowed(s.app, provider, token) {
			s.iqError(id, "modify", "not-acceptable")
			return
		}
		env := p.Value("environment")
		if env != "" && env != "production" && env != "sandbox" {
			s.iqError(id, "modify", "bad-request")
			return
		}
		reg = &queue.PushRegistration{Provider: provider, Token: token, Topic: p.Value("topic"), Environment: env}
	default:
		s.iqError(id, "modify", "bad-request")
		return
	}
	if _, err := s.srv.q.UpdateDevice(context.Background(), s.ref(), func(d *queue.Device) *queue.Device {
		if d == nil {
			d = &queue.Device{}
		}
		d.Push = reg
		return d
	}); err != nil {
		s.iqError(id, "wait", "internal-server-error")
		return
	}
	s.iqResult(id, "")
}

// --- presence -------------------------------------------------------------------

func (s *Session) presence(e *element) CloseReason {
	if s.state&StateBound == 0 {
		return ReasonNotAuthorized
	}
	if e.Value("to") != "" || e.Value("type") != "" {
		return "" // no presence routing: devices talk to the backend only
	}
	if s.state&StateReady != 0 {
		return ""
	}
	s.state |= StateReady
	s.startDelivery()
	// device.online from the initial presence, when messages start to
	// flow: the REST API lists the device online from here, and an
	// expires_in 0 message finds it. A session that binds and never sends
	// its presence has neither device.online nor device.offline.
	s.srv.q.AppendEvent(context.Background(), &queue.Event{Type: queue.EventDeviceOnline, App: s.app, User: s.user, Device: s.device, Transport: s.kind})
	return ""
}

// --- messages from the device ----------------------------------------------------

func (s *Session) message(e *element) CloseReason {
	if s.state&StateBound == 0 {
		return ReasonNotAuthorized
	}
	if e.Value("type") == "error" {
		return ""
	}
	to := e.Value("to")
	if to != s.domain && to != "" {
		s.stanzaError("message", e.Value("id"), to, "cancel", "service-unavailable")
		return ""
	}
	ctx := context.Background()
	if r := e.Child(sdkproto.NSReceipts, "received"); r != nil {
		if id := r.Value("id"); id != "" {
			s.mu.Lock()
			s.receipts = true
			s.mu.Unlock()
			refill := s.forget(id)
			if err := s.srv.q.MarkDelivered(ctx, s.ref(), id); err != nil {
				s.log.Warn("receipt", zap.Error(err))
			}
			if refill {
				s.loadPending()
			}
		}
		return ""
	}
	if d := e.Child(sdkproto.NSMarkers, "displayed"); d != nil {
		if id := d.Value("id"); id != "" {
			refill := s.forget(id)
			if err := s.srv.q.MarkRead(ctx, s.ref(), id); err != nil {
				s.log.Warn("displayed marker", zap.Error(err))
			}
			if refill {
				s.loadPending()
			}
		}
		return ""
	}
	body := e.Child("", "body")
	data := e.Child(sdkproto.NSData, "data")
	if body == nil && data == nil {
		return "" // chat states and the like
	}
	ev := &queue.Event{}
	if body != nil {
		ev.Body = body.Text
	}
	if data != nil && data.Text != "" {
		if !json.Valid([]byte(data.Text)) {
			s.stanzaError("message", e.Value("id"), "", "modify", "bad-request")
			return ""
		}
		ev.Data = json.RawMessage(data.Text)
	}
	if c := e.Child(sdkproto.NSChannel, "channel"); c != nil {
		ev.Channel = c.Text
	}
	if r := e.Child(sdkproto.NSReply, "reply"); r != nil {
		ev.InReplyTo = r.Value("id")
	}
	ev.MessageID = e.Value("id")
	if err := s.srv.q.Inbound(ctx, s.ref(), ev); err != nil {
		s.stanzaError("message", e.Value("id"), "", "wait", "internal-server-error")
		return ""
	}
	s.srv.m.messagesIn.Inc()
	if e.Child(sdkproto.NSReceipts, "request") != nil && e.Value("id") != "" {
		var b xmlBuf
		b.WriteString("<message")
		b.attr("from", s.domain)
		b.attr("to", s.jid())
		b.WriteString("><received xmlns='urn:xmpp:receipts'")
		b.attr("id", e.Value("id"))
		b.WriteString("/></message>")
		s.sendStanza(b.Bytes())
	}
	return ""
}

func (s *Session) stanzaError(kind, id, from, typ, cond string) {
	var b xmlBuf
	b.WriteString("<" + kind + " type='error'")
	if id != "" {
		b.attr("id", id)
	}
	if from != "" {
		b.attr("from", from)
	}
	b.WriteString("><error type='" + typ + "'><" + cond + " xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></" + kind + ">")
	s.sendStanza(b.Bytes())
}

// forget drops a message acknowledged by receipt from the in-flight list:
// it is delivered, and is not to be sent again on resumption. It reports
// whether the caller is to read the queue again (claimReadLocked).
func (s *Session) forget(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sentAckedLocked(id)
	for i, f := range s.inflight {
		if f.msg != nil && f.msg.ID == id {
			s.inflight = append(s.inflight[:i:i], s.inflight[i+1:]...)
			break
		}
	}
	return s.claimReadLocked()
}

// claimReadLocked reports whether the queue is to be read again now, and
// if so claims the read (loading) for the caller, who then runs
// loadPending: more is pending, no read runs, and acknowledgements or the
// flusher made room, down to half of what stops a read (roomLocked), so
// that reads come in pages and not a message at a time.
func (s *Session) claimReadLocked() bool {
	if !s.more || s.loading || s.closed || s.t == nil {
		return false
	}
	n, max := s.unackedBytesLocked(), s.srv.cfg.MaxOutboundBytes/4
	if s.smEnabled && len(s.inflight) >= s.srv.cfg.Window/2 || n > max {
		return false
	}
	s.loading = true
	return true
}

// roomLocked reports whether another message may be queued on the
// connection: with stream management the window has room and the stanzas
// in flight (all of which a resumption sends again at once) take at most
// half of MaxOutboundBytes; without, the output waiting for the socket
// does. Past that bound a session is ended as a slow consumer, so staying
// under half of it keeps a backlog of large messages from ending a session
// that reads well.
func (s *Session) roomLocked() bool {
	if s.smEnabled && len(s.inflight) >= s.srv.cfg.Window {
		return false
	}
	return s.unackedBytesLocked() <= s.srv.cfg.MaxOutboundBytes/2
}

// unackedBytesLocked is what roomLocked bounds: the bytes of the stanzas
// in flight with stream management, of the output waiting without.
func (s *Session) unackedBytesLocked() int {
	if !s.smEnabled {
		return s.outBytes
	}
	n := 0
	for i := range s.inflight {
		n += s.inflight[i].size
	}
	return n
}

// --- messages to the device ------------------------------------------------------

// sink is the session's queue.Sink. It outlives one connection: on
// resumption it is pointed at the session that took over.
type sink struct{ s atomic.Pointer[Session] }

// Deliver hands m to the sink's session; when that session was closed by
// a resumption meanwhile, to the session that took it over.
func (k *sink) Deliver(m *queue.Message, direct bool) queue.Writer {
	for {
		s := k.s.Load()
		ok, w := s.deliver(m, direct)
		if ok || k.s.Load() == s {
			return w
		}
	}
}

func (k *sink) Withdraw(seq uint64) { k.s.Load().withdraw(seq) }

// startDelivery subscribes to the user's queue, then sends what is pending.
func (s *Session) startDelivery() {
	k := &sink{}
	k.s.Store(s)
	s.mu.Lock()
	s.snk = k
	s.loading = true
	s.more = true
	s.mu.Unlock()
	sub := s.srv.q.Subscribe(s.app, s.user, s.device, k)
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	s.loadPending()
}

const pendingPage = 128

// pendingRetry is how long a session waits to read its queue again after
// the read failed.
const pendingRetry = time.Second

// loadPending reads pending messages page by page and queues them, then
// the live messages held meanwhile. The caller has claimed the read
// (loading set, by startDelivery or claimReadLocked), so two reads of one
// session never interleave. It stops when the connection has no room
// (roomLocked): acknowledgements, or the flusher once the output has gone
// out, read on (claimReadLocked). Messages it leaves unqueued are in the
// store, and more says so.
func (s *Session) loadPending() {
	for {
		s.mu.Lock()
		if s.closed {
			s.loading, s.held = false, nil
			s.mu.Unlock()
			return
		}
		after := s.lastSeq
		s.loading = true
		s.overflow = false
		s.mu.Unlock()
		msgs, err := s.srv.q.Pending(context.Background(), s.ref(), after, pendingPage)
		s.mu.Lock()
		if s.closed {
			// Ended, or taken over by a resumption, which reads the queue
			// from its own lastSeq: what this read found is not lost.
			s.loading, s.held = false, nil
			s.mu.Unlock()
			return
		}
		if err != nil {
			// The messages are in the store: read again a little later
			// (or at the next acknowledgement), not at the next login.
			s.more, s.loading, s.held = true, false, nil
			s.mu.Unlock()
			s.log.Warn("pending", zap.Error(err))
			time.AfterFunc(pendingRetry, s.retryRead)
			return
		}
		queued := 0
		for _, m := range msgs {
			if !s.roomLocked() {
				break
			}
			s.queueMessageLocked(m, false)
			queued++
		}
		// Live messages that did not fit in held are in the store only:
		// read again.
		s.more = queued < len(msgs) || len(msgs) == pendingPage || s.overflow
		held := s.held
		s.held = nil
		if !s.more {
			for _, m := range held {
				if !s.roomLocked() {
					s.more = true // the rest is in the store
					break
				}
				s.queueMessageLocked(m, false)
			}
		}
		// With more, held messages are in the store too: later pages
		// carry them.
		if !s.more || s.t == nil || !s.roomLocked() {
			s.loading = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// retryRead reads the queue again after a failed read, if nothing else
// did meanwhile.
func (s *Session) retryRead() {
	s.mu.Lock()
	refill := s.claimReadLocked()
	s.mu.Unlock()
	if refill {
		s.loadPending()
	}
}

// deliver is the queue's hand-off of a new message (any goroutine). It
// reports false when the session is closed.
//
// With direct, it may leave the write to the caller's goroutine (see
// queue.Sink): when the message is all the session has in flight (what
// went before was acknowledged, so the device has read it and the
// socket's send buffer is empty) and small enough to fit in any send
// buffer, the write cannot block, and returning the session as the
// Writer saves the hand-off to a flusher.
func (s *Session) deliver(m *queue.Message, direct bool) (bool, queue.Writer) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, nil
	}
	// A message for a session waiting for resumption: the device may need
	// a wake (Server.Live decides once the grace has passed).
	notify := s.t == nil && !s.lostSent
	if notify {
		s.lostSent = true
	}
	flushing := s.flushing
	s.holdKick = direct
	s.deliverLocked(m)
	s.holdKick = false
	var w queue.Writer
	if direct && s.flushing && !flushing { // kickLocked claimed the flush and held it
		if len(s.inflight) == 1 && s.outBytes <= maxDirectWrite && (s.smEnabled || s.receipts) {
			w = s
		} else {
			s.srv.work.run(task{s, taskFlush})
		}
	}
	s.mu.Unlock()
	if notify {
		s.srv.lost(s)
	}
	return true, w
}

// maxDirectWrite bounds the output a delivery writes on the caller's
// goroutine: half the send buffer Linux gives a new TCP socket (tcp_wmem's
// default, 16 KiB), room for the TLS records. Only a kernel short of
// memory shrinks a buffer below that; a write that blocks then is bounded
// by the write timeout, as the flusher's is.
const maxDirectWrite = 8 << 10

// WriteQueued writes the session's output on the calling goroutine: the
// flusher's work, left to the caller by deliver.
func (s *Session) WriteQueued() { s.flush() }

func (s *Session) deliverLocked(m *queue.Message) {
	if s.loading || s.more {
		if len(s.held) < s.srv.cfg.Window {
			s.held = append(s.held, m)
		} else {
			s.overflow = true
		}
		s.more = true
		return
	}
	if !s.roomLocked() {
		s.more = true // no room: read it from the store later
		return
	}
	s.queueMessageLocked(m, false)
}

// withdraw drops message seq, final now (cancelled, expired, handed to
// the SMS fallback, or delivered to another device of a delivery "any"),
// from the held live messages and from those in flight: a resumption
// does not send it again, as a fresh session would not.
func (s *Session) withdraw(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, h := range s.held {
		if h.Seq == seq {
			s.held = append(s.held[:i:i], s.held[i+1:]...)
			break
		}
	}
	for i, f := range s.inflight {
		if f.msg != nil && f.msg.Seq == seq {
			s.inflight = append(s.inflight[:i:i], s.inflight[i+1:]...)
			break
		}
	}
}

// queueMessageLocked renders m and queues it, once: messages at or below
// lastSeq were queued already (the queue's hand-off and a pending read may
// both carry a message), unless resend is set (a resumed stream).
func (s *Session) queueMessageLocked(m *queue.Message, resend bool) {
	if m.Seq <= s.lastSeq && !resend {
		return
	}
	if m.Seq > s.lastSeq {
		s.lastSeq = m.Seq
	}
	if s.smEnabled {
		s.hOut++
	}
	buf := s.renderMessage(m)
	frame := buf.Bytes()
	s.inflight = append(s.inflight, inflight{h: s.hOut, size: len(frame), msg: m})
	if !s.smEnabled && len(s.inflight) > s.srv.cfg.Window {
		s.inflight = s.inflight[1:] // without stream management only receipts ack
	}
	s.sentIDs = append(s.sentIDs, m.ID)
	frames := [][]byte{frame}
	// Ask for an XEP-0198 ack after each message, unless the device
	// answers receipts: each receipt takes its message out of flight, so
	// an <r/> would only make it write an <a/> per message too (and the
	// gateway read it). Once unreceipted messages pile up, ask again.
	if s.smEnabled && (!s.receipts || len(s.inflight) >= smRequestAbove) {
		frames = append(frames, smRequest)
		s.ackRequestedLocked()
	}
	if s.enqueueLocked(frames...) {
		s.outBufs = append(s.outBufs, buf)
	}
}

var smRequest = []byte("<r xmlns='urn:xmpp:sm:3'/>")

// smRequestAbove is the number of messages in flight from which a session
// whose device sends receipts asks for acks again.
const smRequestAbove = 8

// renderMessage writes the message stanza of SPEC section 6 into a
// buffer from the frame pool.
func (s *Session) renderMessage(m *queue.Message) *xmlBuf {
	b := framePool.Get().(*xmlBuf)
	// The fixed parts (namespaces, delay, expiry) take about 380 bytes
	// with the addresses: one allocation for the usual stanza.
	b.Grow(400 + 2*len(s.domain) + len(s.app) + len(s.user) + len(s.device) + len(m.Body) + len(m.Data) + len(m.Channel))
	b.WriteString("<message")
	b.attr("from", s.domain)
	b.attr("to", s.jid())
	b.attr("id", m.ID)
	b.WriteString(" type='normal'>")
	if m.Body != "" {
		b.WriteString("<body>")
		b.text(m.Body)
		b.WriteString("</body>")
	}
	if len(m.Data) > 0 {
		b.WriteString("<data xmlns='urn:tether:data:0'>")
		b.text(string(m.Data))
		b.WriteString("</data>")
	}
	b.WriteString("<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>")
	b.WriteString("<delay xmlns='urn:xmpp:delay'")
	b.attr("from", s.domain)
	b.attr("stamp", m.CreatedAt.UTC().Format(time.RFC3339))
	b.WriteString("/><expire xmlns='urn:tether:expire:0'")
	b.attr("at", m.ExpiresAt.UTC().Format(time.RFC3339))
	b.WriteString("/>")
	if m.Channel != "" {
		b.WriteString("<channel xmlns='urn:tether:channel:0'>")
		b.text(m.Channel)
		b.WriteString("</channel>")
	}
	b.WriteString("</message>")
	return b
}
