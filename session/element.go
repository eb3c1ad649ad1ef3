package session

import (
	"bytes"
	"encoding/xml"
	"errors"

	"tether/internal/xmppxml"
)

// element is one parsed top-level XML element: a small tree, enough for
// the stanzas a device sends (they are small and bounded by
// MaxStanzaBytes). The parser is internal/xmppxml (see the package doc).
type element = xmppxml.Element

var (
	errTooLarge      = errors.New("session: stanza too large")
	errNotWellFormed = errors.New("session: not well-formed")
	errStreamEnd     = errors.New("session: stream closed by peer")
)

// keepalive is what tcpTransport.next returns for whitespace between
// stanzas: no element, but traffic.
var keepalive = &element{}

// streamStart is what readElement returns for a stream header
// (<stream:stream> or the WebSocket <open/>).
const streamLocal = "stream"

// parseFrame parses one complete element from a WebSocket frame.
func parseFrame(b []byte) (*element, error) {
	e, err := xmppxml.ParseFrame(b)
	if err != nil {
		return nil, errNotWellFormed
	}
	return e, nil
}

// xmlBuf builds outbound XML with escaping.
type xmlBuf struct{ bytes.Buffer }

func (b *xmlBuf) text(s string) {
	xml.EscapeText(&b.Buffer, []byte(s))
}

func (b *xmlBuf) attr(name, value string) {
	b.WriteByte(' ')
	b.WriteString(name)
	b.WriteString(`='`)
	escapeAttr(&b.Buffer, value)
	b.WriteByte('\'')
}

func escapeAttr(w *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			w.WriteString("&lt;")
		case '>':
			w.WriteString("&gt;")
		case '&':
			w.WriteString("&amp;")
		case '\'':
			w.WriteString("&apos;")
		case '"':
			w.WriteString("&quot;")
		case '\n':
			w.WriteString("&#xA;")
		case '\r':
			w.WriteString("&#xD;")
		case '\t':
			w.WriteString("&#x9;")
		default:
			w.WriteByte(c)
		}
	}
}
