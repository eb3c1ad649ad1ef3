package session

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
)

// element is one parsed top-level XML element: a small tree, enough for
// the stanzas a device sends (they are small and bounded by
// MaxStanzaBytes).
type element struct {
	name     xml.Name
	attrs    []xml.Attr
	children []*element
	text     string
}

func (e *element) attr(local string) string {
	for _, a := range e.attrs {
		if a.Name.Local == local && (a.Name.Space == "" || a.Name.Space == "xml") {
			return a.Value
		}
	}
	return ""
}

// child returns the first child with the given namespace and local name
// (any namespace when space is "").
func (e *element) child(space, local string) *element {
	for _, c := range e.children {
		if c.name.Local == local && (space == "" || c.name.Space == space) {
			return c
		}
	}
	return nil
}

// firstChild returns the first child element, or nil.
func (e *element) firstChild() *element {
	if len(e.children) == 0 {
		return nil
	}
	return e.children[0]
}

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

// decodeElement reads the rest of an element whose start token was read.
func decodeElement(d *xml.Decoder, start xml.StartElement, depthLimit int) (*element, error) {
	e := &element{name: start.Name, attrs: start.Attr}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depthLimit <= 0 {
				return nil, errNotWellFormed
			}
			c, err := decodeElement(d, t.Copy(), depthLimit-1)
			if err != nil {
				return nil, err
			}
			e.children = append(e.children, c)
		case xml.EndElement:
			e.text = text.String()
			return e, nil
		case xml.CharData:
			text.Write(t)
		case xml.ProcInst, xml.Directive, xml.Comment:
			// RFC 6120 4.9.3.3: restricted XML.
			return nil, errNotWellFormed
		}
	}
}

// parseFrame parses one complete element from a WebSocket frame.
func parseFrame(b []byte) (*element, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, errNotWellFormed
		}
		switch t := tok.(type) {
		case xml.StartElement:
			e, err := decodeElement(d, t.Copy(), maxDepth)
			if err != nil {
				return nil, errNotWellFormed
			}
			// Nothing but whitespace may follow in the frame.
			for {
				tok, err := d.Token()
				if err == io.EOF {
					return e, nil
				}
				if err != nil {
					return nil, errNotWellFormed
				}
				if cd, ok := tok.(xml.CharData); !ok || len(bytes.TrimSpace(cd)) != 0 {
					return nil, errNotWellFormed
				}
			}
		case xml.ProcInst:
			if t.Target != "xml" {
				return nil, errNotWellFormed
			}
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return nil, errNotWellFormed
			}
		default:
			return nil, errNotWellFormed
		}
	}
}

// maxDepth bounds element nesting.
const maxDepth = 32

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
