package sdkproto

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"

	"tether/internal/readbuf"
	"tether/internal/xmppxml"
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
// whitespace before it, may be at most MaxReceivedStanzaBytes long; a longer one
// fails with ErrStanzaTooLarge. Comments and processing instructions
// between top-level elements are skipped; DTDs are refused, and so is
// anything else RFC 6120 section 11 restricts inside an element (comments,
// processing instructions, entities other than the predefined ones).
// Malformed XML fails with an *xml.SyntaxError.
//
// The Reader holds a read buffer only while part of an element is
// buffered: one from a shared pool, or a larger one of its own for an
// element that needs it. A Reader waiting for input holds none.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	src   io.Reader
	br    io.ByteReader // src, if it is one
	rs    sliceReader   // src, if it is one (*bufio.Reader)
	in    inBuf
	st    xmppxml.Stream
	mode  uint8
	used  int // bytes before the current element that count toward its limit
	lines int // newlines consumed, for error positions
	one   [1]byte
	err   error
}

// Reader modes.
const (
	modeStart  = iota // nothing but whitespace, comments or PIs read yet
	modeRoot          // inside a <stream:stream> root
	modeFrames        // a sequence of top-level elements without a root
)

// frameHeader stands in for the missing root of a sequence of top-level
// elements, so that the parser takes each for a stanza.
var frameHeader = []byte("<stream:stream xmlns:stream='" + NSStream + "'>")

// NewReader returns a Reader that reads from r. If r is an io.ByteReader
// (such as *bufio.Reader or *bytes.Reader) it is read byte by byte and
// never past the element Next returns; otherwise it is read in blocks, and
// bytes read past the element stay buffered for the next call.
func NewReader(r io.Reader) *Reader {
	rd := &Reader{}
	rd.Reset(r)
	return rd
}

// Reset discards the Reader's state, including any input it buffered, and
// makes it read a new stream from r, as XMPP requires after STARTTLS and
// SASL success. Pass the same io.ByteReader as before to keep bytes already
// buffered there.
func (r *Reader) Reset(src io.Reader) {
	r.in.drop()
	r.src = src
	r.br, _ = src.(io.ByteReader)
	r.rs, _ = src.(sliceReader)
	r.restart()
}

// restart expects a new stream on the same input, keeping what is
// buffered.
func (r *Reader) restart() {
	r.st.Reset()
	r.mode = modeStart
	r.used, r.lines = 0, 0
	r.err = nil
}

// buffered returns how many bytes were read past the last element.
func (r *Reader) buffered() int { return r.in.W - r.in.R }

// readBufSize is the size of the pooled read buffers. An element that
// does not fit grows a buffer of the Reader's own (doubling, up to
// MaxReceivedStanzaBytes), dropped once nothing is buffered.
const readBufSize = 4096

var readBufPool = readbuf.NewPool(readBufSize)

// inBuf is a Reader's input: buf[r:w] is read and not yet consumed, in a
// buffer taken from readBufPool only while something is.
type inBuf struct{ readbuf.Buffer }

func (b *inBuf) take()    { b.Take(readBufPool) }
func (b *inBuf) release() { b.Release(readBufPool) }
func (b *inBuf) drop()    { b.Drop(readBufPool) }

// sliceReader reads up to and including a delimiter, as *bufio.Reader
// does.
type sliceReader interface {
	ReadSlice(delim byte) ([]byte, error)
}

// append adds p after what is buffered.
func (b *inBuf) append(p []byte) {
	b.take()
	b.Compact()
	if b.W+len(p) > len(b.Buf) {
		b.Grow(readBufPool, max(2*len(b.Buf), b.W+len(p)))
	}
	b.W += copy(b.Buf[b.W:], p)
}

// makeRoom moves the buffered bytes to the front and, if the buffer is
// full, grows it.
func (b *inBuf) makeRoom() error {
	if !b.MakeRoom(readBufPool, MaxReceivedStanzaBytes) {
		return ErrStanzaTooLarge
	}
	return nil
}

// fill reads more input after what is buffered: up to the next '>' from a
// *bufio.Reader (no item ends elsewhere, so that reads no further than
// byte by byte would), one byte from another io.ByteReader, or what one
// Read gives. With nothing buffered it first waits for input, holding no
// buffer meanwhile.
func (r *Reader) fill() error {
	if r.rs != nil {
		p, err := r.rs.ReadSlice('>')
		if len(p) > 0 {
			r.in.append(p)
			return nil
		}
		return err
	}
	if r.in.R == r.in.W {
		r.in.release()
		c, err := r.readByte()
		if err != nil {
			return err
		}
		r.in.take()
		r.in.Buf[0], r.in.R, r.in.W = c, 0, 1
		return nil
	}
	if err := r.in.makeRoom(); err != nil {
		return err
	}
	if r.br != nil {
		c, err := r.br.ReadByte()
		if err != nil {
			return err
		}
		r.in.Buf[r.in.W] = c
		r.in.W++
		return nil
	}
	for range 100 {
		n, err := r.src.Read(r.in.Buf[r.in.W:])
		r.in.W += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

func (r *Reader) readByte() (byte, error) {
	if r.br != nil {
		return r.br.ReadByte()
	}
	for range 100 {
		n, err := r.src.Read(r.one[:])
		if n > 0 {
			return r.one[0], nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrNoProgress
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
		r.err = err
		return nil, err
	}
	return e, nil
}

func (r *Reader) next() (*Element, error) {
	r.used = 0
	for {
		b := r.in.Buf[r.in.R:r.in.W]
		// Every item ends with '>' unless it is text (whitespace): read
		// byte by byte, the input is parsed only when it can be complete.
		if len(b) > 0 && (r.br == nil || b[len(b)-1] == '>' || b[0] != '<') {
			n, e, end, err := r.item(b)
			if err == nil {
				r.lines += bytes.Count(b[:n], newline)
				r.in.R += n
				if end {
					r.in.release()
					return nil, io.EOF
				}
				if e != nil {
					r.in.release()
					return e, nil
				}
				continue
			}
			if err != xmppxml.ErrNeedMore {
				return nil, r.syntaxErr(b, err)
			}
		}
		if r.used+len(b) >= MaxReceivedStanzaBytes {
			return nil, ErrStanzaTooLarge
		}
		if err := r.fill(); err != nil {
			if err == io.EOF && (len(b) > 0 || r.mode == modeRoot) {
				// The connection ended inside the stream or an element.
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

var newline = []byte{'\n'}

// item handles the first item of b: it returns how many bytes it took and
// the element, or end at the stream's end; neither when it took only
// whitespace, a comment or a processing instruction.
func (r *Reader) item(b []byte) (n int, e *Element, end bool, err error) {
	if b[0] == '<' {
		n, err := skipMarkup(b, r.mode == modeStart)
		if n > 0 {
			r.used = 0
		}
		if n > 0 || err != nil {
			return n, nil, false, err
		}
	}
	if r.mode == modeStart {
		return r.start(b)
	}
	n, kind, x, err := r.st.Next(b)
	if err != nil {
		return 0, nil, false, err
	}
	switch kind {
	case xmppxml.KindWhitespace:
		r.used += n
		if r.used > MaxReceivedStanzaBytes {
			return 0, nil, false, ErrStanzaTooLarge
		}
		return n, nil, false, nil
	case xmppxml.KindEnd:
		return n, nil, true, nil
	}
	if r.used+n > MaxReceivedStanzaBytes {
		return 0, nil, false, ErrStanzaTooLarge
	}
	e, err = fromTree(x)
	return n, e, false, err
}

// start handles what comes before the first element: whitespace and an
// XML declaration, then the first element's start tag decides whether the
// stream has a <stream:stream> root.
func (r *Reader) start(b []byte) (int, *Element, bool, error) {
	if b[0] != '<' {
		n := 0
		for n < len(b) && isSpaceByte(b[n]) {
			n++
		}
		if n == 0 {
			return 0, nil, false, errTextOutsideElement
		}
		r.used += n
		if r.used > MaxReceivedStanzaBytes {
			return 0, nil, false, ErrStanzaTooLarge
		}
		return n, nil, false, nil
	}
	decl := 0
	if b[1] == '?' { // an XML declaration: skipMarkup passed nothing else
		j := bytes.Index(b, []byte("?>"))
		decl = j + 2
		for decl < len(b) && isSpaceByte(b[decl]) {
			decl++
		}
	}
	i := decl + 1
	for i < len(b) && !isSpaceByte(b[i]) && b[i] != '/' && b[i] != '>' {
		i++
	}
	if i >= len(b) {
		return 0, nil, false, xmppxml.ErrNeedMore
	}
	name := b[decl+1 : i]
	if c := bytes.LastIndexByte(name, ':'); c >= 0 {
		name = name[c+1:]
	}
	if b[decl] == '<' && string(name) == "stream" {
		n, kind, x, err := r.st.Next(b)
		if err != nil {
			return 0, nil, false, err
		}
		if kind == xmppxml.KindHeader && x.Name.Space == NSStream {
			if r.used+n > MaxReceivedStanzaBytes {
				return 0, nil, false, ErrStanzaTooLarge
			}
			r.mode = modeRoot
			return n, &Element{Name: x.Name, Attr: cleanAttr(x.Attrs)}, false, nil
		}
		// Named stream but not the stream element: an ordinary one.
		r.st.Reset()
	}
	r.mode = modeFrames
	if _, _, _, err := r.st.Next(frameHeader); err != nil {
		return 0, nil, false, err
	}
	if decl > 0 {
		return decl, nil, false, nil
	}
	return r.item(b)
}

// skipMarkup returns the length of the comment or processing instruction
// at the start of b, 0 if there is none, or ErrNeedMore. An XML declaration
// is only allowed before the first element (inStart), where it is left to
// the caller.
func skipMarkup(b []byte, inStart bool) (int, error) {
	switch {
	case len(b) < 4 && strings.HasPrefix("<!--", string(b)):
		return 0, xmppxml.ErrNeedMore
	case bytes.HasPrefix(b, []byte("<!--")):
		j := bytes.Index(b[4:], []byte("-->"))
		if j < 0 {
			return 0, xmppxml.ErrNeedMore
		}
		return 4 + j + 3, nil
	case len(b) > 1 && b[1] == '?':
		j := bytes.Index(b[2:], []byte("?>"))
		if j < 0 {
			return 0, xmppxml.ErrNeedMore
		}
		target := b[2 : 2+j]
		if k := bytes.IndexAny(target, " \t\r\n"); k >= 0 {
			target = target[:k]
		}
		if string(target) == "xml" {
			if inStart {
				return 0, nil
			}
			return 0, errMisplacedDecl
		}
		return 2 + j + 2, nil
	}
	return 0, nil
}

// syntaxErr turns a parse error at an offset into b into an *xml.SyntaxError
// with its line in the stream.
func (r *Reader) syntaxErr(b []byte, err error) error {
	var se *xmppxml.SyntaxError
	if !errors.As(err, &se) {
		return err
	}
	off := min(max(se.Offset, 0), len(b))
	return &xml.SyntaxError{Msg: se.Msg, Line: r.lines + 1 + bytes.Count(b[:off], newline)}
}

var (
	errTextOutsideElement = &xml.SyntaxError{Msg: "character data outside a stanza", Line: 1}
	errMisplacedDecl      = errors.New("sdkproto: XML declaration after the start of the stream")
	errTooDeep            = errors.New("sdkproto: elements nested too deeply")
)

func isSpace(b []byte) bool {
	for _, c := range b {
		if !isSpaceByte(c) {
			return false
		}
	}
	return true
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// isNSDecl reports whether a is a namespace declaration (xmlns or
// xmlns:p), which an Element's Attr leaves out.
func isNSDecl(a xml.Attr) bool {
	return a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns"
}

// appendAttrs appends src's attributes but its namespace declarations.
func appendAttrs(dst, src []xml.Attr) []xml.Attr {
	for _, a := range src {
		if !isNSDecl(a) {
			dst = append(dst, a)
		}
	}
	return dst
}

// cleanAttr drops namespace declarations, in place.
func cleanAttr(attr []xml.Attr) []xml.Attr {
	out := appendAttrs(attr[:0], attr)
	if len(out) == 0 {
		return nil
	}
	return out[:len(out):len(out)]
}

// fromTree copies a parsed element into an Element tree, in one block each
// for the Elements, the children's pointers and the attributes, and gives
// the parser's tree back (xmppxml.Element.Release) for the next stanza:
// a client reads a few stanzas per message, and allocating the parser's
// blocks afresh for each was 4 % of the soak harness's CPU. The strings
// are the parser's (it made them for this element alone) and stay valid.
func fromTree(x *xmppxml.Element) (*Element, error) {
	defer x.Release()
	n, na, err := countTree(x, 1)
	if err != nil {
		return nil, err
	}
	t := treeCopy{els: make([]Element, n)}
	if n > 1 {
		t.kids = make([]*Element, n-1)
	}
	if na > 0 {
		t.attrs = make([]xml.Attr, 0, na)
	}
	return t.copy(x), nil
}

// countTree counts the elements of x's tree and their attributes other
// than namespace declarations.
func countTree(x *xmppxml.Element, depth int) (n, attrs int, err error) {
	if depth > MaxDepth {
		return 0, 0, errTooDeep
	}
	n = 1
	for _, a := range x.Attrs {
		if !isNSDecl(a) {
			attrs++
		}
	}
	for _, c := range x.Children {
		k, ka, err := countTree(c, depth+1)
		if err != nil {
			return 0, 0, err
		}
		n, attrs = n+k, attrs+ka
	}
	return n, attrs, nil
}

type treeCopy struct {
	els   []Element
	kids  []*Element
	attrs []xml.Attr
}

func (t *treeCopy) copy(x *xmppxml.Element) *Element {
	e := &t.els[0]
	t.els = t.els[1:]
	e.Name, e.Text = x.Name, x.Text
	start := len(t.attrs)
	t.attrs = appendAttrs(t.attrs, x.Attrs)
	if end := len(t.attrs); end > start {
		e.Attr = t.attrs[start:end:end]
	}
	if k := len(x.Children); k > 0 {
		e.Children = t.kids[:k:k]
		t.kids = t.kids[k:]
		for i, c := range x.Children {
			e.Children[i] = t.copy(c)
		}
	}
	return e
}

// ParseElement parses b as exactly one top-level element (an RFC 7395
// WebSocket frame) surrounded by optional whitespace, optionally after an
// XML declaration. It is safe for concurrent use.
func ParseElement(b []byte) (*Element, error) {
	if len(b) > MaxReceivedStanzaBytes {
		return nil, ErrStanzaTooLarge
	}
	x, err := xmppxml.ParseFrame(b)
	if err != nil {
		var se *xmppxml.SyntaxError
		if errors.As(err, &se) {
			off := min(max(se.Offset, 0), len(b))
			return nil, &xml.SyntaxError{Msg: se.Msg, Line: 1 + bytes.Count(b[:off], newline)}
		}
		return nil, err
	}
	if x.Name.Local == "stream" && x.Name.Space == NSStream {
		return nil, errUnexpectedStreamHeader
	}
	return fromTree(x)
}

var errUnexpectedStreamHeader = errors.New("sdkproto: unexpected stream header")
