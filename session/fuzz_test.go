package session

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"tether/internal/xmppxml"
	"tether/sdkproto"
)

// memConn is a net.Conn that reads a fixed input in chunks of at most
// chunk bytes (so the reader meets every split of the input) and discards
// writes.
type memConn struct {
	r     *bytes.Reader
	chunk int
}

func (c *memConn) Read(p []byte) (int, error) {
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}
func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

const header = "<?xml version='1.0'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

// streamSeeds are real client streams (and broken ones).
var streamSeeds = []string{
	header + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
	header + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
	header + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone1</resource></bind></iq><enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>",
	header + "<message to='acme.localhost' id='m1'><body>hi &amp; &lt;3</body><data xmlns='urn:tether:data:0'>{\"a\":1}</data><request xmlns='urn:xmpp:receipts'/></message> \n\t<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='3'/></stream:stream>",
	header + "<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/>",
	header + "<message><body></message>",
	header + "text between stanzas<presence/>",
	header + "<![CDATA[x]]><presence/>",
	header + "<!-- comment --><presence/>",
	header + "<?pi x?><presence/>",
	header + "<foo:bar/>",
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

// knownReadError reports whether err is one the session classifies
// (readFailure): anything else would count as a lost connection, which
// stream management may resume.
func knownReadError(err error) bool {
	return errors.Is(err, errTooLarge) || errors.Is(err, errNotWellFormed) ||
		errors.Is(err, errStreamEnd) || errors.Is(err, io.EOF)
}

// FuzzStreamReader feeds arbitrary bytes (repeated rep times, read in
// chunks of chunk bytes) to the TCP transport's element reader: it must
// never panic, always end (each call consumes input), and fail only with
// the errors the session knows.
func FuzzStreamReader(f *testing.F) {
	for i, s := range streamSeeds {
		f.Add([]byte(s), uint8(1), uint8(i*37))
	}
	f.Add([]byte(header+"<message><body>"+strings.Repeat("y", 4096)), uint8(17), uint8(255)) // over 64 KiB
	f.Fuzz(func(t *testing.T, data []byte, rep, chunk uint8) {
		if len(data) > 64<<10 {
			return
		}
		in := bytes.Repeat(data, max(int(rep), 1))
		tr := newTCPTransport(&memConn{r: bytes.NewReader(in), chunk: int(chunk) + 1}, true)
		for calls := 0; ; calls++ {
			if calls > len(in)+1 {
				t.Fatalf("%d elements from %d bytes: the reader does not advance", calls, len(in))
			}
			e, err := tr.next()
			if err != nil {
				if !knownReadError(err) {
					t.Fatalf("unclassified read error %T: %v", err, err)
				}
				if errors.Is(err, errTooLarge) && len(in) <= sdkproto.MaxStanzaBytes {
					t.Fatalf("errTooLarge from %d bytes", len(in))
				}
				return
			}
			if e == nil {
				t.Fatal("nil element without an error")
			}
			if e != keepalive && e.Name.Local == "" {
				t.Fatalf("element without a name: %+v", e)
			}
			checkDepth(t, e, 0)
		}
	})
}

func checkDepth(t *testing.T, e *element, depth int) {
	if depth > xmppxml.MaxDepth+1 {
		t.Fatalf("element nested %d deep, over the limit %d", depth, xmppxml.MaxDepth)
	}
	for _, c := range e.Children {
		checkDepth(t, c, depth+1)
	}
}

// FuzzParseFrame: a WebSocket frame parses to one named element or fails
// with errNotWellFormed, never panics; a frame that parses has only
// whitespace around its element.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
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
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 256<<10 {
			return
		}
		e, err := parseFrame(b)
		if err != nil {
			if !errors.Is(err, errNotWellFormed) {
				t.Fatalf("error %v, want errNotWellFormed", err)
			}
			if e != nil {
				t.Fatal("an element with an error")
			}
			return
		}
		if e == nil || e.Name.Local == "" {
			t.Fatalf("no element and no error: %+v", e)
		}
		checkDepth(t, e, 0)
	})
}

// FuzzText checks xmlBuf.text against encoding/xml: what a parser reads
// back from the escaped text is what xml.EscapeText's output reads back as.
func FuzzText(f *testing.F) {
	for _, s := range []string{"", "plain", `{"ts":1,"seq":2}`, "a<b>&c\r\nd\te", "\x00\x01\x1f", "\xff\xfe", "é漢字🙂", "\uFFFE\uFFFF\uFFFD", "]]>", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b xmlBuf
		b.text(s)
		var want bytes.Buffer
		xml.EscapeText(&want, []byte(s))
		got, err := readText(b.String())
		if err != nil {
			t.Fatalf("text(%q) = %q, not well-formed: %v", s, b.String(), err)
		}
		exp, err := readText(want.String())
		if err != nil {
			t.Fatalf("xml.EscapeText(%q): %v", s, err)
		}
		if got != exp {
			t.Fatalf("text(%q) reads back as %q, xml.EscapeText's as %q", s, got, exp)
		}
		if strings.ContainsAny(s, `"'`) && !strings.ContainsAny(b.String(), `"'`) {
			t.Fatalf("text(%q) = %q escaped quotes", s, b.String())
		}
	})
}

func readText(esc string) (string, error) {
	var v struct {
		T string `xml:",chardata"`
	}
	err := xml.Unmarshal([]byte("<a>"+esc+"</a>"), &v)
	return v.T, err
}
