package session

import (
	"bytes"
	"errors"
	"unicode/utf8"

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

// text writes s as character data. Like xml.EscapeText it escapes '<',
// '>', '&' and '\r', passes '\t' and '\n', and writes U+FFFD for what XML
// 1.0 cannot carry (other control characters, invalid UTF-8, U+FFFE,
// U+FFFF); quotes, legal in text, stay as they are. It works on the string
// without copying it: a message's data is JSON, full of quotes, written to
// every device it goes to.
func (b *xmlBuf) text(s string) {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		var esc string
		width := 1
		switch {
		case c == '<':
			esc = "&lt;"
		case c == '>':
			esc = "&gt;"
		case c == '&':
			esc = "&amp;"
		case c == '\r':
			esc = "&#xD;"
		case c == '\t' || c == '\n' || (c >= 0x20 && c < utf8.RuneSelf):
			i++
			continue
		case c < 0x20:
			esc = "\uFFFD"
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			width = n
			if r != utf8.RuneError || n > 1 {
				if r != 0xFFFE && r != 0xFFFF {
					i += n
					continue
				}
			}
			esc = "\uFFFD"
		}
		b.WriteString(s[last:i])
		b.WriteString(esc)
		i += width
		last = i
	}
	b.WriteString(s[last:])
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
