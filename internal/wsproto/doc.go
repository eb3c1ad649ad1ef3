// Package wsproto is the server side of the WebSocket protocol (RFC 6455)
// as Tether uses it for XMPP over WebSocket (RFC 7395): the opening
// handshake, a parser for client frames and the encoding of server
// frames.
//
// # Why
//
// github.com/coder/websocket keeps the 4 KiB bufio.Reader and the 4 KiB
// bufio.Writer that net/http hands over when a connection is hijacked for
// the connection's whole life, and needs a goroutine blocked in Read: an
// idle session costs about 24 KiB. Upgrade instead drops net/http's
// buffers once the handshake is answered, and Reader parses from bytes the
// caller has buffered, holding nothing but a few integers between calls,
// so a connection with nothing pending needs no buffer and no goroutine
// (it can wait in a poller). coder/websocket remains the client side (the
// SDK, tests).
//
// # Model
//
// Reader.Next is handed the bytes the caller has buffered and returns the
// first complete message in them (all the frames of a fragmented text or
// binary message reassembled) or the first control frame (close, ping,
// pong). When the bytes hold only part of one it returns ErrNeedMore and
// consumes nothing; the caller reads more and calls again with the same
// bytes extended. A fragmented message is reassembled in place: the
// payload of each of its frames is unmasked and moved down to follow the
// previous one at the front of the buffer, so the message becomes
// contiguous without a copy elsewhere, and the Reader remembers only how
// far it got. The buffer contract is in Reader's documentation.
//
// Payloads are unmasked in the caller's buffer, and a returned Message's
// payload aliases it.
//
// # What is left out
//
// Extensions: none is negotiated (Sec-WebSocket-Extensions is ignored, so
// permessage-deflate is never used), and a frame with a reserved bit set
// is a protocol error. The client side: clients mask their frames and
// parse unmasked ones; this package does neither. The Origin header is not
// checked: Tether's WebSocket clients are device SDKs, not browser pages
// whose origin would matter, and they authenticate with SASL inside the
// stream, not with cookies. HTTP/2 (RFC 8441) is not supported; the
// handshake needs HTTP/1.1, plain or over TLS.
//
// # Concurrency
//
// A Reader is not safe for concurrent use and never blocks. The Append
// functions and Upgrade are safe for concurrent use. The package imports
// nothing of Tether's.
package wsproto
