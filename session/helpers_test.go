package session_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"mellium.im/sasl"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/internal/xmpptest"
	"tether/sdkproto"
)

// step bounds every single read of the raw client: nothing in these tests
// waits longer for one element.
const step = xmpptest.Step

// client is the raw XMPP client of package xmpptest. Over WebSocket it
// runs on a coder/websocket connection, kept in ws for the tests that
// send what the client does not (binary messages, pings).
type client struct {
	*xmpptest.Client
	ws *websocket.Conn // nil over TCP
}

func dialTLS(t testing.TB, addr, domain string) *client {
	t.Helper()
	return &client{Client: xmpptest.DialTLS(t, addr, domain, nil)}
}

func dialTCP(t testing.TB, addr, domain string) *client {
	t.Helper()
	return &client{Client: xmpptest.DialTCP(t, addr, domain, nil)}
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
	c := &client{Client: xmpptest.NewWebSocket(t, domain, wsFrames{ws}, nil), ws: ws}
	t.Cleanup(func() { ws.CloseNow() })
	return c
}

// wsFrames carries the client's elements over a coder/websocket
// connection (xmpptest.Frames).
type wsFrames struct{ conn *websocket.Conn }

func (w wsFrames) WriteText(p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	return w.conn.Write(ctx, websocket.MessageText, p)
}

func (w wsFrames) ReadText(d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, b, err := w.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("binary frame %q", b)
	}
	return b, nil
}

func (w wsFrames) Close() error { return w.conn.CloseNow() }

// expectStreamError reads until the stream error and requires its
// condition, then requires that the stream and the connection close.
func (c *client) expectStreamError(cond string) {
	c.T.Helper()
	for {
		n, err := c.Next()
		require.NoError(c.T, err, "waiting for the <%s/> stream error", cond)
		if n.XMLName.Local == "r" || n.XMLName.Local == "message" {
			continue
		}
		require.Equal(c.T, "error", n.XMLName.Local, "got %s", n)
		require.Equal(c.T, sdkproto.NSStream, n.XMLName.Space)
		require.NotNil(c.T, n.Child(sdkproto.NSStreams, cond), "got %s", n)
		break
	}
	c.expectClosed()
}

// expectClosed requires the stream close (over WebSocket <close/>) and
// then the end of the connection, within the step.
func (c *client) expectClosed() {
	c.T.Helper()
	if c.ws != nil {
		n, err := c.Next()
		for err == nil && n.XMLName.Space == sdkproto.NSSM && n.XMLName.Local == "r" {
			n, err = c.Next() // requests of stream management queued before
		}
		require.NoError(c.T, err)
		require.Equal(c.T, "close", n.XMLName.Local, "got %s", n)
		_, err = c.Next()
		require.Error(c.T, err)
		require.NotEqual(c.T, context.DeadlineExceeded, err, "the WebSocket stays open")
		return
	}
	n, err := c.Next()
	require.ErrorIs(c.T, err, xmpptest.ErrStreamClosed, "got %s", n)
	c.RequireEOF()
}

// scram runs SCRAM (mech "SCRAM-SHA-256" or "SCRAM-SHA-1") with mellium's
// client negotiator and returns the final answer (<success/> or
// <failure/>).
func (c *client) scram(mech, user, pass string) *xmpptest.Node {
	c.T.Helper()
	m := sasl.ScramSha256
	if mech == "SCRAM-SHA-1" {
		m = sasl.ScramSha1
	}
	neg := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(pass), nil
	}))
	_, first, err := neg.Step(nil)
	require.NoError(c.T, err)
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	for {
		n, err := c.Next()
		require.NoError(c.T, err)
		switch n.XMLName.Local {
		case "challenge":
			ch, err := base64.StdEncoding.DecodeString(n.Text)
			require.NoError(c.T, err)
			_, resp, err := neg.Step(ch)
			require.NoError(c.T, err)
			c.Send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(resp) + "</response>")
		case "success":
			final, err := base64.StdEncoding.DecodeString(n.Text)
			require.NoError(c.T, err)
			_, _, err = neg.Step(final) // verifies the server signature
			require.NoError(c.T, err, "server signature")
			return n
		default:
			return n
		}
	}
}

// enableSM enables stream management with resumption and returns its id.
func (c *client) enableSM() string {
	c.T.Helper()
	return c.EnableSM().Attr("id")
}

// presence sends the initial presence: messages start to flow.
func (c *client) presence() { c.Send("<presence/>") }

// iq sends an IQ and returns the answer with the same id (skipping <r/>).
func (c *client) iq(id, typ, payload string) *xmpptest.Node {
	c.T.Helper()
	c.Send("<iq type='" + typ + "' id='" + id + "'>" + payload + "</iq>")
	n := c.Expect("iq")
	require.Equal(c.T, id, n.Attr("id"), "got %s", n)
	return n
}

// ping is a barrier: whatever the gateway queued before answering it has
// been read once it returns, and the messages read meanwhile are returned.
func (c *client) ping() []*xmpptest.Node {
	c.T.Helper()
	id := "ping-" + fmt.Sprint(time.Now().UnixNano())
	c.Send("<iq type='get' id='" + id + "'><ping xmlns='urn:xmpp:ping'/></iq>")
	var msgs []*xmpptest.Node
	for {
		n, err := c.Next()
		require.NoError(c.T, err)
		switch {
		case n.XMLName.Local == "iq" && n.Attr("id") == id:
			require.Equal(c.T, "result", n.Attr("type"))
			return msgs
		case n.XMLName.Local == "message":
			msgs = append(msgs, n)
		}
	}
}

// message reads the next message stanza (skipping <r/>).
func (c *client) message() *xmpptest.Node {
	c.T.Helper()
	return c.Expect("message")
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
	c.Login(user, "secret-"+user, resource)
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
