// Package sdkproto is Tether's device wire protocol: the XML namespaces,
// element names and limits shared by the gateway and SDKs, and a Go client
// SDK that tests, the soak harness and Go applications use.
//
// It is the one package meant for import from outside the module, so it is
// a leaf: it depends on the standard library, the WebSocket library
// (github.com/coder/websocket) and Tether's XML parser (internal/xmppxml,
// itself a leaf) only.
//
// # Wire format
//
// wire.go holds the namespaces (NS*), the WebSocket subprotocol and path,
// and the limits the gateway enforces (MaxStanzaBytes, AuthTimeout, ...).
// Reader reads an XMPP stream one top-level element at a time into an
// Element (a small DOM), enforcing MaxReceivedStanzaBytes; ParseElement does the
// same for one RFC 7395 WebSocket frame; Element.AppendXML writes one back.
// ParseMessage decodes a gateway message (SPEC section 6) into a Message.
//
// # Client lifecycle
//
//	c, err := sdkproto.New(cfg)      // validate, no I/O
//	err = c.Connect(ctx)             // or sdkproto.Dial(ctx, cfg)
//	...                              // OnMessage runs; Ack, MarkRead, Send, ...
//	err = c.Close()                  // clean end of stream
//
// Connect dials (TCP with direct TLS, TCP with STARTTLS, or WebSocket),
// authenticates with SCRAM-SHA-256 (or SCRAM-SHA-1, or PLAIN inside TLS),
// binds Config.Device as the resource, enables XEP-0198 stream management
// with resumption and sends initial presence, after which the gateway
// delivers the device's pending messages, then live ones. Connect returns
// once all that is sent, and one reader goroutine per connection takes
// over: it hands each message to Config.OnMessage once per id (a bounded
// window of recent ids drops redeliveries), answers the server's pings and
// <r/> requests, and acknowledges received stanzas in batches (after
// Config.AckEvery stanzas or Config.AckInterval of quiet). What an
// OnMessage callback sends (Ack, MarkRead) goes out when the callback
// returns, in one write with the <a/> for the message: the gateway wakes
// once per message. The Client asks the server to acknowledge its own
// stanzas after Config.AckRequestEvery of them or AckRequestInterval, not
// after each; what the server has not acknowledged is sent again after a
// reconnect.
//
// When the connection is lost, the reader calls Config.OnDisconnect. With
// Config.AutoReconnect the same goroutine then reconnects with jittered
// exponential backoff (Backoff), first trying to resume the stream-managed
// session (the server resends what we did not acknowledge, we resend what
// it did not) and otherwise binding afresh (the gateway's queue redelivers
// unacknowledged messages with the same ids). It stops on a <conflict/>
// stream error, which means a newer session took the device's resource,
// and on authentication failures. Without AutoReconnect, call Resume.
// Drop cuts the connection without ending the stream, for tests of
// resumption. Close ends the stream cleanly; a Client cannot be reused
// after Close.
//
// From its second connection on, a Client pipelines the login with the
// feature lists the server sent the first time: <auth/> goes with the
// stream header, and the resume (or bind and enable) with the header of
// the authenticated stream, so a reconnect takes four round trips after
// TCP instead of seven (Config.DisablePipelining; docs/protocol.md).
//
// SCRAM logins derive the salted password with PBKDF2, which dominates the
// client's cost of a login; a CredentialCache shared by Clients keeps it
// per (user, password, salt, iterations, mechanism), as mobile SDKs do.
//
// # Concurrency
//
// Every Client method is safe for concurrent use. Writes are serialised
// under one mutex and each batch is written with one Write (one frame per
// element on WebSocket). There are no per-message goroutines: besides the
// reader, a Client runs only timers for batched acknowledgements. The
// callbacks run on the reader goroutine, so a slow OnMessage delays the
// reading of the connection (and its acknowledgements); they may call the
// Client's methods, but Close and Drop called from a callback do not wait
// for the reader to finish.
//
// # Errors
//
// Sentinel errors (ErrClosed, ErrNotConnected, ...) are compared with
// errors.Is. What the server says is data: a *StreamError, *SASLError or
// *StanzaError carries the XMPP condition, and errors.Is matches a value of
// the same type on its condition alone.
package sdkproto
