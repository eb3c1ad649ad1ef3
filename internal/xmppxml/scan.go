package xmppxml

import (
	"bytes"
	"sync"
)

// Scanner states.
const (
	stStart   = iota // at the '<' that starts an item
	stContent        // in character data inside an element
	stTag            // in a start tag, outside quotes
	stQuote1         // in a '-quoted attribute value
	stQuote2         // in a "-quoted attribute value
	stEndTag         // in an end tag
	stCDATA          // in a CDATA section
	stDecl           // in the XML declaration
	stProlog         // between the XML declaration and the header
)

const cdataOpen = "<![CDATA["

// scanState is the progress of the boundary scan over a partial item:
// where to go on, in which state, at which depth, and how many elements
// and attribute separators it has seen (the parser sizes its allocations
// from those). The zero value starts an item.
//
// To match end tags to start tags as soon as they are complete, it keeps
// where the names of the open elements start: the item's own element
// always at offset 1, those below it in tags, which comes from tagPool
// once an element is open inside the item's element and goes back when
// the scan ends (release). The offsets stay valid because the caller
// calls again with the same bytes extended.
type scanState struct {
	off   int
	etag  int       // in stEndTag: where the end tag's name starts
	tags  *tagStack // tags[d-2]: where the name of the open element at depth d starts
	nelem int32
	nattr int32
	depth uint8
	st    uint8
}

// tagStack holds the name offsets of the open elements below an item's
// element.
type tagStack [MaxDepth]int

var tagPool = sync.Pool{New: func() any { return new(tagStack) }}

// release gives the tag stack back; the scan state is done with.
func (sc *scanState) release() {
	if sc.tags != nil {
		tagPool.Put(sc.tags)
		sc.tags = nil
	}
}

// push records that the element at the new depth has its name at off.
func (sc *scanState) push(off int) {
	if sc.depth < 2 {
		return // the item's element: its name is at 1
	}
	if sc.tags == nil {
		sc.tags = tagPool.Get().(*tagStack)
	}
	sc.tags[sc.depth-2] = off
}

// matchEnd checks the end tag b[s:e] (from after "</" up to the '>')
// against the start tag of the element open at the current depth: the
// same name as written, then only whitespace.
func (sc *scanState) matchEnd(b []byte, s, e int) error {
	n := s
	for n < e && !isSpace(b[n]) {
		n++
	}
	for k := n; k < e; k++ {
		if !isSpace(b[k]) {
			return syntaxErr(k, msgEndTag)
		}
	}
	start := 1
	if sc.depth >= 2 {
		start = sc.tags[sc.depth-2]
	}
	name := b[s:n]
	// The start tag lies before the end tag, whole: its name ends at
	// whitespace, '/' or '>'.
	if len(name) == 0 || !bytes.HasPrefix(b[start:], name) {
		return syntaxErr(s, msgEndTag)
	}
	if c := b[start+len(name)]; !isSpace(c) && c != '/' && c != '>' {
		return syntaxErr(s, msgEndTag)
	}
	return nil
}

// run scans b, which starts with an item, from where the last call
// stopped, for the end of the item. It checks the lexical structure only
// as far as it needs to find the end, plus a few rules that are cheap
// here (no comments, PIs or DOCTYPE; no '<' in tags and attribute
// values; the depth limit); the parser checks the rest. header says the
// item is the stream header (with first: at the very start of the
// stream, so an XML declaration may come first). It checks each end tag
// against its start tag as soon as it is complete. With a Stream, it
// also has the Stream check the item's start tag as soon as that is
// complete (see Stream.checkStanza). It returns the item's length, or
// ErrNeedMore with the progress saved; the caller releases the state
// when the scan ends either way.
func (sc *scanState) run(b []byte, header, first bool, s *Stream) (int, error) {
	i := sc.off
	for {
		switch sc.st {
		case stStart, stContent, stProlog:
			switch sc.st {
			case stContent:
				j := bytes.IndexByte(b[i:], '<')
				if j < 0 {
					sc.off = len(b)
					return 0, ErrNeedMore
				}
				i += j
			case stProlog:
				for i < len(b) && isSpace(b[i]) {
					i++
				}
				if i == len(b) {
					sc.off = i
					return 0, ErrNeedMore
				}
				if b[i] != '<' {
					return 0, syntaxErr(i, msgBeforeHeader)
				}
			}
			if i+1 >= len(b) {
				sc.off = i
				return 0, ErrNeedMore
			}
			switch c := b[i+1]; {
			case c < 0x80 && nameStart[c] || c >= 0x80 || c == ':':
				sc.depth++
				sc.nelem++
				if sc.depth > MaxDepth+1 {
					return 0, syntaxErr(i, msgDepth)
				}
				if !header {
					sc.push(i + 1)
				}
				sc.st = stTag
				i += 2
			case c == '/':
				if header {
					return 0, syntaxErr(i, msgBeforeHeader)
				}
				sc.st = stEndTag
				i += 2
				sc.etag = i
			case c == '!':
				if header {
					return 0, syntaxErr(i, msgMarkup)
				}
				n := min(len(b)-i, len(cdataOpen))
				if string(b[i:i+n]) != cdataOpen[:n] {
					return 0, syntaxErr(i, msgMarkup)
				}
				if n < len(cdataOpen) {
					sc.off = i
					return 0, ErrNeedMore
				}
				sc.st = stCDATA
				i += len(cdataOpen)
			case c == '?':
				if !header || !first || sc.st != stStart {
					return 0, syntaxErr(i, msgPI)
				}
				const open = "<?xml"
				n := min(len(b)-i, len(open))
				if string(b[i:i+n]) != open[:n] {
					return 0, syntaxErr(i, msgPI)
				}
				if n < len(open) || i+n == len(b) {
					sc.off = i
					return 0, ErrNeedMore
				}
				if c := b[i+n]; c >= 0x80 || nameChar[c] || c == ':' {
					return 0, syntaxErr(i, msgPI)
				}
				sc.st = stDecl
				i += len(open)
			default:
				return 0, syntaxErr(i+1, msgAfterLT)
			}
		case stTag:
			for ; i < len(b); i++ {
				c := b[i]
				if !tagSpecial[c] {
					continue
				}
				switch c {
				case '>':
					if s != nil && !header && sc.depth == 1 {
						if err := s.checkStanza(b[:i+1]); err != nil {
							return 0, err
						}
					}
					if b[i-1] == '/' {
						sc.depth--
					}
					i++
					if header || sc.depth == 0 {
						return i, nil
					}
					sc.st = stContent
				case '\'':
					sc.st = stQuote1
					i++
				case '"':
					sc.st = stQuote2
					i++
				case '=':
					sc.nattr++
					continue
				case '<':
					return 0, syntaxErr(i, msgLTInTag)
				case '/':
					// Only as the end of a self-closing tag.
					if i+1 == len(b) {
						break
					}
					if b[i+1] != '>' {
						return 0, syntaxErr(i, msgTag)
					}
					continue
				}
				break
			}
			if sc.st == stTag {
				sc.off = i
				return 0, ErrNeedMore
			}
		case stQuote1, stQuote2:
			q := byte('\'')
			if sc.st == stQuote2 {
				q = '"'
			}
			j := bytes.IndexByte(b[i:], q)
			v := b[i:]
			if j >= 0 {
				v = v[:j]
			}
			if k := bytes.IndexByte(v, '<'); k >= 0 {
				return 0, syntaxErr(i+k, msgLTInAttr)
			}
			if j < 0 {
				sc.off = len(b)
				return 0, ErrNeedMore
			}
			i += j + 1
			sc.st = stTag
		case stEndTag:
			j := bytes.IndexByte(b[i:], '>')
			if j < 0 {
				sc.off = len(b)
				return 0, ErrNeedMore
			}
			i += j
			if sc.depth == 0 { // the stream's end tag
				return i + 1, nil
			}
			if err := sc.matchEnd(b, sc.etag, i); err != nil {
				return 0, err
			}
			i++
			sc.depth--
			if sc.depth == 0 {
				return i, nil
			}
			sc.st = stContent
		case stCDATA:
			j := bytes.Index(b[i:], []byte("]]>"))
			if j < 0 {
				sc.off = max(i, len(b)-2)
				return 0, ErrNeedMore
			}
			i += j + 3
			if sc.depth == 0 { // at stream level
				return i, nil
			}
			sc.st = stContent
		case stDecl:
			j := bytes.Index(b[i:], []byte("?>"))
			if j < 0 {
				sc.off = max(i, len(b)-1)
				return 0, ErrNeedMore
			}
			i += j + 2
			sc.st = stProlog
		}
	}
}
