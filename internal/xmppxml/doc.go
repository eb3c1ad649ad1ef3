// Package xmppxml is a strict, allocation-light parser for the restricted
// XML that XMPP uses (RFC 6120 section 11): a stream of top-level elements
// (stanzas) inside a <stream:stream> root, or one element per WebSocket
// frame (RFC 7395).
//
// # Model
//
// Stream.Next is handed the bytes the caller has buffered and parses the
// first top-level item in them: the stream header, one complete stanza,
// a run of whitespace (a keepalive) or the stream's end. When the buffer
// holds only part of an item it returns ErrNeedMore and consumes nothing;
// the caller reads more and calls again with the same bytes extended. A
// Stream keeps nothing between items but the namespace bindings of the
// stream header and a few integers that let a partial item be scanned on
// from where the last call stopped, so an idle session holds no parser
// buffers. While a stanza with nested elements is only partly read it
// also holds a small pooled stack of where the open elements' names
// start (offsets into the caller's buffer), given back when the item
// ends, fails or the Stream is Reset. The caller owns the read buffer
// and bounds its size.
//
// Each call first scans the item for its end (tag depth, quotes, CDATA)
// without building anything; only a complete item is parsed into
// Elements, with every well-formedness rule checked. ParseFrame parses a
// WebSocket frame the same way. So that a peer learns of a broken
// stanza at once rather than when (if ever) it would be complete, the
// scan also fails as soon as an end tag that does not match its start
// tag is in the buffer, and as soon as the start tag of a top-level
// item is in the buffer if that item is the stream element again
// (whatever its prefix; a new header is only valid after Reset).
//
// A parsed item's Elements, attribute lists and children lists sit in a
// few blocks sized by the scan. A caller done with a tree calls Release
// on its root, and the blocks serve a later item; the strings stay the
// caller's. A tree not released is collected like any other.
//
// # Restricted XML
//
// Input must be valid UTF-8 made of XML 1.0 characters. Comments,
// processing instructions, DOCTYPE and other markup declarations are not
// well-formed here; the only exception is an XML declaration (version
// 1.0, encoding absent or UTF-8) at the very start of a stream or frame.
// Entity references are the five predefined ones and character
// references. Prefixes must be declared (xml is predefined); attributes
// are unique by expanded name. Elements nest at most MaxDepth levels
// below a stanza. Text directly inside the stream may only be whitespace,
// also inside a CDATA section.
//
// # Concurrency
//
// A Stream is not safe for concurrent use; it belongs to the goroutine
// reading its connection. ParseFrame is safe for concurrent use. Neither
// blocks. The package imports nothing of Tether's.
package xmppxml
