package xmppxml

import (
	"bytes"
	"encoding/xml"
	"sync"
	"unicode/utf8"
)

// parser builds the tree of one complete item, checking every rule the
// scanner left out. Its slices come from the scanner's counts, so a
// stanza costs a handful of allocations: the Elements, the Attrs and the
// Children pointers each in one block, plus the strings that are not
// interned.
type parser struct {
	b     []byte
	outer []binding  // the stream header's declarations
	ns    []binding  // declarations in scope inside the item
	pend  []*Element // children of the open elements, innermost last
	tbuf  []byte     // decoded text and values, innermost last
	a     *arena
	s     *scratch
}

// arena holds the blocks the tree is made of. The root Element keeps it,
// and Element.Release gives it back to arenaPool for a later item: a
// gateway parses a few stanzas per message it delivers (the receipt, the
// ack), and allocating their blocks afresh each time was a tenth of all it
// allocated.
type arena struct {
	elems []Element
	attrs []xml.Attr
	kids  []*Element
}

var arenaPool = sync.Pool{New: func() any { return new(arena) }}

// An arena larger than these is left to the collector on Release, so that
// one large stanza does not pin its blocks in the pool.
const (
	maxPooledElems = 64
	maxPooledAttrs = 128
)

// newArena returns an arena with room for the counts the scanner found.
func newArena(sc scanState) *arena {
	a := arenaPool.Get().(*arena)
	a.elems = reuse(a.elems, int(max(sc.nelem, 1)))
	a.attrs = reuse(a.attrs, int(sc.nattr))
	a.kids = reuse(a.kids, int(sc.nelem)-1)
	return a
}

// reuse returns s emptied if it has room for n, else a new slice (nil
// for n <= 0 and no room kept).
func reuse[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:0]
	}
	return make([]T, 0, n)
}

// put clears a's blocks (they hold strings and pointers) and pools it.
func (a *arena) put() {
	clear(a.elems)
	clear(a.attrs)
	clear(a.kids)
	if cap(a.elems) > maxPooledElems || cap(a.attrs) > maxPooledAttrs || cap(a.kids) > maxPooledElems {
		return
	}
	a.elems, a.attrs, a.kids = a.elems[:0], a.attrs[:0], a.kids[:0]
	arenaPool.Put(a)
}

// Release gives the blocks of a parsed tree back for reuse by a later
// item. Call it on the root returned by Stream.Next or ParseFrame when
// nothing refers any more to an element of the tree, its attribute list
// or its children list; the strings in them stay valid. A tree not
// released is collected as usual. Release on any other element, or
// twice, does nothing.
func (e *Element) Release() {
	if a := e.arena; a != nil {
		e.arena = nil
		a.put()
	}
}

// scratch is a parser's working space, reused through scratchPool.
type scratch struct {
	ns   []binding
	pend []*Element
	tbuf []byte
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{ns: make([]binding, 0, 8), pend: make([]*Element, 0, 16), tbuf: make([]byte, 0, 1024)}
}}

// maxKeep bounds the scratch space kept in the pool, in bytes of tbuf.
const maxKeep = 16 << 10

// newParser prepares a parser for the item b; release gives its scratch
// space back, and done hands the arena to the tree or back to the pool.
func newParser(b []byte, outer []binding, sc scanState) parser {
	s := scratchPool.Get().(*scratch)
	return parser{b: b, outer: outer, ns: s.ns[:0], pend: s.pend[:0], tbuf: s.tbuf[:0], a: newArena(sc), s: s}
}

func (p *parser) release() {
	s := p.s
	clear(p.ns[:cap(p.ns)])
	clear(p.pend[:cap(p.pend)])
	s.ns, s.pend = p.ns[:0], p.pend[:0]
	if cap(p.tbuf) <= maxKeep {
		s.tbuf = p.tbuf[:0]
	}
	*p = parser{}
	scratchPool.Put(s)
}

// done ends a parse: the root e (nil on error) keeps the arena for
// Release, or the arena goes back to the pool. It then releases p.
func (p *parser) done(e *Element) {
	if e != nil {
		e.arena = p.a
	} else {
		p.a.put()
	}
	p.release()
}

func (p *parser) newElement() *Element {
	a := p.a
	if len(a.elems) == cap(a.elems) {
		a.elems = make([]Element, 0, 4)
	}
	a.elems = a.elems[:len(a.elems)+1]
	return &a.elems[len(a.elems)-1]
}

// element parses the element whose start tag begins at b[i] and returns
// it and the offset after its end tag.
func (p *parser) element(i, depth int) (*Element, int, error) {
	b := p.b
	e := p.newElement()
	nsMark := len(p.ns)
	j, self, qn, err := p.startTag(i, e)
	if err != nil {
		return nil, 0, err
	}
	if self {
		p.ns = p.ns[:nsMark]
		return e, j, nil
	}
	pendMark := len(p.pend)
	base := len(p.tbuf)
	rs, re := 0, 0 // a piece of text not copied to tbuf yet
	inBuf := false // text is in tbuf[base:]
	for {
		if j >= len(b) {
			return nil, 0, syntaxErr(j, msgEOF)
		}
		if b[j] != '<' {
			s, t, plain, err := p.text(j)
			if err != nil {
				return nil, 0, err
			}
			if plain {
				if !inBuf && rs == re {
					rs, re = s, t
				} else {
					if !inBuf {
						p.tbuf = append(p.tbuf, b[rs:re]...)
						inBuf = true
					}
					p.tbuf = append(p.tbuf, b[s:t]...)
				}
				j = t
				continue
			}
			// Text that needs decoding: bring what came before into
			// tbuf and decode after it.
			if !inBuf {
				p.tbuf = append(p.tbuf, b[rs:re]...)
				inBuf = true
			}
			if j, err = p.decodeText(s); err != nil {
				return nil, 0, err
			}
			continue
		}
		if j+1 >= len(b) {
			return nil, 0, syntaxErr(j, msgEOF)
		}
		switch b[j+1] {
		case '/':
			k := j + 2
			if !bytes.HasPrefix(b[k:], qn) {
				return nil, 0, syntaxErr(k, msgEndTag)
			}
			k += len(qn)
			for k < len(b) && isSpace(b[k]) {
				k++
			}
			if k >= len(b) {
				return nil, 0, syntaxErr(k, msgEOF)
			}
			if b[k] != '>' {
				return nil, 0, syntaxErr(k, msgEndTag)
			}
			switch {
			case inBuf:
				e.Text = string(p.tbuf[base:])
				p.tbuf = p.tbuf[:base]
			case rs != re:
				e.Text = string(b[rs:re])
			}
			if n := len(p.pend) - pendMark; n > 0 {
				m := len(p.a.kids)
				p.a.kids = append(p.a.kids, p.pend[pendMark:]...)
				e.Children = p.a.kids[m:len(p.a.kids):len(p.a.kids)]
				clear(p.pend[pendMark:])
				p.pend = p.pend[:pendMark]
			}
			p.ns = p.ns[:nsMark]
			return e, k + 1, nil
		case '!':
			if !bytes.HasPrefix(b[j:], []byte(cdataOpen)) {
				return nil, 0, syntaxErr(j, msgMarkup)
			}
			s := j + len(cdataOpen)
			t := bytes.Index(b[s:], []byte("]]>"))
			if t < 0 {
				return nil, 0, syntaxErr(len(b), msgEOF)
			}
			t += s
			cr, err := checkChars(b, s, t)
			if err != nil {
				return nil, 0, err
			}
			if !inBuf && !cr && rs == re {
				rs, re = s, t
			} else {
				if !inBuf {
					p.tbuf = append(p.tbuf, b[rs:re]...)
					inBuf = true
				}
				p.appendNormalised(b[s:t])
			}
			j = t + 3
		case '?':
			return nil, 0, syntaxErr(j, msgPI)
		default:
			if depth >= MaxDepth {
				return nil, 0, syntaxErr(j, msgDepth)
			}
			c, k, err := p.element(j, depth+1)
			if err != nil {
				return nil, 0, err
			}
			p.pend = append(p.pend, c)
			j = k
		}
	}
}

// text scans character data from b[i] up to the next '<' (or the end of
// input). plain says it needs no decoding: no references, no '\r'. When
// it does, t is where the first such byte is.
func (p *parser) text(i int) (s, t int, plain bool, err error) {
	b := p.b
	j := i
	for j < len(b) {
		c := b[j]
		if textPlain[c] {
			j++
			continue
		}
		switch {
		case c == '<':
			return i, j, true, nil
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && n == 1 {
				return 0, 0, false, syntaxErr(j, msgUTF8)
			}
			if !isChar(r) {
				return 0, 0, false, syntaxErr(j, msgChar)
			}
			j += n
		case c == ']':
			if j+2 < len(b) && b[j+1] == ']' && b[j+2] == '>' {
				return 0, 0, false, syntaxErr(j, msgCDATAEnd)
			}
			j++
		case c == '&' || c == '\r':
			return i, j, false, nil
		default:
			return 0, 0, false, syntaxErr(j, msgChar)
		}
	}
	return i, j, true, nil
}

// decodeText appends character data from b[i] up to the next '<' to
// tbuf, decoding references and line ends, and returns the offset of the
// '<'.
func (p *parser) decodeText(i int) (int, error) {
	b := p.b
	for {
		_, t, plain, err := p.text(i)
		if err != nil {
			return 0, err
		}
		p.tbuf = append(p.tbuf, b[i:t]...)
		if plain {
			return t, nil
		}
		if b[t] == '\r' {
			p.tbuf = append(p.tbuf, '\n')
			i = t + 1
			if i < len(b) && b[i] == '\n' {
				i++
			}
			continue
		}
		if i, err = p.ref(t); err != nil {
			return 0, err
		}
	}
}

// checkChars checks that b[i:j] (a CDATA section) has only XML
// characters, and reports whether it has a '\r'.
func checkChars(b []byte, i, j int) (cr bool, err error) {
	for i < j {
		c := b[i]
		if c >= 0x20 && c < utf8.RuneSelf || c == '\n' || c == '\t' {
			i++
			continue
		}
		if c == '\r' {
			cr = true
			i++
			continue
		}
		if c < 0x20 {
			return false, syntaxErr(i, msgChar)
		}
		r, n := utf8.DecodeRune(b[i:j])
		if r == utf8.RuneError && n == 1 {
			return false, syntaxErr(i, msgUTF8)
		}
		if !isChar(r) {
			return false, syntaxErr(i, msgChar)
		}
		i += n
	}
	return cr, nil
}

// appendNormalised appends b to tbuf with \r\n and \r turned into \n.
func (p *parser) appendNormalised(b []byte) {
	for len(b) > 0 {
		k := bytes.IndexByte(b, '\r')
		if k < 0 {
			p.tbuf = append(p.tbuf, b...)
			return
		}
		p.tbuf = append(p.tbuf, b[:k]...)
		p.tbuf = append(p.tbuf, '\n')
		b = b[k+1:]
		if len(b) > 0 && b[0] == '\n' {
			b = b[1:]
		}
	}
}

// ref decodes the reference at b[i] ('&') into tbuf and returns the
// offset after its ';'.
func (p *parser) ref(i int) (int, error) {
	b := p.b
	j := i + 1
	if j < len(b) && b[j] == '#' {
		j++
		base := rune(10)
		if j < len(b) && b[j] == 'x' {
			base = 16
			j++
		}
		start := j
		var r rune
		for ; j < len(b); j++ {
			c := b[j]
			var d rune
			switch {
			case '0' <= c && c <= '9':
				d = rune(c - '0')
			case base == 16 && 'a' <= c && c <= 'f':
				d = rune(c-'a') + 10
			case base == 16 && 'A' <= c && c <= 'F':
				d = rune(c-'A') + 10
			default:
				d = -1
			}
			if d < 0 {
				break
			}
			r = r*base + d
			if r > utf8.MaxRune {
				return 0, syntaxErr(i, msgCharRef)
			}
		}
		if j == start || j >= len(b) || b[j] != ';' || !isChar(r) {
			return 0, syntaxErr(i, msgCharRef)
		}
		p.tbuf = utf8.AppendRune(p.tbuf, r)
		return j + 1, nil
	}
	k := bytes.IndexByte(b[j:min(len(b), j+5)], ';')
	if k < 0 {
		return 0, syntaxErr(i, msgEntity)
	}
	var c byte
	switch string(b[j : j+k]) {
	case "lt":
		c = '<'
	case "gt":
		c = '>'
	case "amp":
		c = '&'
	case "apos":
		c = '\''
	case "quot":
		c = '"'
	default:
		return 0, syntaxErr(i, msgEntity)
	}
	p.tbuf = append(p.tbuf, c)
	return j + k + 1, nil
}

// qname scans the qualified name at b[i]: an NCName, or two joined by a
// ':'. It returns the offset of the colon (-1 if none) and of the end.
func (p *parser) qname(i int) (colon, end int, err error) {
	b := p.b
	colon = -1
	j := i
	start := true // at the start of a part
	for j < len(b) {
		c := b[j]
		if c < utf8.RuneSelf {
			if start && nameStart[c] || !start && nameChar[c] {
				start = false
				j++
				continue
			}
			if c == ':' && !start && colon < 0 {
				colon = j
				start = true
				j++
				continue
			}
			break
		}
		r, n := utf8.DecodeRune(b[j:])
		if start && isNameStartRune(r) || !start && isNameRune(r) {
			start = false
			j += n
			continue
		}
		break
	}
	if j == i {
		if i < len(b) && b[i] == ':' {
			return 0, 0, syntaxErr(i, msgQName)
		}
		return 0, 0, syntaxErr(i, msgName)
	}
	if start || j < len(b) && b[j] == ':' { // ends with ':' or has a second one
		return 0, 0, syntaxErr(j, msgQName)
	}
	return colon, j, nil
}

// startTag parses the start tag at b[i] into e: name, attributes, and
// the namespace declarations, which it pushes onto p.ns. It returns the
// offset after the tag, whether it was self-closing, and the name as
// written.
func (p *parser) startTag(i int, e *Element) (end int, self bool, qn []byte, err error) {
	b := p.b
	colon, j, err := p.qname(i + 1)
	if err != nil {
		return 0, false, nil, err
	}
	qn = b[i+1 : j]
	first := len(p.a.attrs)
	decl := false
	for {
		k := j
		for k < len(b) && isSpace(b[k]) {
			k++
		}
		if k >= len(b) {
			return 0, false, nil, syntaxErr(k, msgEOF)
		}
		if b[k] == '>' {
			j = k + 1
			break
		}
		if b[k] == '/' {
			if k+1 < len(b) && b[k+1] == '>' {
				j, self = k+2, true
				break
			}
			return 0, false, nil, syntaxErr(k, msgTag)
		}
		if k == j {
			if c := b[k]; c < utf8.RuneSelf && (nameStart[c] || c == ':') {
				return 0, false, nil, syntaxErr(k, msgAttrSpace)
			}
			return 0, false, nil, syntaxErr(k, msgTag)
		}
		ac, ae, err := p.qname(k)
		if err != nil {
			return 0, false, nil, err
		}
		var name xml.Name
		if ac < 0 {
			name.Local = internName(b[k:ae])
			decl = decl || name.Local == "xmlns"
		} else {
			// The prefix waits in Space until the declarations are in.
			name.Space = internName(b[k:ac])
			name.Local = internName(b[ac+1 : ae])
			decl = decl || name.Space == "xmlns"
		}
		for ae < len(b) && isSpace(b[ae]) {
			ae++
		}
		if ae >= len(b) || b[ae] != '=' {
			return 0, false, nil, syntaxErr(ae, msgAttr)
		}
		ae++
		for ae < len(b) && isSpace(b[ae]) {
			ae++
		}
		if ae >= len(b) || b[ae] != '\'' && b[ae] != '"' {
			return 0, false, nil, syntaxErr(ae, msgAttr)
		}
		v, ve, err := p.attrValue(ae)
		if err != nil {
			return 0, false, nil, err
		}
		p.a.attrs = append(p.a.attrs, xml.Attr{Name: name, Value: v})
		j = ve
	}
	attrs := p.a.attrs[first:len(p.a.attrs):len(p.a.attrs)]
	if decl {
		for _, a := range attrs {
			if err := p.declare(a, i); err != nil {
				return 0, false, nil, err
			}
		}
	}
	if colon < 0 {
		e.Name.Space, _ = p.lookup(nil)
		e.Name.Local = internName(qn)
	} else {
		pfx := b[i+1 : colon]
		switch string(pfx) {
		case "xml":
			e.Name.Space = XMLNamespace
		case "xmlns":
			return 0, false, nil, syntaxErr(i+1, msgReserved)
		default:
			uri, ok := p.lookup(pfx)
			if !ok {
				return 0, false, nil, syntaxErr(i+1, msgUndeclared)
			}
			e.Name.Space = uri
		}
		e.Name.Local = internName(qn[colon-i:])
	}
	for k := range attrs {
		a := &attrs[k].Name
		switch a.Space {
		case "", "xmlns":
		case "xml":
			a.Space = XMLNamespace
		default:
			uri, ok := p.lookupString(a.Space)
			if !ok {
				return 0, false, nil, syntaxErr(i, msgUndeclared)
			}
			a.Space = uri
		}
	}
	if err := unique(attrs, i); err != nil {
		return 0, false, nil, err
	}
	if len(attrs) > 0 {
		e.Attrs = attrs
	}
	return j, self, qn, nil
}

// declare takes in a namespace declaration, if a is one.
func (p *parser) declare(a xml.Attr, off int) error {
	var prefix string
	switch {
	case a.Name.Space == "xmlns":
		prefix = a.Name.Local
		switch {
		case prefix == "xml":
			if a.Value != XMLNamespace {
				return syntaxErr(off, msgReserved)
			}
			return nil
		case prefix == "xmlns":
			return syntaxErr(off, msgReserved)
		case a.Value == "":
			return syntaxErr(off, msgEmptyNS)
		}
	case a.Name.Space == "" && a.Name.Local == "xmlns":
	default:
		return nil
	}
	if a.Value == XMLNamespace || a.Value == xmlnsNamespace {
		return syntaxErr(off, msgReserved)
	}
	p.ns = append(p.ns, binding{prefix: prefix, uri: a.Value})
	return nil
}

// lookup resolves a prefix ("" or nil for the default namespace).
func (p *parser) lookup(prefix []byte) (string, bool) {
	for k := len(p.ns) - 1; k >= 0; k-- {
		if p.ns[k].prefix == string(prefix) {
			return p.ns[k].uri, true
		}
	}
	for k := len(p.outer) - 1; k >= 0; k-- {
		if p.outer[k].prefix == string(prefix) {
			return p.outer[k].uri, true
		}
	}
	return "", false
}

func (p *parser) lookupString(prefix string) (string, bool) {
	for k := len(p.ns) - 1; k >= 0; k-- {
		if p.ns[k].prefix == prefix {
			return p.ns[k].uri, true
		}
	}
	for k := len(p.outer) - 1; k >= 0; k-- {
		if p.outer[k].prefix == prefix {
			return p.outer[k].uri, true
		}
	}
	return "", false
}

// unique checks that no two attributes have the same expanded name.
func unique(attrs []xml.Attr, off int) error {
	if len(attrs) <= 16 {
		for k := 1; k < len(attrs); k++ {
			for l := range k {
				if attrs[k].Name == attrs[l].Name {
					return syntaxErr(off, msgDupAttr)
				}
			}
		}
		return nil
	}
	seen := make(map[xml.Name]struct{}, len(attrs))
	for _, a := range attrs {
		if _, ok := seen[a.Name]; ok {
			return syntaxErr(off, msgDupAttr)
		}
		seen[a.Name] = struct{}{}
	}
	return nil
}

// attrValue parses the quoted value at b[i] and returns it and the
// offset after the closing quote. Literal tabs and line ends become
// spaces (XML 1.0 section 3.3.3); those from character references stay.
func (p *parser) attrValue(i int) (string, int, error) {
	b := p.b
	q := b[i]
	s := i + 1
	j := s
	for j < len(b) {
		c := b[j]
		if attrPlain[c] {
			j++
			continue
		}
		if c == q {
			return internValue(b[s:j]), j + 1, nil
		}
		if c == '"' || c == '\'' {
			j++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && n == 1 {
				return "", 0, syntaxErr(j, msgUTF8)
			}
			if !isChar(r) {
				return "", 0, syntaxErr(j, msgChar)
			}
			j += n
			continue
		}
		break
	}
	// Something to decode or normalise, or an error: go on in tbuf.
	base := len(p.tbuf)
	p.tbuf = append(p.tbuf, b[s:j]...)
	for j < len(b) {
		c := b[j]
		switch {
		case c == q:
			v := string(p.tbuf[base:])
			p.tbuf = p.tbuf[:base]
			return v, j + 1, nil
		case attrPlain[c] || c == '"' || c == '\'':
			p.tbuf = append(p.tbuf, c)
			j++
		case c == '<':
			return "", 0, syntaxErr(j, msgLTInAttr)
		case c == '&':
			var err error
			if j, err = p.ref(j); err != nil {
				return "", 0, err
			}
		case c == '\t' || c == '\n':
			p.tbuf = append(p.tbuf, ' ')
			j++
		case c == '\r':
			p.tbuf = append(p.tbuf, ' ')
			j++
			if j < len(b) && b[j] == '\n' {
				j++
			}
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && n == 1 {
				return "", 0, syntaxErr(j, msgUTF8)
			}
			if !isChar(r) {
				return "", 0, syntaxErr(j, msgChar)
			}
			p.tbuf = append(p.tbuf, b[j:j+n]...)
			j += n
		default:
			return "", 0, syntaxErr(j, msgChar)
		}
	}
	return "", 0, syntaxErr(j, msgEOF)
}

// decl parses the XML declaration at b[i] and returns the offset after
// it: version 1.0, then optionally encoding (UTF-8) and standalone.
func (p *parser) decl(i int) (int, error) {
	b := p.b
	const open = "<?xml"
	if !bytes.HasPrefix(b[i:], []byte(open)) || i+len(open) >= len(b) {
		return 0, syntaxErr(i, msgPI)
	}
	if c := b[i+len(open)]; !isSpace(c) {
		if c >= utf8.RuneSelf || nameChar[c] || c == ':' {
			return 0, syntaxErr(i, msgPI) // a target that starts with xml
		}
		return 0, syntaxErr(i, msgDecl)
	}
	j := i + len(open)
	// Pseudo-attributes in order: version, then encoding, then
	// standalone, each at most once.
	next := 0
	for {
		k := j
		for k < len(b) && isSpace(b[k]) {
			k++
		}
		if k+1 < len(b) && b[k] == '?' && b[k+1] == '>' && next > 0 {
			return k + 2, nil
		}
		if k == j {
			return 0, syntaxErr(k, msgDecl)
		}
		ns := k
		for k < len(b) && 'a' <= b[k] && b[k] <= 'z' {
			k++
		}
		name := b[ns:k]
		for k < len(b) && isSpace(b[k]) {
			k++
		}
		if k >= len(b) || b[k] != '=' {
			return 0, syntaxErr(k, msgDecl)
		}
		k++
		for k < len(b) && isSpace(b[k]) {
			k++
		}
		if k >= len(b) || b[k] != '\'' && b[k] != '"' {
			return 0, syntaxErr(k, msgDecl)
		}
		vs := k + 1
		ve := bytes.IndexByte(b[vs:], b[k])
		if ve < 0 {
			return 0, syntaxErr(k, msgDecl)
		}
		v := b[vs : vs+ve]
		ok := false
		switch string(name) {
		case "version":
			ok, next = next == 0 && string(v) == "1.0", 1
		case "encoding":
			ok, next = next == 1 && bytes.EqualFold(v, []byte("UTF-8")), 2
		case "standalone":
			ok, next = next >= 1 && next <= 2 && (string(v) == "yes" || string(v) == "no"), 3
		}
		if !ok {
			return 0, syntaxErr(ns, msgDecl)
		}
		j = vs + ve + 1
	}
}
