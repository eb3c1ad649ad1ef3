package session_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"mellium.im/sasl"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

// step bounds every single read of the raw client: nothing in these tests
// waits longer for one element.
const step = 10 * time.Second

// node is one element read from the gateway: a generic tree.
type node struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Nodes   []node     `xml:",any"`
	Text    string     `xml:",chardata"`
}

func (n *node) attr(local string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// child returns the first child with local name (any namespace when space
// is ""), or nil.
func (n *node) child(space, local string) *node {
	for i := range n.Nodes {
		c := &n.Nodes[i]
		if c.XMLName.Local == local && (space == "" || c.XMLName.Space == space) {
			return c
		}
	}
	return nil
}

func (n *node) String() string {
	if n == nil {
		return "<nil>"
	}
	b, err := xml.Marshal(n)
	if err != nil {
		return fmt.Sprintf("%s (%v)", n.XMLName.Local, err)
	}
	return string(b)
}

// errStreamClosed is what client.next returns for </stream:stream>.
var errStreamClosed = errors.New("stream closed by the server")

// client is a small hand-written XMPP client: it writes raw XML strings and
// reads whole top-level elements back. Over TCP the stream header comes
// back as a node named "stream" without children; over WebSocket each
// frame is one node.
type client struct {
	t      testing.TB
	domain string

	conn net.Conn // TCP (or TLS over it)
	raw  net.Conn // the TCP connection under TLS
	dec  *xml.Decoder

	ws *websocket.Conn
}

func dialTLS(t testing.TB, addr, domain string) *client {
	t.Helper()
	d := net.Dialer{Timeout: step}
	raw, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: domain, MinVersion: tls.VersionTLS12})
	raw.SetDeadline(time.Now().Add(step))
	require.NoError(t, tc.Handshake())
	raw.SetDeadline(time.Time{})
	c := &client{t: t, domain: domain, conn: tc, raw: raw}
	c.dec = xml.NewDecoder(tc)
	t.Cleanup(func() { c.conn.Close() })
	return c
}

func dialTCP(t testing.TB, addr, domain string) *client {
	t.Helper()
	d := net.Dialer{Timeout: step}
	raw, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	c := &client{t: t, domain: domain, conn: raw, raw: raw}
	c.dec = xml.NewDecoder(raw)
	t.Cleanup(func() { c.conn.Close() })
	return c
}

func dialWS(t testing.TB, baseURL, domain string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	u := "ws" + strings.TrimPrefix(baseURL, "http") + sdkproto.WebSocketPath
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{sdkproto.WebSocketProtocol}})
	require.NoError(t, err)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	require.Equal(t, sdkproto.WebSocketProtocol, ws.Subprotocol())
	c := &client{t: t, domain: domain, ws: ws}
	t.Cleanup(func() { ws.CloseNow() })
	return c
}

// send writes raw XML (over WebSocket: one frame).
func (c *client) send(s string) {
	c.t.Helper()
	require.NoError(c.t, c.trySend(s))
}

func (c *client) trySend(s string) error {
	if c.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), step)
		defer cancel()
		return c.ws.Write(ctx, websocket.MessageText, []byte(s))
	}
	c.conn.SetWriteDeadline(time.Now().Add(step))
	_, err := io.WriteString(c.conn, s)
	return err
}

// next reads the next top-level element within d.
func (c *client) nextWithin(d time.Duration) (*node, error) {
	if c.ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ != websocket.MessageText {
			return nil, fmt.Errorf("binary frame %q", b)
		}
		var n node
		if err := xml.Unmarshal(b, &n); err != nil {
			return nil, fmt.Errorf("frame %q: %w", b, err)
		}
		return &n, nil
	}
	c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			if tk.Name.Space == sdkproto.NSStream && tk.Name.Local == "stream" {
				return &node{XMLName: tk.Name, Attrs: tk.Attr}, nil
			}
			var n node
			if err := c.dec.DecodeElement(&n, &tk); err != nil {
				return nil, err
			}
			return &n, nil
		case xml.EndElement:
			return nil, errStreamClosed
		}
	}
}

func (c *client) next() (*node, error) { return c.nextWithin(step) }

// expect reads the next element, skipping the gateway's <r/> requests,
// and requires its local name.
func (c *client) expect(local string) *node {
	c.t.Helper()
	for {
		n, err := c.next()
		require.NoError(c.t, err, "waiting for <%s/>", local)
		if n.XMLName.Space == sdkproto.NSSM && n.XMLName.Local == "r" && local != "r" {
			continue
		}
		require.Equal(c.t, local, n.XMLName.Local, "got %s", n)
		return n
	}
}

// expectStreamError reads until the stream error and requires its
// condition, then requires that the stream and the connection close.
func (c *client) expectStreamError(cond string) {
	c.t.Helper()
	for {
		n, err := c.next()
		require.NoError(c.t, err, "waiting for the <%s/> stream error", cond)
		if n.XMLName.Local == "r" || n.XMLName.Local == "message" {
			continue
		}
		require.Equal(c.t, "error", n.XMLName.Local, "got %s", n)
		require.Equal(c.t, sdkproto.NSStream, n.XMLName.Space)
		require.NotNil(c.t, n.child(sdkproto.NSStreams, cond), "got %s", n)
		break
	}
	c.expectClosed()
}

// expectClosed requires the stream close (over WebSocket <close/>) and
// then the end of the connection, within the step.
func (c *client) expectClosed() {
	c.t.Helper()
	if c.ws != nil {
		n, err := c.next()
		for err == nil && n.XMLName.Space == sdkproto.NSSM && n.XMLName.Local == "r" {
			n, err = c.next() // requests of stream management queued before
		}
		require.NoError(c.t, err)
		require.Equal(c.t, "close", n.XMLName.Local, "got %s", n)
		_, err = c.next()
		require.Error(c.t, err)
		require.NotEqual(c.t, context.DeadlineExceeded, err, "the WebSocket stays open")
		return
	}
	n, err := c.next()
	require.ErrorIs(c.t, err, errStreamClosed, "got %s", n)
	c.requireEOF()
}

// requireEOF requires the TCP connection to end (EOF or reset), not a
// read timeout.
func (c *client) requireEOF() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(step))
	var buf [512]byte
	for {
		_, err := c.conn.Read(buf[:])
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "the connection stays open: %v", err)
		return
	}
}

// drop closes the TCP connection abruptly: no </stream:stream>, no TLS
// close_notify.
func (c *client) drop() {
	if c.ws != nil {
		c.ws.CloseNow()
		return
	}
	c.raw.Close()
}

// open sends a stream header (WebSocket: <open/>) and returns the
// features.
func (c *client) open() *node {
	c.t.Helper()
	if c.ws != nil {
		c.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='" + c.domain + "' version='1.0'/>")
		n := c.expect("open")
		require.Equal(c.t, c.domain, n.attr("from"))
		require.NotEmpty(c.t, n.attr("id"))
	} else {
		c.send("<?xml version='1.0'?><stream:stream to='" + c.domain + "' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
		n := c.expect("stream")
		require.Equal(c.t, c.domain, n.attr("from"))
		require.NotEmpty(c.t, n.attr("id"))
	}
	f := c.expect("features")
	require.Equal(c.t, sdkproto.NSStream, f.XMLName.Space)
	return f
}

// startTLS runs STARTTLS after the first stream's features.
func (c *client) startTLS() {
	c.t.Helper()
	c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.expect("proceed")
	tc := tls.Client(c.raw, &tls.Config{InsecureSkipVerify: true, ServerName: c.domain, MinVersion: tls.VersionTLS12})
	c.raw.SetDeadline(time.Now().Add(step))
	require.NoError(c.t, tc.Handshake())
	c.raw.SetDeadline(time.Time{})
	c.conn = tc
	c.dec = xml.NewDecoder(tc)
}

// restart expects a new stream from the server (after SASL or STARTTLS).
func (c *client) restart() {
	if c.ws == nil {
		c.dec = xml.NewDecoder(c.conn)
	}
}

// mechanisms lists the SASL mechanisms in features.
func mechanisms(f *node) []string {
	m := f.child(sdkproto.NSSASL, "mechanisms")
	if m == nil {
		return nil
	}
	var out []string
	for _, c := range m.Nodes {
		out = append(out, c.Text)
	}
	return out
}

// plain sends a SASL PLAIN auth and returns the answer (<success/> or
// <failure/>).
func (c *client) plain(user, pass string) *node {
	c.t.Helper()
	c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
		base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)) + "</auth>")
	n, err := c.next()
	require.NoError(c.t, err)
	return n
}

// scram runs SCRAM (mech "SCRAM-SHA-256" or "SCRAM-SHA-1") with mellium's
// client negotiator and returns the final answer (<success/> or
// <failure/>).
func (c *client) scram(mech, user, pass string) *node {
	c.t.Helper()
	m := sasl.ScramSha256
	if mech == "SCRAM-SHA-1" {
		m = sasl.ScramSha1
	}
	neg := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), nil
	}))
	_, first, err := neg.Step(nil)
	require.NoError(c.t, err)
	c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	for {
		n, err := c.next()
		require.NoError(c.t, err)
		switch n.XMLName.Local {
		case "challenge":
			ch, err := base64.StdEncoding.DecodeString(n.Text)
			require.NoError(c.t, err)
			_, resp, err := neg.Step(ch)
			require.NoError(c.t, err)
			c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(resp) + "</response>")
		case "success":
			final, err := base64.StdEncoding.DecodeString(n.Text)
			require.NoError(c.t, err)
			_, _, err = neg.Step(final) // verifies the server signature
			require.NoError(c.t, err, "server signature")
			return n
		default:
			return n
		}
	}
}

// authenticate logs in with PLAIN and opens the authenticated stream; it
// returns its features.
func (c *client) authenticate(user, pass string) *node {
	c.t.Helper()
	n := c.plain(user, pass)
	require.Equal(c.t, "success", n.XMLName.Local, "got %s", n)
	c.restart()
	return c.open()
}

// bind binds resource and returns the full JID.
func (c *client) bind(resource string) string {
	c.t.Helper()
	c.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" + resource + "</resource></bind></iq>")
	n := c.expect("iq")
	require.Equal(c.t, "result", n.attr("type"), "got %s", n)
	require.Equal(c.t, "bind1", n.attr("id"))
	b := n.child(sdkproto.NSBind, "bind")
	require.NotNil(c.t, b, "got %s", n)
	j := b.child("", "jid")
	require.NotNil(c.t, j)
	return j.Text
}

// enableSM enables stream management with resumption and returns its id.
func (c *client) enableSM() string {
	c.t.Helper()
	c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	n := c.expect("enabled")
	require.Equal(c.t, "true", n.attr("resume"))
	require.NotEmpty(c.t, n.attr("id"))
	return n.attr("id")
}

// presence sends the initial presence: messages start to flow.
func (c *client) presence() { c.send("<presence/>") }

// iq sends an IQ and returns the answer with the same id (skipping <r/>).
func (c *client) iq(id, typ, payload string) *node {
	c.t.Helper()
	c.send("<iq type='" + typ + "' id='" + id + "'>" + payload + "</iq>")
	n := c.expect("iq")
	require.Equal(c.t, id, n.attr("id"), "got %s", n)
	return n
}

// ping is a barrier: whatever the gateway queued before answering it has
// been read once it returns, and the messages read meanwhile are returned.
func (c *client) ping() []*node {
	c.t.Helper()
	id := "ping-" + fmt.Sprint(time.Now().UnixNano())
	c.send("<iq type='get' id='" + id + "'><ping xmlns='urn:xmpp:ping'/></iq>")
	var msgs []*node
	for {
		n, err := c.next()
		require.NoError(c.t, err)
		switch {
		case n.XMLName.Local == "iq" && n.attr("id") == id:
			require.Equal(c.t, "result", n.attr("type"))
			return msgs
		case n.XMLName.Local == "message":
			msgs = append(msgs, n)
		}
	}
}

// message reads the next message stanza (skipping <r/>).
func (c *client) message() *node {
	c.t.Helper()
	return c.expect("message")
}

// fixture is a gateway with app "acme" and its users.
type fixture struct {
	g   *gatewaytest.Gateway
	app *api.Client
	ctx context.Context
}

const domain = "acme.localhost"

// start runs a gateway with app "acme" and users alice and bob (password
// "secret-"+name). cfg may change the gateway's configuration.
func start(t *testing.T, cfg func(*gateway.Config)) *fixture {
	t.Helper()
	opts := []gatewaytest.Option{}
	if cfg != nil {
		opts = append(opts, gatewaytest.WithConfig(cfg))
	}
	g := gatewaytest.Start(t, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	app := g.App(t, "acme")
	for _, u := range []string{"alice", "bob"} {
		_, err := app.PutUser(ctx, "acme", u, api.PutUserRequest{Password: "secret-" + u})
		require.NoError(t, err)
	}
	return &fixture{g: g, app: app, ctx: ctx}
}

// login connects over direct TLS, authenticates user and binds resource.
func (f *fixture) login(t *testing.T, user, resource string) *client {
	t.Helper()
	c := dialTLS(t, f.g.XMPPSAddr, domain)
	f0 := c.open()
	require.Contains(t, mechanisms(f0), "PLAIN")
	c.authenticate(user, "secret-"+user)
	c.bind(resource)
	return c
}

// sendTo posts a message through REST and returns its id.
func (f *fixture) sendTo(t *testing.T, to, body string) string {
	t.Helper()
	r, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{to}, Body: body}, "")
	require.NoError(t, err)
	require.Len(t, r.Messages, 1)
	return r.Messages[0].ID
}

func (f *fixture) status(t *testing.T, id string) string {
	t.Helper()
	st, err := f.app.GetMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	return st.Status
}

// waitStatus polls the REST status of a message until it is want.
func (f *fixture) waitStatus(t *testing.T, id, want string) {
	t.Helper()
	checkFor(t, step, 10*time.Millisecond, func() error {
		if got := f.status(t, id); got != want {
			return fmt.Errorf("message %s: status %q, want %q", id, got, want)
		}
		return nil
	})
}

// events returns the app's whole event feed.
func (f *fixture) events(t *testing.T, app *api.Client, appID string) []api.Event {
	t.Helper()
	r, err := app.Events(f.ctx, appID, "", 1000, 0)
	require.NoError(t, err)
	out := make([]api.Event, 0, len(r.Events))
	for _, raw := range r.Events {
		var e api.Event
		require.NoError(t, json.Unmarshal(raw, &e))
		out = append(out, e)
	}
	return out
}

// checkFor polls fn every tick until it returns nil, failing the test
// with fn's last error after total.
func checkFor(t testing.TB, total, tick time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(tick) // polling, bounded by total
	}
}
