// Package session runs device connections: the XMPP client-to-server
// stream over TCP (STARTTLS required on one port, TLS from the first byte
// on the other) and over WebSocket (RFC 7395), as one state machine.
//
// # What we took from mellium, and why not its Session
//
// mellium.im/xmpp can act as a c2s server, but as shipped it does not fit
// a gateway that must hold hundreds of thousands of sessions:
//
//   - its Session keeps two 4 KiB bufio buffers per connection (the
//     encoding/xml decoder's reader and encoder's writer), about 36 KB per
//     idle TLS session in all, and writes inline under a lock, so a slow
//     peer stalls whoever sends to it;
//   - SCRAM on the server side needs a wrapper, bind trusts the stream
//     header's from, there is no XEP-0198, and its WebSocket framing splits
//     stanzas over 4 KiB across frames, which RFC 7395 clients reject.
//
// So this package owns the stream layer. Input is parsed by
// internal/xmppxml, a strict parser for XMPP's restricted XML that keeps
// nothing between stanzas but the stream header's namespaces (encoding/xml's
// Decoder kept about 2 KiB per session for its life and allocated on every
// token); the bytes come through a 1 KiB read buffer taken from a pool only
// while input is pending. Output is queued under the session mutex and
// written by a short-lived flusher goroutine (no writer goroutine parked per
// idle session), one frame per stanza over WebSocket; a message a POST
// delivers to an idle session may instead be written on the POST's
// goroutine (Session.deliver, queue.Sink). It uses
// mellium.im/sasl for the SCRAM-SHA-1 and SCRAM-SHA-256 server exchanges
// (against the stored salted password, never the password), and mellium's
// client in the interop tests. PLAIN is checked against the same stored
// key and only inside TLS.
//
// # Idle sessions hold no goroutine
//
// A ready session with nothing to read parks (park.go), over TCP and over
// WebSocket alike (ws.go: RFC 6455 by internal/wsproto, whose parser works
// from the same pooled buffer; github.com/coder/websocket kept net/http's
// 4 KiB bufio reader and writer and a reader goroutine per connection, 24
// KiB per idle session, and stays the client side): its reader
// goroutine exits and the socket is watched by a process-wide epoll set
// (poll_linux.go) with a one-shot registration; input queues the session
// for one of a few readers that serve the readable sessions in turn (two
// per CPU, so devices' receipts do not crowd the scheduler's run queues),
// and a close from another goroutine (replacement, kick, shutdown, slow
// consumer, failed write) or the idle deadline starts a new reader.
// Whether tls.Conn holds decrypted input is found by a read with a
// deadline already past, which returns at once and leaves the connection
// usable. An idle TLS session is then its tls.Conn (AES-GCM state for
// both directions, record and handshake buffers), the socket, this
// package's Session and transport, and its entries in the server's maps:
// about 6.5 KiB of heap, no stack (docs/benchmarks.md has the breakdown).
// Elsewhere than Linux sessions keep their reader goroutine.
//
// # Lifecycle
//
// New builds a Server; ServeTCP and ServeHTTP accept connections; Shutdown
// sends <system-shutdown/> to every session and waits. Each connection has
// one reader goroutine that runs the state machine (Secure → Authn → Bound
// → Ready); a session becomes Ready with the device's initial presence,
// subscribes to its user's queue and sends what is pending, in order, then
// live messages as the queue hands them over (never polling the store).
//
// # Delivery and acknowledgement
//
// Every message written is marked sent. Delivered comes from an XEP-0198
// <a h='N'/> covering it or an XEP-0184 receipt; read from an XEP-0333
// displayed marker. With stream management a session keeps at most Window
// messages unacknowledged and reads more from the queue as acks arrive; a
// dropped connection keeps the session (and its subscription) for the
// resume window, and <resume/> sends the unacknowledged messages again with
// the same ids. Without resumption, the next session gets them from the
// queue. A session queues messages only while what it holds unsent (with
// stream management: in flight) is under half of MaxOutboundBytes, and
// reads on from the queue once acks or the socket make room, so a backlog
// of large messages flows at the device's pace. Output beyond
// MaxOutboundBytes (a device that stops reading) closes the session as a
// slow consumer; the durable queue still holds its messages.
//
// # Concurrency
//
// Server methods are safe for concurrent use. A session's state machine
// fields belong to its reader goroutine; everything the queue's hand-off or
// the flusher touches is under Session.mu. Lock order: Server.mu, then
// Session.mu. The queue calls Sink methods under its user lock, so they
// only append to the session's output and never block.
//
// # Imports
//
// sdkproto (wire constants), queue (types and the Sink interface),
// internal/xmppxml and internal/wsproto (the parsers), mellium.im/sasl, zap
// and Prometheus. Never gateway, storage or wake.
package session
