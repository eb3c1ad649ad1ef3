package sdkproto_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/sdkproto"
)

const streamHeader = `<?xml version='1.0'?><stream:stream from='acme.localhost' id='s1' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`

const gatewayMessage = `<message from='acme.localhost' to='alice@acme.localhost/phone1' id='MSGID' type='normal'>` +
	`<body>text &amp; more</body>` +
	`<data xmlns='urn:tether:data:0'>{"any":"json","lt":"&lt;"}</data>` +
	`<request xmlns='urn:xmpp:receipts'/>` +
	`<markable xmlns='urn:xmpp:chat-markers:0'/>` +
	`<delay xmlns='urn:xmpp:delay' from='acme.localhost' stamp='2026-11-22T10:00:00Z'/>` +
	`<expire xmlns='urn:tether:expire:0' at='2026-11-29T10:00:00.5Z'/>` +
	`<channel xmlns='urn:tether:channel:0'>alerts</channel>` +
	`</message>`

// readAll reads every element of a stream.
func readAll(t *testing.T, r io.Reader) ([]*sdkproto.Element, error) {
	t.Helper()
	rd := sdkproto.NewReader(r)
	var out []*sdkproto.Element
	for {
		e, err := rd.Next()
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func TestReaderStream(t *testing.T) {
	t.Parallel()
	in := streamHeader +
		`<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>` +
		"\n \t" + // whitespace keepalive
		gatewayMessage +
		`<!-- a comment --><r xmlns='urn:xmpp:sm:3'/>` +
		`</stream:stream>`
	els, err := readAll(t, strings.NewReader(in))
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, els, 4)

	require.Equal(t, xml.Name{Space: sdkproto.NSStream, Local: "stream"}, els[0].Name)
	require.Equal(t, "s1", els[0].AttrValue("id"))
	require.Empty(t, els[0].Children)
	require.Equal(t, "en", attr(els[0], "http://www.w3.org/XML/1998/namespace", "lang"))

	require.Equal(t, xml.Name{Space: sdkproto.NSStream, Local: "features"}, els[1].Name)
	mechs := els[1].Child(sdkproto.NSSASL, "mechanisms")
	require.NotNil(t, mechs)
	require.Len(t, mechs.Children, 2)
	require.Equal(t, "SCRAM-SHA-256", mechs.Children[0].Text)

	m := els[2]
	require.True(t, m.Is(sdkproto.NSClient, "message"))
	require.Equal(t, "text & more", m.Child(sdkproto.NSClient, "body").Text)
	require.Equal(t, `{"any":"json","lt":"<"}`, m.Child(sdkproto.NSData, "data").Text)
	require.True(t, els[3].Is(sdkproto.NSSM, "r"))
}

func attr(e *sdkproto.Element, space, local string) string {
	for _, a := range e.Attr {
		if a.Name.Space == space && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

func TestReaderErrors(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", sdkproto.MaxReceivedStanzaBytes)
	for _, tc := range []struct {
		name string
		in   string
		n    int // elements read before the error
		err  error
	}{
		{"clean end", streamHeader + `<a/></stream:stream>`, 2, io.EOF},
		{"no root, clean end", `<a/><b/>`, 2, io.EOF},
		{"truncated stream", streamHeader + `<a/>`, 2, io.ErrUnexpectedEOF},
		{"truncated element", streamHeader + `<message><body>hi`, 1, io.ErrUnexpectedEOF},
		{"too large", streamHeader + `<message><body>` + big + `</body></message>`, 1, sdkproto.ErrStanzaTooLarge},
		{"too large whitespace", streamHeader + strings.Repeat(" ", sdkproto.MaxReceivedStanzaBytes+1), 1, sdkproto.ErrStanzaTooLarge},
		{"just under the limit", streamHeader + `<m>` + big[:sdkproto.MaxReceivedStanzaBytes-len(`<m></m>`)] + `</m></stream:stream>`, 2, io.EOF},
		{"mismatched tags", streamHeader + `<a></b>`, 1, nil},
		{"text at top level", streamHeader + `hello<a/>`, 1, nil},
		{"doctype", `<!DOCTYPE x [<!ENTITY a "b">]><a/>`, 0, nil},
		{"undefined entity", streamHeader + `<a>&foo;</a>`, 1, nil},
		{"colon in local name", streamHeader + `<a:b:c xmlns:a='x'/>`, 1, nil},
		{"too deep", streamHeader + strings.Repeat("<a>", sdkproto.MaxDepth+1), 1, nil},
		{"invalid utf-8", streamHeader + "<a>\xff</a>", 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			els, err := readAll(t, strings.NewReader(tc.in))
			require.Len(t, els, tc.n)
			require.Error(t, err)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NotErrorIs(t, err, io.EOF)
			}
		})
	}
}

// After <proceed/> the TLS handshake starts on the same connection: the
// reader must not have consumed anything past the element.
func TestReaderDoesNotReadAhead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   io.Reader // the stream, then rest
		rest string
	}{
		{"plain", bytes.NewReader([]byte(streamHeader + `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>` + "\x16\x03\x01binary")), "\x16\x03\x01binary"},
		// Through a *bufio.Reader the Reader takes input up to each '>',
		// so what follows the element stays in the bufio.Reader.
		{"bufio", bufio.NewReader(strings.NewReader(streamHeader + "\n<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + "\x16\x03\x01binary>more")), "\x16\x03\x01binary>more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rd := sdkproto.NewReader(tc.in)
			_, err := rd.Next()
			require.NoError(t, err)
			e, err := rd.Next()
			require.NoError(t, err)
			require.True(t, e.Is(sdkproto.NSTLS, "proceed"))
			rest, _ := io.ReadAll(tc.in)
			require.Equal(t, tc.rest, string(rest))
		})
	}
}

func TestReaderReset(t *testing.T) {
	t.Parallel()
	in := bytes.NewReader([]byte(streamHeader + `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>` + streamHeader + `<stream:features/>`))
	rd := sdkproto.NewReader(in)
	for range 2 {
		_, err := rd.Next()
		require.NoError(t, err)
	}
	rd.Reset(in)
	h, err := rd.Next()
	require.NoError(t, err)
	require.Equal(t, "stream", h.Name.Local)
	f, err := rd.Next()
	require.NoError(t, err)
	require.Equal(t, "features", f.Name.Local)
}

func TestParseElementFrames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		frame string
		want  xml.Name
		bad   bool
	}{
		{"open", `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='acme.localhost' id='x' version='1.0'/>`, xml.Name{Space: sdkproto.NSFraming, Local: "open"}, false},
		{"features", `<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`, xml.Name{Space: sdkproto.NSStream, Local: "features"}, false},
		{"message", gatewayMessage, xml.Name{Space: "", Local: "message"}, false},
		{"message with ns", `<message xmlns='jabber:client' id='a'/>` + "\n", xml.Name{Space: sdkproto.NSClient, Local: "message"}, false},
		{"two elements", `<a/><b/>`, xml.Name{}, true},
		{"trailing text", `<a/>x`, xml.Name{}, true},
		{"empty", ``, xml.Name{}, true},
		{"stream header", `<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>`, xml.Name{}, true},
		{"unclosed", `<a>`, xml.Name{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := sdkproto.ParseElement([]byte(tc.frame))
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, e.Name)
		})
	}
	_, err := sdkproto.ParseElement(make([]byte, sdkproto.MaxReceivedStanzaBytes+1))
	require.ErrorIs(t, err, sdkproto.ErrStanzaTooLarge)
}

func TestParseMessage(t *testing.T) {
	t.Parallel()
	stamp := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		in   string
		want *sdkproto.Message
	}{
		{"gateway message", gatewayMessage, &sdkproto.Message{
			ID: "MSGID", From: "acme.localhost", Body: "text & more",
			Data:    json.RawMessage(`{"any":"json","lt":"<"}`),
			Channel: "alerts", Stamp: stamp,
			ExpiresAt:        time.Date(2026, 11, 29, 10, 0, 0, 5e8, time.UTC),
			ReceiptRequested: true, Markable: true,
		}},
		{"body only", `<message xmlns='jabber:client' id='m2'><body>hi</body></message>`,
			&sdkproto.Message{ID: "m2", Body: "hi"}},
		{"data only", `<message id='m3'><data xmlns='urn:tether:data:0'>[1,2]</data></message>`,
			&sdkproto.Message{ID: "m3", Data: json.RawMessage(`[1,2]`)}},
		{"bad stamp ignored", `<message id='m4'><body>x</body><delay xmlns='urn:xmpp:delay' stamp='yesterday'/></message>`,
			&sdkproto.Message{ID: "m4", Body: "x"}},
		{"body in another namespace is not a body", `<message id='m5'><body xmlns='urn:other'>x</body></message>`, nil},
		{"receipt", `<message from='acme.localhost'><received xmlns='urn:xmpp:receipts' id='X'/></message>`, nil},
		{"error", `<message type='error' id='X'><body>x</body><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`, nil},
		{"not a message", `<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>`, nil},
		{"message in a foreign namespace", `<message xmlns='jabber:server'><body>x</body></message>`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, err := sdkproto.ParseElement([]byte(tc.in))
			require.NoError(t, err)
			m, ok := sdkproto.ParseMessage(e)
			if tc.want == nil {
				require.False(t, ok)
				return
			}
			require.True(t, ok)
			require.Equal(t, tc.want, m)
		})
	}
}

func TestAppendXMLRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		gatewayMessage,
		`<a xmlns='urn:x' xmlns:p='urn:p' p:attr='v' xml:lang='en' b='&apos;&quot;&#9;&#10;&#13;'><b xmlns=''>t&#13;x</b><p:c/></a>`,
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`,
		`<x><![CDATA[<raw> & stuff]]></x>`,
	} {
		e, err := sdkproto.ParseElement([]byte(in))
		require.NoError(t, err, in)
		out := e.String()
		e2, err := sdkproto.ParseElement([]byte(out))
		require.NoError(t, err, out)
		require.Equal(t, e, e2, out)
	}
}

// chunkReader returns the input in chunks whose sizes cycle through sizes.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)])%64 + 1
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzReadElement feeds arbitrary streams, in arbitrary chunks, to the
// Reader: it must not panic, must not return an element larger than the
// input allows, and every element it returns must survive a round trip
// through AppendXML and ParseElement unchanged. Reading the same input in
// one piece must give the same elements.
func FuzzReadElement(f *testing.F) {
	seeds := []string{
		streamHeader + `<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`,
		streamHeader + `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`,
		streamHeader + `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>`,
		streamHeader + `<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==</challenge>`,
		streamHeader + `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure></stream:stream>`,
		streamHeader + `<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sm xmlns='urn:xmpp:sm:3'/></stream:features><iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@acme.localhost/phone1</jid></bind></iq><enabled xmlns='urn:xmpp:sm:3' id='ID' resume='true' max='300'/>`,
		streamHeader + gatewayMessage + ` <r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='12'/>`,
		streamHeader + `<resumed xmlns='urn:xmpp:sm:3' previd='ID' h='3'/><failed xmlns='urn:xmpp:sm:3'/>`,
		streamHeader + `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced</text></stream:error></stream:stream>`,
		streamHeader + `<iq type='result' id='c1'><config xmlns='urn:tether:config:0'>{"a":1}</config></iq><iq type='get' id='p' from='acme.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`,
		`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='acme.localhost' version='1.0'/><close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`,
		`<a xmlns:p='urn:p' p:x='1' xml:lang='en'><![CDATA[x]]>&#x10000;</a>`,
		streamHeader + `<a>` + strings.Repeat(`<b>`, 40),
	}
	for i, s := range seeds {
		f.Add([]byte(s), []byte{byte(i), 7, 1, 63})
	}
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		whole, errWhole := readAll(t, bytes.NewReader(data))
		got, err := readAll(t, &chunkReader{data: data, sizes: chunks})
		if (errWhole == nil) != (err == nil) || len(whole) != len(got) {
			t.Fatalf("chunked read differs: %d elements (%v) vs %d (%v)", len(got), err, len(whole), errWhole)
		}
		for i, e := range got {
			if e.String() != whole[i].String() {
				t.Fatalf("element %d differs when chunked", i)
			}
			if e.Name.Local == "stream" && i == 0 {
				continue // the header is not a standalone element
			}
			out := e.String()
			if len(out) > 6*len(data)+64 {
				t.Fatalf("element grew from %d input bytes to %d", len(data), len(out))
			}
			back, err := sdkproto.ParseElement([]byte(out))
			if err != nil {
				if errors.Is(err, sdkproto.ErrStanzaTooLarge) {
					continue // escaping made it longer than the limit
				}
				t.Fatalf("re-parse of %q: %v", out, err)
			}
			if back.String() != out {
				t.Fatalf("round trip changed the element:\n%s\n%s", out, back.String())
			}
			_, _ = sdkproto.ParseMessage(e)
		}
	})
}

// TestElementsOutliveLaterReads keeps every element a Reader returns, and
// every one ParseElement returns, while more are parsed: the parser's
// blocks go back to its pool after each copy, so an element sharing them
// would show a later stanza's attributes or children.
func TestElementsOutliveLaterReads(t *testing.T) {
	t.Parallel()
	stanza := func(i int) string {
		return fmt.Sprintf(`<message xmlns:x='urn:x' id='m%d' x:n='%d' type='normal'><data xmlns='urn:tether:data:0' seq='%d'>{"seq":%d}</data><r%d/></message>`, i, i, i, i, i%3)
	}
	check := func(t *testing.T, i int, e *sdkproto.Element) {
		t.Helper()
		want := fmt.Sprint(i)
		require.Equal(t, "m"+want, e.AttrValue("id"))
		require.Equal(t, want, attr(e, "urn:x", "n"))
		require.Len(t, e.Attr, 3, "namespace declarations left out: %v", e.Attr)
		require.Len(t, e.Children, 2)
		require.Equal(t, want, e.Children[0].AttrValue("seq"))
		require.Equal(t, `{"seq":`+want+`}`, e.Children[0].Text)
		require.Equal(t, fmt.Sprintf("r%d", i%3), e.Children[1].Name.Local)
	}
	const n = 200
	var sb strings.Builder
	sb.WriteString(streamHeader)
	for i := range n {
		sb.WriteString(stanza(i))
	}
	sb.WriteString(`</stream:stream>`)
	els, err := readAll(t, strings.NewReader(sb.String()))
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, els, n+1)
	frames := make([]*sdkproto.Element, n)
	for i := range n {
		frames[i], err = sdkproto.ParseElement([]byte(stanza(i)))
		require.NoError(t, err)
	}
	for i := range n {
		check(t, i, els[i+1])
		check(t, i, frames[i])
	}
}
