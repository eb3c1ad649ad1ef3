// Package xmpptest is a raw XMPP client for tests of the gateway's
// listeners: it writes what it is told, byte for byte, and reads whole
// top-level elements back as generic trees, so a test can send what no
// real client would and check every attribute of the answer.
//
// A Client runs over TCP (plain, STARTTLS or direct TLS), or over a
// WebSocket that the test dials itself and hands in as Frames. Every
// read and write is bounded by Step, and every helper that expects
// something fails the test at once when it does not come.
package xmpptest

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/sdkproto"
)

// Step bounds every single read or write of a Client: nothing waits
// longer for one element.
const Step = 10 * time.Second

// Node is one element read from the gateway: a generic tree.
type Node struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Nodes   []Node     `xml:",any"`
	Text    string     `xml:",chardata"`
}

// Attr returns the value of the attribute with local name (any
// namespace), or "".
func (n *Node) Attr(local string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// Child returns the first child with local name (any namespace when space
// is ""), or nil.
func (n *Node) Child(space, local string) *Node {
	for i := range n.Nodes {
		c := &n.Nodes[i]
		if c.XMLName.Local == local && (space == "" || c.XMLName.Space == space) {
			return c
		}
	}
	return nil
}

// String returns the element as XML, for failure messages.
func (n *Node) String() string {
	if n == nil {
		return "<nil>"
	}
	b, err := xml.Marshal(n)
	if err != nil {
		return fmt.Sprintf("%s (%v)", n.XMLName.Local, err)
	}
	return string(b)
}

// Mechanisms lists the SASL mechanisms offered in features.
func Mechanisms(features *Node) []string {
	m := features.Child(sdkproto.NSSASL, "mechanisms")
	if m == nil {
		return nil
	}
	var out []string
	for _, n := range m.Nodes {
		out = append(out, n.Text)
	}
	return out
}

// ErrStreamClosed is what Client.Next returns for </stream:stream>.
var ErrStreamClosed = errors.New("stream closed by the server")

// Frames is a WebSocket connection (RFC 7395) under a Client: each text
// message carries one element. Whatever else the server sends (a close
// frame, a binary message) ends ReadText with an error that says so.
type Frames interface {
	// WriteText sends p as one text message within Step.
	WriteText(p []byte) error
	// ReadText returns the payload of the next text message within d.
	ReadText(d time.Duration) ([]byte, error)
	// Close ends the connection abruptly, without a close frame.
	Close() error
}

// Client is a raw XMPP client. Over TCP the stream header comes back as a
// node named "stream" without children; over a WebSocket each message is
// one node.
type Client struct {
	T      testing.TB
	Domain string // the to of stream headers and the TLS server name

	// Raw is the TCP connection and Conn is Raw or TLS over it. Over a
	// WebSocket both are the TCP connection under it when the test holds
	// that connection, nil otherwise.
	Raw  net.Conn
	Conn net.Conn
	WS   Frames // nil over TCP

	dec *xml.Decoder // over TCP: reads the current stream
}

// Dialer dials loopback within Step from the source address src (nil:
// any).
func Dialer(src net.IP) *net.Dialer {
	d := &net.Dialer{Timeout: Step}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	return d
}

// DialTCP connects to addr from src (nil: any) without TLS; the
// connection is closed when the test ends.
func DialTCP(t testing.TB, addr, domain string, src net.IP) *Client {
	t.Helper()
	raw, err := Dialer(src).Dial("tcp", addr)
	require.NoError(t, err)
	c := &Client{T: t, Domain: domain, Raw: raw, Conn: raw, dec: xml.NewDecoder(raw)}
	t.Cleanup(func() { raw.Close() })
	return c
}

// DialTLS connects to the direct-TLS port addr from src (nil: any) and
// completes the TLS handshake.
func DialTLS(t testing.TB, addr, domain string, src net.IP) *Client {
	t.Helper()
	c := DialTCP(t, addr, domain, src)
	c.TLS()
	return c
}

// NewWebSocket returns a client over the WebSocket ws. raw is the TCP
// connection under it when the test holds it (nil otherwise); the caller
// closes the connection when the test ends.
func NewWebSocket(t testing.TB, domain string, ws Frames, raw net.Conn) *Client {
	return &Client{T: t, Domain: domain, Raw: raw, Conn: raw, WS: ws}
}

// TLS runs a TLS handshake over the TCP connection (direct TLS, or after
// <proceed/>) and starts reading a new stream inside it.
func (c *Client) TLS() {
	c.T.Helper()
	tc := tls.Client(c.Raw, &tls.Config{InsecureSkipVerify: true, ServerName: c.Domain, MinVersion: tls.VersionTLS12})
	c.Raw.SetDeadline(time.Now().Add(Step))
	require.NoError(c.T, tc.Handshake())
	c.Raw.SetDeadline(time.Time{})
	c.Conn = tc
	c.dec = xml.NewDecoder(tc)
}

// StartTLS runs STARTTLS after the first stream's features.
func (c *Client) StartTLS() {
	c.T.Helper()
	c.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.Expect("proceed")
	c.TLS()
}

// Send writes raw XML (over a WebSocket: one message).
func (c *Client) Send(s string) {
	c.T.Helper()
	require.NoError(c.T, c.TrySend(s))
}

// TrySend is Send that returns the error: the server may have closed the
// connection already.
func (c *Client) TrySend(s string) error {
	if c.WS != nil {
		return c.WS.WriteText([]byte(s))
	}
	c.Conn.SetWriteDeadline(time.Now().Add(Step))
	_, err := io.WriteString(c.Conn, s)
	return err
}

// NextWithin reads the next top-level element within d.
func (c *Client) NextWithin(d time.Duration) (*Node, error) {
	if c.WS != nil {
		b, err := c.WS.ReadText(d)
		if err != nil {
			return nil, err
		}
		var n Node
		if err := xml.Unmarshal(b, &n); err != nil {
			return nil, fmt.Errorf("frame %q: %w", b, err)
		}
		return &n, nil
	}
	c.Conn.SetReadDeadline(time.Now().Add(d))
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			if tk.Name.Space == sdkproto.NSStream && tk.Name.Local == "stream" {
				return &Node{XMLName: tk.Name, Attrs: tk.Attr}, nil
			}
			var n Node
			if err := c.dec.DecodeElement(&n, &tk); err != nil {
				return nil, err
			}
			return &n, nil
		case xml.EndElement:
			return nil, ErrStreamClosed
		}
	}
}

// Next reads the next top-level element within Step.
func (c *Client) Next() (*Node, error) { return c.NextWithin(Step) }

// Expect reads the next element, skipping the gateway's <r/> requests,
// and requires its local name.
func (c *Client) Expect(local string) *Node {
	c.T.Helper()
	for {
		n, err := c.Next()
		require.NoError(c.T, err, "waiting for <%s/>", local)
		if n.XMLName.Space == sdkproto.NSSM && n.XMLName.Local == "r" && local != "r" {
			continue
		}
		require.Equal(c.T, local, n.XMLName.Local, "got %s", n)
		return n
	}
}

// RequireEOF requires the TCP connection to end (EOF or reset) within
// Step, not a read timeout.
func (c *Client) RequireEOF() {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(Step))
	var buf [4096]byte
	for {
		_, err := c.Conn.Read(buf[:])
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(c.T, errors.As(err, &ne) && ne.Timeout(), "the connection stays open: %v", err)
		return
	}
}

// Drop closes the connection abruptly: no </stream:stream>, no TLS
// close_notify, no WebSocket close frame.
func (c *Client) Drop() {
	if c.Raw == nil {
		c.WS.Close()
		return
	}
	c.Raw.Close()
}

// Header returns the stream header to domain to (over a WebSocket:
// <open/>).
func (c *Client) Header(to string) string {
	if c.WS != nil {
		return "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='" + to + "' version='1.0'/>"
	}
	return "<?xml version='1.0'?><stream:stream to='" + to + "' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
}

// Open sends a stream header to the client's domain, requires the
// server's (from that domain, with an id) and returns the features.
func (c *Client) Open() *Node {
	c.T.Helper()
	c.Send(c.Header(c.Domain))
	var n *Node
	if c.WS != nil {
		n = c.Expect("open")
	} else {
		n = c.Expect("stream")
	}
	require.Equal(c.T, c.Domain, n.Attr("from"))
	require.NotEmpty(c.T, n.Attr("id"))
	f := c.Expect("features")
	require.Equal(c.T, sdkproto.NSStream, f.XMLName.Space)
	return f
}

// Restart expects a new stream from the server after STARTTLS or SASL
// success.
func (c *Client) Restart() {
	if c.WS == nil {
		c.dec = xml.NewDecoder(c.Conn)
	}
}

// Plain sends a SASL PLAIN auth (authz "": none) and returns the answer
// (<success/>, <failure/> or a stream error).
func (c *Client) Plain(authz, user, pass string) *Node {
	c.T.Helper()
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
		base64.StdEncoding.EncodeToString([]byte(authz+"\x00"+user+"\x00"+pass)) + "</auth>")
	n, err := c.Next()
	require.NoError(c.T, err)
	return n
}

// Authenticate logs in with PLAIN and opens the authenticated stream; it
// returns its features.
func (c *Client) Authenticate(user, pass string) *Node {
	c.T.Helper()
	n := c.Plain("", user, pass)
	require.Equal(c.T, "success", n.XMLName.Local, "got %s", n)
	c.Restart()
	return c.Open()
}

// Bind asks to bind resource and returns the answer (a result or an
// error IQ).
func (c *Client) Bind(resource string) *Node {
	c.T.Helper()
	c.Send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" + resource + "</resource></bind></iq>")
	return c.Expect("iq")
}

// BindJID binds resource, requires success and returns the full JID.
func (c *Client) BindJID(resource string) string {
	c.T.Helper()
	n := c.Bind(resource)
	require.Equal(c.T, "result", n.Attr("type"), "got %s", n)
	require.Equal(c.T, "bind1", n.Attr("id"))
	b := n.Child(sdkproto.NSBind, "bind")
	require.NotNil(c.T, b, "got %s", n)
	j := b.Child("", "jid")
	require.NotNil(c.T, j)
	return j.Text
}

// Login opens the first stream, requires PLAIN among its mechanisms,
// authenticates and binds resource; it returns the full JID.
func (c *Client) Login(user, pass, resource string) string {
	c.T.Helper()
	f := c.Open()
	require.Contains(c.T, Mechanisms(f), "PLAIN")
	c.Authenticate(user, pass)
	return c.BindJID(resource)
}

// EnableSM enables stream management with resumption and returns the
// <enabled/> answer, which carries the resumption id.
func (c *Client) EnableSM() *Node {
	c.T.Helper()
	c.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	n := c.Expect("enabled")
	require.Equal(c.T, "true", n.Attr("resume"))
	require.NotEmpty(c.T, n.Attr("id"))
	return n
}
