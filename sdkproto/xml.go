package sdkproto

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxDepth is how deeply elements may nest inside one top-level element
// (the top-level element is depth 1). Device stanzas nest four levels at
// most; the limit only bounds the reader's work on hostile input.
const MaxDepth = 32

const xmlNS = "http://www.w3.org/XML/1998/namespace"

// Element is one XML element read from a stream: its namespace-resolved
// name, attributes (without namespace declarations), child elements and the
// character data directly inside it, concatenated. Interleaving of text and
// children is not kept; XMPP never depends on it.
//
// An Element is a plain value: it is not safe for concurrent mutation, but
// any number of goroutines may read one that nobody changes.
type Element struct {
	Name     xml.Name   // Space is the namespace URI, not a prefix
	Attr     []xml.Attr // without xmlns declarations
	Children []*Element // child elements in document order
	Text     string     // character data directly inside, concatenated
}

// Is reports whether e is named local in namespace space.
func (e *Element) Is(space, local string) bool {
	return e != nil && e.Name.Local == local && e.Name.Space == space
}

// AttrValue returns the value of the attribute named local in no namespace,
// or "" if there is none.
func (e *Element) AttrValue(local string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// Child returns the first child named local in namespace space, or nil.
func (e *Element) Child(space, local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Name.Local == local && c.Name.Space == space {
			return c
		}
	}
	return nil
}

// FirstChild returns the first child element, or nil.
func (e *Element) FirstChild() *Element {
	if e == nil || len(e.Children) == 0 {
		return nil
	}
	return e.Children[0]
}

// String returns e serialised as XML, with the namespace declarations it
// needs.
func (e *Element) String() string { return string(e.AppendXML(nil, "")) }

// AppendXML appends e serialised as XML to dst and returns the result.
// parentNS is the default namespace in scope where e is written: e gets an
// xmlns attribute only if its namespace differs. Attributes in the XML
// namespace use the xml: prefix; attributes in other namespaces get a
// declared prefix. Reading the output back yields an equal Element.
func (e *Element) AppendXML(dst []byte, parentNS string) []byte {
	dst = append(dst, '<')
	dst = append(dst, e.Name.Local...)
	if e.Name.Space != parentNS {
		dst = append(dst, " xmlns='"...)
		dst = appendEscaped(dst, e.Name.Space, true)
		dst = append(dst, '\'')
	}
	np := 0
	for _, a := range e.Attr {
		dst = append(dst, ' ')
		switch a.Name.Space {
		case "":
		case xmlNS:
			dst = append(dst, "xml:"...)
		default:
			// A private prefix per attribute keeps this simple and correct.
			p := "a" + itoa(np)
			np++
			dst = append(dst, "xmlns:"...)
			dst = append(dst, p...)
			dst = append(dst, "='"...)
			dst = appendEscaped(dst, a.Name.Space, true)
			dst = append(dst, "' "...)
			dst = append(dst, p...)
			dst = append(dst, ':')
		}
		dst = append(dst, a.Name.Local...)
		dst = append(dst, "='"...)
		dst = appendEscaped(dst, a.Value, true)
		dst = append(dst, '\'')
	}
	if len(e.Children) == 0 && e.Text == "" {
		return append(dst, "/>"...)
	}
	dst = append(dst, '>')
	dst = appendEscaped(dst, e.Text, false)
	for _, c := range e.Children {
		dst = c.AppendXML(dst, e.Name.Space)
	}
	dst = append(dst, "</"...)
	dst = append(dst, e.Name.Local...)
	return append(dst, '>')
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// appendEscaped appends s with the XML special characters escaped. In
// attribute values (attr) tab, newline and carriage return are escaped as
// character references so that they survive attribute-value normalisation;
// in text only carriage return is (a parser turns a literal one into a
// newline).
func appendEscaped(dst []byte, s string, attr bool) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\'':
			if !attr {
				continue
			}
			esc = "&apos;"
		case '"':
			if !attr {
				continue
			}
			esc = "&quot;"
		case '\r':
			esc = "&#xD;"
		case '\n':
			if !attr {
				continue
			}
			esc = "&#xA;"
		case '\t':
			if !attr {
				continue
			}
			esc = "&#x9;"
		default:
			continue
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		last = i + 1
	}
	return append(dst, s[last:]...)
}

// Reader reads an XMPP stream one top-level element at a time. It accepts
// both a stream with a <stream:stream> root (TCP) and a sequence of
// self-contained top-level elements (RFC 7395 WebSocket frames, tests).
//
// Next returns the stream header itself as an Element without children (its
// Name is {NSStream, "stream"}), then every element at depth one whole, and
// io.EOF when the root closes. Each top-level element, including the
// whitespace before it, may be at most MaxStanzaBytes long; a longer one
// fails with ErrStanzaTooLarge. Comments and processing instructions are
// skipped, DTDs are refused.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	src    limitReader
	dec    *xml.Decoder
	inRoot bool
	err    error
}

// NewReader returns a Reader that reads from r. If r is an io.ByteReader
// (such as *bufio.Reader or *bytes.Reader) it is read byte by byte and
// never past the element Next returns; otherwise it is buffered internally.
func NewReader(r io.Reader) *Reader {
	rd := &Reader{}
	rd.Reset(r)
	return rd
}

// Reset discards the Reader's state and makes it read a new stream from r,
// as XMPP requires after STARTTLS and SASL success. Pass the same
// io.ByteReader as before to keep bytes already buffered there.
func (r *Reader) Reset(src io.Reader) {
	br, ok := src.(io.ByteReader)
	if !ok {
		br = &byteReader{r: src}
	}
	r.src = limitReader{r: br, left: MaxStanzaBytes}
	r.dec = xml.NewDecoder(&r.src)
	r.inRoot = false
	r.err = nil
}

// limitReader counts the bytes the decoder consumes and fails once more than
// the budget for the current top-level element is read.
type limitReader struct {
	r    io.ByteReader
	left int
}

func (l *limitReader) ReadByte() (byte, error) {
	if l.left <= 0 {
		return 0, ErrStanzaTooLarge
	}
	b, err := l.r.ReadByte()
	if err == nil {
		l.left--
	}
	return b, err
}

// Read is here only so that limitReader is an io.Reader; the decoder uses
// ReadByte.
func (l *limitReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := l.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	return 1, nil
}

// byteReader buffers a plain io.Reader a little.
type byteReader struct {
	r    io.Reader
	buf  [512]byte
	i, n int
}

func (b *byteReader) ReadByte() (byte, error) {
	for b.i >= b.n {
		n, err := b.r.Read(b.buf[:])
		b.i, b.n = 0, n
		if n == 0 && err != nil {
			return 0, err
		}
	}
	c := b.buf[b.i]
	b.i++
	return c, nil
}

func (b *byteReader) Read(p []byte) (int, error) {
	if b.i < b.n {
		n := copy(p, b.buf[b.i:b.n])
		b.i += n
		return n, nil
	}
	return b.r.Read(p)
}

// Next returns the next top-level element (or the stream header), io.EOF at
// the end of the stream, or the error that broke it. After an error other
// than io.EOF the Reader keeps returning it.
func (r *Reader) Next() (*Element, error) {
	if r.err != nil {
		return nil, r.err
	}
	e, err := r.next()
	if err != nil {
		r.err = mapReadErr(err)
		return nil, r.err
	}
	return e, nil
}

func mapReadErr(err error) error {
	if errors.Is(err, ErrStanzaTooLarge) {
		return ErrStanzaTooLarge
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) && se.Msg == "unexpected EOF" {
		// The connection ended inside the stream or an element.
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *Reader) next() (*Element, error) {
	r.src.left = MaxStanzaBytes
	for {
		tok, err := r.dec.Token()
		if err != nil {
			if err == io.EOF && r.inRoot {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if err := checkName(t.Name); err != nil {
				return nil, err
			}
			if !r.inRoot && t.Name.Local == "stream" && (t.Name.Space == NSStream || t.Name.Space == "stream") {
				r.inRoot = true
				return &Element{Name: t.Name, Attr: cleanAttr(t.Attr)}, nil
			}
			return r.element(t)
		case xml.EndElement:
			// Only the root can end here: the decoder checks nesting.
			return nil, io.EOF
		case xml.CharData:
			if !isSpace(t) {
				return nil, errTextOutsideElement
			}
			r.src.left = MaxStanzaBytes
		case xml.Directive:
			return nil, errDirective
		case xml.Comment, xml.ProcInst:
			r.src.left = MaxStanzaBytes
		}
	}
}

var (
	errTextOutsideElement = errors.New("sdkproto: character data outside a stanza")
	errDirective          = errors.New("sdkproto: XML directives are not allowed")
	errBadName            = errors.New("sdkproto: name is not namespace-well-formed")
	errTooDeep            = errors.New("sdkproto: elements nested too deeply")
)

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func checkName(n xml.Name) error {
	if n.Local == "" || strings.IndexByte(n.Local, ':') >= 0 {
		return errBadName
	}
	return nil
}

// cleanAttr drops namespace declarations and checks attribute names.
func cleanAttr(attr []xml.Attr) []xml.Attr {
	out := attr[:0]
	for _, a := range attr {
		if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (r *Reader) element(start xml.StartElement) (*Element, error) {
	root := &Element{Name: start.Name, Attr: cleanAttr(start.Attr)}
	if err := checkAttrNames(root.Attr); err != nil {
		return nil, err
	}
	stack := make([]*Element, 1, 4)
	stack[0] = root
	var text []byte // character data of the innermost open element, pending
	for {
		tok, err := r.dec.Token()
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			if err := checkName(t.Name); err != nil {
				return nil, err
			}
			if len(stack) >= MaxDepth {
				return nil, errTooDeep
			}
			if len(text) > 0 {
				top.Text += string(text)
				text = text[:0]
			}
			c := &Element{Name: t.Name, Attr: cleanAttr(t.Attr)}
			if err := checkAttrNames(c.Attr); err != nil {
				return nil, err
			}
			top.Children = append(top.Children, c)
			stack = append(stack, c)
		case xml.EndElement:
			if len(text) > 0 {
				top.Text += string(text)
				text = text[:0]
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return root, nil
			}
		case xml.CharData:
			text = append(text, t...)
		case xml.Directive:
			return nil, errDirective
		}
	}
}

func checkAttrNames(attr []xml.Attr) error {
	for _, a := range attr {
		if err := checkName(a.Name); err != nil {
			return err
		}
		if !utf8.ValidString(a.Value) {
			return errBadName
		}
	}
	return nil
}

// ParseElement parses b as exactly one top-level element (an RFC 7395
// WebSocket frame) surrounded by optional whitespace. It is safe for
// concurrent use.
func ParseElement(b []byte) (*Element, error) {
	if len(b) > MaxStanzaBytes {
		return nil, ErrStanzaTooLarge
	}
	rd := NewReader(bytes.NewReader(b))
	e, err := rd.Next()
	if err != nil {
		return nil, err
	}
	if e.Name.Local == "stream" && rd.inRoot {
		return nil, errUnexpectedStreamHeader
	}
	// Nothing but whitespace may follow.
	if _, err := rd.Next(); err != io.EOF {
		if err == nil {
			return nil, errTrailingData
		}
		return nil, err
	}
	return e, nil
}

var (
	errUnexpectedStreamHeader = errors.New("sdkproto: unexpected stream header")
	errTrailingData           = errors.New("sdkproto: data after the element")
)
