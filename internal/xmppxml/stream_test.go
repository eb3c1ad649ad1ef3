package xmppxml_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/internal/xmppxml"
)

const header = "<?xml version='1.0'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"

const headerDump = "Header {http://etherx.jabber.org/streams}stream[to=\"acme.localhost\" version=\"1.0\" xmlns=\"jabber:client\" {xmlns}stream=\"http://etherx.jabber.org/streams\"]"

func TestStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"sasl", header + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>", []string{
			headerDump,
			`Element {urn:ietf:params:xml:ns:xmpp-sasl}auth[xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN"]"AGFsaWNlAHNlY3JldA=="`,
			"error: ",
		}},
		{"bind", header + "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone1</resource></bind></iq><enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>", []string{
			headerDump,
			`Element {jabber:client}iq[type="set" id="b1"]({urn:ietf:params:xml:ns:xmpp-bind}bind[xmlns="urn:ietf:params:xml:ns:xmpp-bind"]({urn:ietf:params:xml:ns:xmpp-bind}resource"phone1"))`,
			`Element {urn:xmpp:sm:3}enable[xmlns="urn:xmpp:sm:3" resume="true"]`,
			`Element {jabber:client}presence`,
			"error: ",
		}},
		{"message and end", header + "<message to='acme.localhost' id='m1'><body>hi &amp; &lt;3</body><data xmlns='urn:tether:data:0'>{\"a\":1}</data><request xmlns='urn:xmpp:receipts'/></message> \n\t<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='3'/></stream:stream>", []string{
			headerDump,
			`Element {jabber:client}message[to="acme.localhost" id="m1"]({jabber:client}body"hi & <3" {urn:tether:data:0}data[xmlns="urn:tether:data:0"]"{\"a\":1}" {urn:xmpp:receipts}request[xmlns="urn:xmpp:receipts"])`,
			"Whitespace",
			`Element {urn:xmpp:sm:3}r[xmlns="urn:xmpp:sm:3"]`,
			`Element {urn:xmpp:sm:3}a[xmlns="urn:xmpp:sm:3" h="3"]`,
			"End",
		}},
		{"no declaration", "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>\n<presence/>", []string{
			`Header {http://etherx.jabber.org/streams}stream[{xmlns}stream="http://etherx.jabber.org/streams" xmlns="jabber:client"]`,
			"Whitespace", "Element {jabber:client}presence", "error: ",
		}},
		{"declaration and whitespace", "<?xml version=\"1.0\" encoding='utf-8' standalone='yes' ?>\r\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>", []string{
			`Header {http://etherx.jabber.org/streams}stream[{xmlns}stream="http://etherx.jabber.org/streams"]`, "error: ",
		}},
		{"self-closing header", "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>", []string{
			`Header {http://etherx.jabber.org/streams}stream[{xmlns}stream="http://etherx.jabber.org/streams"]`, "End",
		}},
		{"end tag with space", header + "</stream:stream >", []string{headerDump, "End"}},
		{"resume", header + "<resume xmlns='urn:xmpp:sm:3' previd='abc' h='2'/>", []string{
			headerDump, `Element {urn:xmpp:sm:3}resume[xmlns="urn:xmpp:sm:3" previd="abc" h="2"]`, "error: ",
		}},
		{"whitespace CDATA keepalive", header + "<![CDATA[ \n]]><presence/>", []string{headerDump, "Whitespace", "Element {jabber:client}presence", "error: "}},
		{"stream prefix inside", header + "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>", []string{
			headerDump, `Element {http://etherx.jabber.org/streams}error({urn:ietf:params:xml:ns:xmpp-streams}conflict[xmlns="urn:ietf:params:xml:ns:xmpp-streams"])`, "error: ",
		}},
		{"leading whitespace, no declaration", " <stream:stream xmlns:stream='http://etherx.jabber.org/streams'>", []string{"Whitespace", `Header {http://etherx.jabber.org/streams}stream[{xmlns}stream="http://etherx.jabber.org/streams"]`, "error: "}},
		{"long body", header + "<message><body>" + strings.Repeat("x", 1000) + "</body></message>", []string{
			headerDump, `Element {jabber:client}message({jabber:client}body"` + strings.Repeat("x", 1000) + `")`, "error: ",
		}},
		{"deep ok", header + strings.Repeat("<a>", 33) + strings.Repeat("</a>", 33), []string{headerDump, "Element " + nest(33), "error: "}},

		{"mismatched end", header + "<message><body></message>", []string{headerDump, "error: " + xmppxml.MsgEndTag}},
		{"mismatched end closes", header + "<message><body></message></body>", []string{headerDump, "error: " + xmppxml.MsgEndTag}},
		{"mismatched end deeper", header + "<a><b></c>", []string{headerDump, "error: " + xmppxml.MsgEndTag}},
		{"end tag at stream level", header + "</message>", []string{headerDump, "error: " + xmppxml.MsgEndTag}},
		{"stream in stream", header + "<stream:stream to='b' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, header's prefix", header + "<stream:stream>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, other prefix", header + "<s:stream xmlns:s='http://etherx.jabber.org/streams'>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, default namespace", header + "<stream xmlns='http://etherx.jabber.org/streams'>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, self-closing", header + "<stream:stream/>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, closed", header + "<stream:stream></stream:stream>", []string{headerDump, "error: " + xmppxml.MsgNestedStream}},
		{"stream in stream, bad tag", header + "<stream:stream a='1' a='2'>", []string{headerDump, "error: " + xmppxml.MsgDupAttr}},
		{"stream element elsewhere", header + "<stream xmlns='jabber:client'>x</stream><p:stream xmlns:p='urn:p'/><stream:streams/><message><stream:stream/></message>", []string{
			headerDump, `Element {jabber:client}stream[xmlns="jabber:client"]"x"`, `Element {urn:p}stream[{xmlns}p="urn:p"]`,
			`Element {http://etherx.jabber.org/streams}streams`, `Element {jabber:client}message({http://etherx.jabber.org/streams}stream)`, "error: ",
		}},
		{"text between stanzas", header + "text between stanzas<presence/>", []string{headerDump, "error: text at stream level"}},
		{"text CDATA", header + "<![CDATA[x]]><presence/>", []string{headerDump, "error: text at stream level"}},
		{"comment", header + "<!-- comment --><presence/>", []string{headerDump, "error: " + xmppxml.MsgMarkup}},
		{"pi", header + "<?pi x?><presence/>", []string{headerDump, "error: " + xmppxml.MsgPI}},
		{"declaration after header", header + "<?xml version='1.0'?>", []string{headerDump, "error: " + xmppxml.MsgPI}},
		{"undeclared prefix", header + "<foo:bar/>", []string{headerDump, "error: " + xmppxml.MsgUndeclared}},
		{"version 1.1", "<?xml version='1.1'?><stream:stream/>", []string{"error: " + xmppxml.MsgDecl}},
		{"latin1", "<?xml version='1.0' encoding='latin1'?><stream:stream/>", []string{"error: " + xmppxml.MsgDecl}},
		{"no version", "<?xml encoding='UTF-8'?><stream:stream/>", []string{"error: " + xmppxml.MsgDecl}},
		{"doctype", "<!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream/>", []string{"error: " + xmppxml.MsgMarkup}},
		{"declaration after whitespace", " <?xml version='1.0'?><stream:stream/>", []string{"Whitespace", "error: " + xmppxml.MsgPI}},
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []string{"error: text at stream level"}},
		{"tls hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", []string{"error: text at stream level"}},
		{"too deep", header + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40), []string{headerDump, "error: " + xmppxml.MsgDepth}},
		{"empty", "", []string{"error: "}},
		{"whitespace only", "   \n", []string{"Whitespace", "error: "}},
		{"end before header", "</stream:stream>", []string{"error: expected the stream header"}},
		{"wrong end tag", header + "</stream:foo>", []string{headerDump, "error: end tag does not match its start tag"}},
		{"end tag prefix differs", "<s:stream xmlns:s='http://etherx.jabber.org/streams'></stream:stream>", []string{`Header {http://etherx.jabber.org/streams}stream[{xmlns}s="http://etherx.jabber.org/streams"]`, "error: end tag does not match its start tag"}},
		{"partial stanza", header + "<message><body>hi", []string{headerDump, "error: need more"}},
		{"partial header", "<?xml version='1.0'?><stream:str", []string{"error: need more"}},
		{"lt in attribute", header + "<message to='a<b'/>", []string{headerDump, "error: < in an attribute value"}},
		{"self-closing slash space", header + "<a/ >", []string{headerDump, "error: " + xmppxml.MsgTag}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, runStream([]byte(tc.in), whole))
			for _, step := range []int{1, 2, 3, 7} {
				require.Equal(t, tc.want, runStream([]byte(tc.in), func(int) int { return step }), "fed %d bytes at a time", step)
			}
		})
	}
}

// TestStreamEarlyError feeds a stanza one byte at a time after the
// header: Next must say need more until the offending tag is complete,
// and fail on that very call, rather than wait for bytes that may never
// come.
func TestStreamEarlyError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, bad, msg string // bad: the input up to the end of the offending tag
	}{
		{"mismatched end", "<message to='a'><body></message>", "<message to='a'><body></message>", xmppxml.MsgEndTag},
		{"mismatched end, spaces", "<message><body></message \n>", "<message><body></message \n>", xmppxml.MsgEndTag},
		{"mismatched deep", "<a><b></c><d/></b></a>", "<a><b></c>", xmppxml.MsgEndTag},
		{"mismatched after children", "<a><b><c/><d x='>'>t</d></a></b>", "<a><b><c/><d x='>'>t</d></a>", xmppxml.MsgEndTag},
		{"mismatched item", "<a><b/></b></a>", "<a><b/></b>", xmppxml.MsgEndTag},
		{"mismatched prefix", "<a><x:b xmlns:x='u'></y:b>", "<a><x:b xmlns:x='u'></y:b>", xmppxml.MsgEndTag},
		{"stream end tag inside", "<a></stream:stream>", "<a></stream:stream>", xmppxml.MsgEndTag},
		{"end tag at stream level", "</message>", "</message>", xmppxml.MsgEndTag},
		{"stream in stream", "<stream:stream to='x' xmlns:stream='http://etherx.jabber.org/streams'><message/>", "<stream:stream to='x' xmlns:stream='http://etherx.jabber.org/streams'>", xmppxml.MsgNestedStream},
		{"stream in stream, header's binding", "<stream:stream><presence/>", "<stream:stream>", xmppxml.MsgNestedStream},
		{"stream in stream, self-closing", "<stream:stream/>", "<stream:stream/>", xmppxml.MsgNestedStream},
		{"stream in stream, other prefix", "<s:stream xmlns:s='http://etherx.jabber.org/streams' x='>'>", "<s:stream xmlns:s='http://etherx.jabber.org/streams' x='>'>", xmppxml.MsgNestedStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in, bad := tc.in, len(tc.bad)
			var s xmppxml.Stream
			n, kind, _, err := s.Next([]byte(header))
			require.NoError(t, err)
			require.Equal(t, xmppxml.KindHeader, kind)
			require.Equal(t, len(header), n)
			for have := 1; have <= len(in); have++ {
				_, _, _, err := s.Next([]byte(in[:have]))
				if have < bad {
					require.ErrorIs(t, err, xmppxml.ErrNeedMore, "after %d bytes", have)
					continue
				}
				require.ErrorIs(t, err, xmppxml.ErrNotWellFormed, "after %d bytes", have)
				require.Equal(t, tc.msg, errString(err))
				return
			}
			t.Fatal("no error")
		})
	}
}

// TestStreamTagStack checks the tag stack comes and goes with the
// partial item: none while idle or after Reset.
func TestStreamTagStack(t *testing.T) {
	t.Parallel()
	var s xmppxml.Stream
	_, _, _, err := s.Next([]byte(header))
	require.NoError(t, err)
	in := "<a><b><c>t</c></b></a>"
	for have := 1; have < len(in); have++ {
		_, _, _, err := s.Next([]byte(in[:have]))
		require.ErrorIs(t, err, xmppxml.ErrNeedMore)
		require.Equal(t, have >= len("<a><b"), xmppxml.HasTagStack(&s), "after %d bytes", have)
	}
	n, kind, _, err := s.Next([]byte(in))
	require.NoError(t, err)
	require.Equal(t, xmppxml.KindElement, kind)
	require.Equal(t, len(in), n)
	require.False(t, xmppxml.HasTagStack(&s))
	_, _, _, err = s.Next([]byte(in[:8]))
	require.ErrorIs(t, err, xmppxml.ErrNeedMore)
	require.True(t, xmppxml.HasTagStack(&s))
	s.Reset()
	require.False(t, xmppxml.HasTagStack(&s))
	_, _, _, err = s.Next([]byte(header))
	require.NoError(t, err)
	_, _, _, err = s.Next([]byte("<a><b></c>"))
	require.ErrorIs(t, err, xmppxml.ErrNotWellFormed)
	require.False(t, xmppxml.HasTagStack(&s))
}

func nest(n int) string {
	if n == 1 {
		return "{jabber:client}a"
	}
	return "{jabber:client}a(" + nest(n-1) + ")"
}

func TestStreamReset(t *testing.T) {
	t.Parallel()
	var s xmppxml.Stream
	in := []byte(header)
	n, kind, _, err := s.Next(in)
	require.NoError(t, err)
	require.Equal(t, xmppxml.KindHeader, kind)
	require.Equal(t, len(in), n)
	require.True(t, s.Header())
	s.Reset()
	require.False(t, s.Header())
	n, kind, _, err = s.Next(in)
	require.NoError(t, err)
	require.Equal(t, xmppxml.KindHeader, kind)
	require.Equal(t, len(in), n)
	// After the end, Next keeps saying so.
	_, kind, _, err = s.Next([]byte("</stream:stream>"))
	require.NoError(t, err)
	require.Equal(t, xmppxml.KindEnd, kind)
	n, kind, _, err = s.Next([]byte("<presence/>"))
	require.NoError(t, err)
	require.Equal(t, xmppxml.KindEnd, kind)
	require.Zero(t, n)
}
