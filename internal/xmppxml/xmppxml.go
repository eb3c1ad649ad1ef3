package xmppxml

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strconv"
)

// Element is one parsed element. It uses encoding/xml's Name and Attr as
// plain data, with the same conventions as encoding/xml's Decoder:
// Name.Space is the resolved namespace URI ("" when none is in scope);
// an unprefixed attribute has Space ""; the xml prefix resolves to
// XMLNamespace; namespace declarations stay in Attrs, xmlns:p='u' as
// {Space: "xmlns", Local: "p"} and xmlns='u' as {Space: "", Local: "xmlns"}.
//
// The Elements, Attrs and Children of one parsed item share backing
// arrays: keeping any part of the tree keeps all of it.
type Element struct {
	Name     xml.Name
	Attrs    []xml.Attr
	Children []*Element
	// Text is the character data directly inside the element, all its
	// pieces concatenated (between children too), with references
	// decoded, CDATA sections included and line ends normalised to \n.
	Text string

	arena *arena // on the root of a parsed item: its blocks, for Release
}

// Attr returns the value of the attribute with the given namespace and
// local name, and whether it is present.
func (e *Element) Attr(space, local string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Name.Local == local && a.Name.Space == space {
			return a.Value, true
		}
	}
	return "", false
}

// XMLNamespace is the namespace the xml prefix is bound to.
const XMLNamespace = "http://www.w3.org/XML/1998/namespace"

// xmlnsNamespace may not be declared (Namespaces in XML 1.0, section 3).
const xmlnsNamespace = "http://www.w3.org/2000/xmlns/"

// MaxDepth is how deeply elements may nest below a stanza (or below a
// frame's element): a stanza with MaxDepth levels of descendants parses,
// one more level is not well-formed.
const MaxDepth = 32

// Kind says what Stream.Next found.
type Kind uint8

const (
	// KindNone comes with an error.
	KindNone Kind = iota
	// KindHeader is the stream header's start tag, with any XML
	// declaration before it. The Element has its name and attributes.
	KindHeader
	// KindElement is a complete stanza.
	KindElement
	// KindWhitespace is whitespace between stanzas (a keepalive), also a
	// whitespace-only CDATA section. A run of whitespace may come back in
	// several pieces, depending on how it was read.
	KindWhitespace
	// KindEnd is the stream's end tag, or follows a self-closing header.
	KindEnd
)

func (k Kind) String() string {
	switch k {
	case KindNone:
		return "None"
	case KindHeader:
		return "Header"
	case KindElement:
		return "Element"
	case KindWhitespace:
		return "Whitespace"
	case KindEnd:
		return "End"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

var (
	// ErrNeedMore says the buffer holds only the start of an item.
	ErrNeedMore = errors.New("xmppxml: need more input")
	// ErrNotWellFormed is what every *SyntaxError matches with errors.Is.
	ErrNotWellFormed = errors.New("xmppxml: not well-formed")
	// ErrTooManyNamespaces says the stream header declares more than
	// MaxHeaderNamespaces namespaces. They stay in scope for the whole
	// stream and every element's prefix is looked up through them, so
	// thousands would make each later element cost many times more.
	ErrTooManyNamespaces = errors.New("xmppxml: too many namespace declarations on the stream header")
)

// MaxHeaderNamespaces is the most namespace declarations a stream header
// may carry (clients declare two or three).
const MaxHeaderNamespaces = 32

// SyntaxError says why and where (a byte offset into the buffer given to
// Next or ParseFrame) the input is not well-formed.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return "xmppxml: not well-formed at byte " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// Unwrap makes errors.Is(err, ErrNotWellFormed) true.
func (e *SyntaxError) Unwrap() error { return ErrNotWellFormed }

func syntaxErr(off int, msg string) error { return &SyntaxError{Offset: off, Msg: msg} }

// binding is a namespace declaration in scope; prefix "" is the default
// namespace.
type binding struct {
	prefix, uri string
}

// Stream flags.
const (
	fStarted    = 1 << iota // an item was consumed since the last Reset
	fHeader                 // the header was parsed
	fPendingEnd             // the header was self-closing: KindEnd comes next
	fEnded                  // the stream ended
)

// Stream parses the top-level items of one XMPP stream. It holds the
// namespace bindings declared on the stream header and the progress of a
// partly scanned item; its zero value expects a header. It is not safe
// for concurrent use.
type Stream struct {
	ns    []binding // declared on the header
	root  string    // the header's name as written, for the end tag
	scan  scanState
	flags uint8
}

// Reset forgets the header and any partial item: a new stream (after
// STARTTLS or SASL) starts with a header, optionally with an XML
// declaration.
func (s *Stream) Reset() {
	s.scan.release()
	*s = Stream{}
}

// Header reports whether the stream header has been parsed.
func (s *Stream) Header() bool { return s.flags&fHeader != 0 }

// Next parses the first top-level item at the start of buf and returns
// how many bytes it took, its kind and, for a header or stanza, the
// element.
//
// When buf holds only part of an item Next returns ErrNeedMore and
// consumes nothing: call again with the same bytes and more after them
// (the Stream remembers how far it scanned, so a large stanza read in
// small pieces costs linear time). The caller bounds the buffer's size.
// An error that matches ErrNotWellFormed (a *SyntaxError) ends the
// stream; calling Next again after one is undefined. After the stream's
// end Next returns (0, KindEnd, nil, nil).
//
// Next does not block and does not keep buf.
func (s *Stream) Next(buf []byte) (n int, kind Kind, e *Element, err error) {
	if s.flags&(fPendingEnd|fEnded) != 0 {
		s.flags = s.flags&^fPendingEnd | fEnded
		return 0, KindEnd, nil, nil
	}
	if s.scan.st == stStart {
		if len(buf) == 0 {
			return 0, KindNone, nil, ErrNeedMore
		}
		if c := buf[0]; c != '<' {
			i := 0
			for i < len(buf) && isSpace(buf[i]) {
				i++
			}
			if i == 0 {
				return 0, KindNone, nil, syntaxErr(0, msgStreamText)
			}
			s.flags |= fStarted
			return i, KindWhitespace, nil, nil
		}
	}
	end, err := s.scan.run(buf, s.flags&fHeader == 0, s.flags&fStarted == 0, s)
	if err != nil {
		if err != ErrNeedMore {
			s.scan.release()
			s.scan = scanState{}
		}
		return 0, KindNone, nil, err
	}
	sc := s.scan
	s.scan.release()
	s.scan = scanState{}
	s.flags |= fStarted
	item := buf[:end]
	if s.flags&fHeader == 0 {
		e, err := s.header(item, sc)
		if err != nil {
			return 0, KindNone, nil, err
		}
		return end, KindHeader, e, nil
	}
	switch {
	case item[1] == '/':
		if err := s.endTag(item); err != nil {
			return 0, KindNone, nil, err
		}
		s.flags |= fEnded
		return end, KindEnd, nil, nil
	case item[1] == '!':
		// A CDATA section at stream level (the scanner lets no other
		// <! through): whitespace only.
		for i := len(cdataOpen); i < end-3; i++ {
			if !isSpace(item[i]) {
				return 0, KindNone, nil, syntaxErr(i, msgStreamText)
			}
		}
		return end, KindWhitespace, nil, nil
	}
	p := newParser(item, s.ns, sc)
	e, i, err := p.element(0, 0)
	if err == nil && i != end {
		err = syntaxErr(i, msgScan)
	}
	if err != nil {
		p.done(nil)
		return 0, KindNone, nil, err
	}
	p.done(e)
	return end, KindElement, e, nil
}

// header parses the stream header item: an optional XML declaration,
// whitespace, and the header's start tag.
func (s *Stream) header(b []byte, sc scanState) (e *Element, err error) {
	p := newParser(b, nil, sc)
	defer func() { p.done(e) }()
	i := 0
	if len(b) > 1 && b[1] == '?' {
		var err error
		if i, err = p.decl(0); err != nil {
			return nil, err
		}
		for i < len(b) && isSpace(b[i]) {
			i++
		}
	}
	root := p.newElement()
	end, self, qname, err := p.startTag(i, root)
	if err != nil {
		return nil, err
	}
	if end != len(b) {
		return nil, syntaxErr(end, msgScan)
	}
	if len(p.ns) > MaxHeaderNamespaces {
		return nil, ErrTooManyNamespaces
	}
	if len(p.ns) > 0 {
		s.ns = append([]binding(nil), p.ns...)
	}
	s.root = internName(qname)
	s.flags |= fHeader
	if self {
		s.flags |= fPendingEnd
	}
	return root, nil
}

// checkStanza checks the start tag b[0:len(b)] of a would-be stanza as
// soon as the scanner has it whole: it may not be the stream element
// (a new header is only valid after Reset), whatever its prefix. Only a
// start tag whose local name is stream is parsed here, to resolve its
// namespace; an error in it is the one parsing the stanza would report.
func (s *Stream) checkStanza(b []byte) error {
	n := 1
	for n < len(b) && !isSpace(b[n]) && b[n] != '/' && b[n] != '>' {
		n++
	}
	name := b[1:n]
	if !bytes.HasSuffix(name, []byte("stream")) || len(name) > 6 && name[len(name)-7] != ':' {
		return nil
	}
	p := newParser(b, s.ns, scanState{nelem: 1})
	defer p.done(nil)
	e := p.newElement()
	if _, _, _, err := p.startTag(0, e); err != nil {
		return err
	}
	if e.Name.Space == streamsNamespace && e.Name.Local == "stream" {
		return syntaxErr(0, msgNestedStream)
	}
	return nil
}

// streamsNamespace is the namespace of the stream element.
const streamsNamespace = "http://etherx.jabber.org/streams"

// endTag checks the stream's end tag against the header's name.
func (s *Stream) endTag(b []byte) error {
	i := 2
	j := i
	for j < len(b) && b[j] != '>' && !isSpace(b[j]) {
		j++
	}
	if string(b[i:j]) != s.root {
		return syntaxErr(i, msgEndTag)
	}
	for j < len(b) && isSpace(b[j]) {
		j++
	}
	if j != len(b)-1 || b[j] != '>' {
		return syntaxErr(j, msgEndTag)
	}
	return nil
}

// ParseFrame parses one RFC 7395 WebSocket frame: exactly one element,
// with whitespace around it and optionally an XML declaration at the very
// start. There is no stream context: an unprefixed element with no xmlns
// in scope has Name.Space "". An error matches ErrNotWellFormed. It is
// safe for concurrent use.
func ParseFrame(b []byte) (*Element, error) {
	i := 0
	if len(b) > 1 && b[0] == '<' && b[1] == '?' {
		p := parser{b: b}
		var err error
		if i, err = p.decl(0); err != nil {
			return nil, err
		}
	}
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i == len(b) || b[i] != '<' {
		return nil, syntaxErr(i, msgNoElement)
	}
	item := b[i:]
	var sc scanState
	end, err := sc.run(item, false, false, nil)
	sc.release()
	if err == ErrNeedMore {
		return nil, syntaxErr(len(b), msgEOF)
	}
	if err != nil {
		return nil, offsetBy(err, i)
	}
	if item[1] == '/' || item[1] == '!' {
		return nil, syntaxErr(i, msgNoElement)
	}
	for j := i + end; j < len(b); j++ {
		if !isSpace(b[j]) {
			return nil, syntaxErr(j, msgTrailing)
		}
	}
	p := newParser(item, nil, sc)
	e, j, err := p.element(0, 0)
	if err == nil && j != end {
		err = syntaxErr(j, msgScan)
	}
	if err != nil {
		p.done(nil)
		return nil, offsetBy(err, i)
	}
	p.done(e)
	return e, nil
}

func offsetBy(err error, d int) error {
	if se, ok := err.(*SyntaxError); ok {
		se.Offset += d
	}
	return err
}

// Error messages.
const (
	msgStreamText   = "text at stream level"
	msgEndTag       = "end tag does not match its start tag"
	msgNestedStream = "stream header inside the stream"
	msgScan         = "element does not end where it should"
	msgNoElement    = "no element in frame"
	msgTrailing     = "data after the element"
	msgEOF          = "unexpected end of input"
	msgMarkup       = "comment, DOCTYPE or other markup declaration"
	msgPI           = "processing instruction"
	msgDecl         = "bad XML declaration"
	msgDeclPlace    = "XML declaration not at the start"
	msgAfterLT      = "invalid character after <"
	msgLTInTag      = "< in a tag"
	msgLTInAttr     = "< in an attribute value"
	msgDepth        = "elements nested too deeply"
	msgBeforeHeader = "expected the stream header"
	msgName         = "invalid name"
	msgQName        = "invalid qualified name"
	msgUndeclared   = "undeclared namespace prefix"
	msgReserved     = "reserved namespace prefix or name"
	msgEmptyNS      = "empty namespace for a prefix"
	msgAttr         = "malformed attribute"
	msgDupAttr      = "duplicate attribute"
	msgEntity       = "invalid entity reference"
	msgCharRef      = "invalid character reference"
	msgChar         = "character not allowed in XML"
	msgUTF8         = "invalid UTF-8"
	msgCDATAEnd     = "]]> in text"
	msgTag          = "malformed tag"
	msgAttrSpace    = "no whitespace before an attribute"
)
