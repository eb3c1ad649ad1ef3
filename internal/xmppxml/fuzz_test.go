package xmppxml_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"tether/internal/xmppxml"
)

// streamSeeds are real client streams (and broken ones), as the session
// package's reader meets them.
var streamSeeds = []string{
	header + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
	header + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
	header + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone1</resource></bind></iq><enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>",
	header + "<message to='acme.localhost' id='m1'><body>hi &amp; &lt;3</body><data xmlns='urn:tether:data:0'>{\"a\":1}</data><request xmlns='urn:xmpp:receipts'/></message> \n\t<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='3'/></stream:stream>",
	header + "<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/>",
	header + "<message><body></message>",
	header + "<a><b><c/></b></a><a><b></c></a>",
	header + "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><presence/>",
	header + "<s:stream xmlns:s='http://etherx.jabber.org/streams'/><stream xmlns='urn:x'/>",
	header + "text between stanzas<presence/>",
	header + "<![CDATA[x]]><presence/>",
	header + "<![CDATA[ ]]><presence/>",
	header + "<!-- comment --><presence/>",
	header + "<?pi x?><presence/>",
	header + "<foo:bar/>",
	header + "<a x='1\r\n2' y='&#9;'>a\r\nb<![CDATA[c]]>&#xD;</a>",
	"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
	"<?xml version='1.1'?><stream:stream/>",
	"<?xml version='1.0' encoding='latin1'?><stream:stream/>",
	"<!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream/>",
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	header + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40),
	header + "<message><body>" + strings.Repeat("x", 1000) + "</body></message>",
	"",
	"   \n",
}

// FuzzStream feeds a stream whole and in pieces: what Next finds must
// not depend on how the input arrives, and it must never panic or stall.
func FuzzStream(f *testing.F) {
	for i, s := range streamSeeds {
		f.Add([]byte(s), uint8(i), uint8(i*37))
	}
	f.Fuzz(func(t *testing.T, in []byte, step, seed uint8) {
		if len(in) > 16<<10 {
			return
		}
		want := runStream(in, whole)
		if last := want[len(want)-1]; last == "no progress" || strings.HasPrefix(last, "bad n") || strings.HasPrefix(last, "error: unexpected") {
			t.Fatalf("whole input: %q", want)
		}
		pieces := []func(int) int{
			func(int) int { return int(step)%7 + 1 },
			func(have int) int { return (have*int(seed)+int(step))%13 + 1 },
		}
		for k, feed := range pieces {
			if got := runStream(in, feed); !slices.Equal(got, want) {
				t.Fatalf("fed in pieces (%d):\n%q\nwhole:\n%q", k, got, want)
			}
		}
	})
}

// frameSeeds are WebSocket frames (and broken ones).
var frameSeeds = []string{
	"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='acme.localhost' version='1.0'/>",
	"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
	"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biwsbj1hbGljZSxyPWFiYw==</auth>",
	"<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone1</resource></bind></iq>",
	"<message xmlns='jabber:client' to='acme.localhost' id='m1'><body>a &lt; b</body><reply xmlns='urn:xmpp:reply:0' id='x'/></message>",
	" <presence xmlns='jabber:client'/>\n",
	"<?xml version='1.0'?><presence/>",
	"<message><body></message>",
	"<message/><message/>",
	"<presence/>trailing",
	"not xml",
	"<a:b/>",
	"<!-- c --><presence/>",
	"<![CDATA[x]]>",
	"",
	strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40),
	"<p:a xmlns:p='u' xmlns:q='v' p:x='1' q:x='&#65;' xml:lang='en'><q:b xmlns=''>t<![CDATA[<]]>&amp;\r\n</q:b></p:a>",
	"<a x='\t\n'>\u00e9&#x1F600;</a>",
}

// FuzzDifferential compares ParseFrame with encoding/xml in strict mode,
// read the way the session package read frames before. Where both accept
// the trees must match; where one rejects what the other accepts, the
// reason must be one of the known differences (see knownDifference).
func FuzzDifferential(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	for _, tc := range frameCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 16<<10 {
			return
		}
		got, err := xmppxml.ParseFrame(in)
		want, refErr := reference(in)
		switch {
		case refErr == errExcluded:
		case err != nil && refErr != nil:
		case err != nil:
			var se *xmppxml.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SyntaxError", err)
			}
			if !knownDifference(in, se.Msg) {
				t.Fatalf("rejected (%v) what encoding/xml accepts as %s", err, dump(want))
			}
		case refErr != nil:
			if !nonASCIIName(in) {
				t.Fatalf("accepted as %s what encoding/xml rejects: %v", dump(got), refErr)
			}
		default:
			if g, w := normalise(got), normalise(want); g != w {
				t.Fatalf("trees differ:\n got %s\nwant %s", g, w)
			}
		}
	})
}

// knownDifference reports whether rejecting in with msg is one of the
// rules encoding/xml does not apply: Namespaces in XML (undeclared
// prefixes, reserved prefixes and namespaces, empty prefix bindings,
// QName syntax), unique attributes, whitespace between attributes, character references to surrogates
// (encoding/xml turns them into U+FFFD), the strict XML declaration, and
// names outside ASCII (encoding/xml uses the XML 1.0 fourth edition's
// tables, this package the fifth edition's).
func knownDifference(in []byte, msg string) bool {
	switch msg {
	case xmppxml.MsgUndeclared, xmppxml.MsgReserved, xmppxml.MsgEmptyNS,
		xmppxml.MsgQName, xmppxml.MsgDupAttr, xmppxml.MsgDecl, xmppxml.MsgAttrSpace:
		return true
	case xmppxml.MsgCharRef:
		return true // checked below: encoding/xml accepted it, so it is a surrogate
	case xmppxml.MsgName, xmppxml.MsgTag, xmppxml.MsgAfterLT:
		return nonASCIIName(in)
	}
	return false
}

func nonASCIIName(in []byte) bool {
	return !isASCII(in)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// normalise dumps a tree with tabs and newlines in attribute values and
// namespaces turned into spaces: this package normalises literal ones (XML 1.0
// section 3.3.3), encoding/xml keeps them, and after parsing a literal
// tab and a &#9; are the same to encoding/xml.
func normalise(e *xmppxml.Element) string {
	r := strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")
	var walk func(e *xmppxml.Element)
	walk = func(e *xmppxml.Element) {
		// Namespaces are attribute values too.
		e.Name.Space = r.Replace(e.Name.Space)
		for i := range e.Attrs {
			e.Attrs[i].Name.Space = r.Replace(e.Attrs[i].Name.Space)
			e.Attrs[i].Value = r.Replace(e.Attrs[i].Value)
		}
		for _, c := range e.Children {
			walk(c)
		}
	}
	walk(e)
	return dump(e)
}

// errExcluded marks input the comparison leaves out: an element named
// xmlns with no prefix, which encoding/xml leaves without a namespace.
var errExcluded = errors.New("excluded")

// reference parses a frame with encoding/xml: strict mode, an XML
// declaration only first, whitespace around one element, and no
// comments, processing instructions or directives (which encoding/xml
// takes but restricted XML does not).
func reference(in []byte) (*xmppxml.Element, error) {
	d := xml.NewDecoder(bytes.NewReader(in))
	d.Strict = true
	var root *xmppxml.Element
	var stack []*xmppxml.Element
	var texts []*strings.Builder
	for n := 0; ; n++ {
		off := d.InputOffset()
		tok, err := d.Token()
		if err == io.EOF {
			if root == nil || len(stack) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			if root != nil && len(stack) == 0 {
				return nil, errors.New("second element")
			}
			if len(stack) > xmppxml.MaxDepth {
				return nil, errors.New("too deep")
			}
			if tk.Name.Space == "" && tk.Name.Local == "xmlns" {
				return nil, errExcluded // encoding/xml gives it no namespace

			}
			tk = tk.Copy()
			e := &xmppxml.Element{Name: tk.Name, Attrs: tk.Attr}
			if len(e.Attrs) == 0 {
				e.Attrs = nil
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, e)
			} else {
				root = e
			}
			stack = append(stack, e)
			texts = append(texts, new(strings.Builder))
		case xml.EndElement:
			e := stack[len(stack)-1]
			e.Text = texts[len(texts)-1].String()
			stack, texts = stack[:len(stack)-1], texts[:len(texts)-1]
		case xml.CharData:
			if len(stack) > 0 {
				texts[len(texts)-1].Write(tk)
				continue
			}
			for _, c := range tk {
				if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
					return nil, errors.New("text outside the element")
				}
			}
			if bytes.HasPrefix(in[off:], []byte("<![CDATA[")) {
				return nil, errors.New("CDATA outside the element")
			}
		case xml.ProcInst:
			if tk.Target != "xml" || n != 0 || off != 0 {
				return nil, errors.New("processing instruction")
			}
		default:
			return nil, errors.New("comment or directive")
		}
	}
}
