package session_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/xmpptest"
	"tether/sdkproto"
)

// TestMain fails the package when a test leaves goroutines behind. Idle
// keep-alive connections of the default HTTP transport (the REST client's
// cache) are closed first.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction("tether/session.(*poller).loop")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestNotWellFormed: malformed XML, before or after authentication, gets
// the <not-well-formed/> stream error (after a stream header of ours when
// none went out yet), then the stream and the connection close.
func TestNotWellFormed(t *testing.T) {
	f := start(t, nil)
	cases := []struct {
		name string
		run  func(t *testing.T) *client
	}{
		{"unclosed child after auth", func(t *testing.T) *client {
			c := f.login(t, "alice", "phone1")
			c.Send("<message to='acme.localhost'><body></message>")
			return c
		}},
		{"binary garbage before the header", func(t *testing.T) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Send("\x00\x01\x02<<<>>>")
			c.Expect("stream")
			return c
		}},
		{"text before the header on the STARTTLS port", func(t *testing.T) *client {
			c := dialTCP(t, f.g.XMPPAddr, domain)
			c.Send("GET / HTTP/1.1\r\nHost: acme.localhost\r\n\r\n")
			c.Expect("stream")
			return c
		}},
		{"text between stanzas", func(t *testing.T) *client {
			c := f.login(t, "alice", "phone2")
			c.Send("hello there")
			c.Send("<presence/>") // the text ends at the next tag
			return c
		}},
		{"stanza before the header", func(t *testing.T) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Send("<message xmlns='jabber:client'><body>hi</body></message>")
			c.Expect("stream")
			return c
		}},
		{"mismatched end tag after SASL", func(t *testing.T) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'></iq>")
			return c
		}},
		{"unsupported XML version", func(t *testing.T) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Send("<?xml version='1.1'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
			c.Expect("stream")
			return c
		}},
		{"doctype", func(t *testing.T) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			c.Send("<!DOCTYPE foo [<!ENTITY x 'y'>]>")
			return c
		}},
		{"undeclared prefix", func(t *testing.T) *client {
			c := f.login(t, "alice", "phone3")
			c.Send("<foo:bar/>")
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.run(t)
			c.expectStreamError("not-well-formed")
		})
	}
}

// TestStanzaTooLarge: a stanza over 64 KiB gets <policy-violation/> and
// the connection closes; the gateway keeps serving others.
func TestStanzaTooLarge(t *testing.T) {
	f := start(t, nil)
	other := f.login(t, "bob", "phone1")

	c := f.login(t, "alice", "phone1")
	big := "<message to='acme.localhost' id='big'><body>" + strings.Repeat("a", sdkproto.MaxStanzaBytes+8<<10) + "</body></message>"
	written := make(chan error, 1)
	go func() { written <- c.TrySend(big) }() // the gateway stops reading midway: write beside the reads
	c.expectStreamError("policy-violation")
	select {
	case <-written: // an error is fine: the gateway closed the connection
	case <-time.After(step):
		t.Fatal("the write of the large stanza never returned")
	}

	// A stanza just under the limit is fine.
	c2 := f.login(t, "alice", "phone2")
	body := strings.Repeat("b", sdkproto.MaxStanzaBytes-1<<10)
	c2.Send("<message to='acme.localhost' id='almost'><body>" + body + "</body><request xmlns='urn:xmpp:receipts'/></message>")
	rc := c2.Expect("message")
	require.NotNil(t, rc.Child(sdkproto.NSReceipts, "received"), "got %s", rc)

	// Others keep being served.
	other.ping()
	c3 := f.login(t, "alice", "phone3")
	c3.ping()
}

// TestTimeouts: no TLS, no authentication, or no traffic within the
// configured time closes the connection with <connection-timeout/>.
func TestTimeouts(t *testing.T) {
	const timeout = time.Second
	f := start(t, func(c *gateway.Config) {
		c.SessionAuthTimeout = timeout
		c.SessionIdleTimeout = timeout
	})
	// closedWithin requires the timeout to end the stream after about the
	// configured time (not at once, not after the default 10 s).
	closedWithin := func(t *testing.T, c *client, since time.Time) {
		c.expectStreamError("connection-timeout")
		took := time.Since(since)
		require.GreaterOrEqual(t, took, timeout-100*time.Millisecond)
		require.Less(t, took, 5*time.Second)
	}
	t.Run("no TLS on the STARTTLS port", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		c := dialTCP(t, f.g.XMPPAddr, domain)
		feat := c.Open()
		require.NotNil(t, feat.Child(sdkproto.NSTLS, "starttls"))
		closedWithin(t, c, t0)
	})
	t.Run("silent client on the STARTTLS port", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		c := dialTCP(t, f.g.XMPPAddr, domain)
		c.Expect("stream") // a header comes before the stream error
		closedWithin(t, c, t0)
	})
	t.Run("STARTTLS then no auth", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		c := dialTCP(t, f.g.XMPPAddr, domain)
		c.Open()
		c.StartTLS()
		c.Restart()
		require.Contains(t, xmpptest.Mechanisms(c.Open()), "SCRAM-SHA-256")
		closedWithin(t, c, t0) // one budget for TLS and SASL
	})
	t.Run("no auth on direct TLS", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		c.Open()
		closedWithin(t, c, t0)
	})
	t.Run("no TLS handshake on direct TLS", func(t *testing.T) {
		t.Parallel()
		c := dialTCP(t, f.g.XMPPSAddr, domain) // plain TCP, never says hello
		t0 := time.Now()
		c.RequireEOF()
		require.Less(t, time.Since(t0), 5*time.Second)
	})
	t.Run("idle after auth", func(t *testing.T) {
		t.Parallel()
		c := f.login(t, "alice", "idle")
		c.presence()
		since := time.Now() // before the ping: the idle timer runs from the server's read of it
		c.ping()
		closedWithin(t, c, since)
	})
	t.Run("whitespace keepalives are traffic", func(t *testing.T) {
		t.Parallel()
		c := f.login(t, "bob", "keepalive")
		tick := time.NewTicker(timeout / 4)
		defer tick.Stop()
		end := time.Now().Add(3 * timeout)
		for time.Now().Before(end) {
			<-tick.C // the keepalive schedule: four per idle timeout
			c.Send(" ")
		}
		c.ping() // still open
	})
}

// TestHostUnknown: a stream to a domain that is no app gets
// <host-unknown/>, after exactly one stream header.
func TestHostUnknown(t *testing.T) {
	f := start(t, nil)
	for _, to := range []string{"nope.localhost", "acme.example.com", "localhost", ""} {
		t.Run("tls "+to, func(t *testing.T) {
			t.Parallel()
			c := dialTLS(t, f.g.XMPPSAddr, to)
			c.Send("<stream:stream to='" + to + "' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
			c.Expect("stream")
			c.expectStreamError("host-unknown")
		})
	}
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		c := dialWS(t, f.g.URL, "nope.localhost")
		c.Send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='nope.localhost' version='1.0'/>")
		c.Expect("open")
		c.expectStreamError("host-unknown")
	})
}

// TestAuthThrottle: a wrong password gets <not-authorized/>; after five
// failures for a user, even the right password gets
// <temporary-auth-failure/>, while another user from the same address
// logs in.
func TestAuthThrottle(t *testing.T) {
	f := start(t, nil)
	c := dialTLS(t, f.g.XMPPSAddr, domain)
	c.Open()
	for i := range 5 {
		n := c.Plain("", "alice", "wrong")
		require.Equal(t, "failure", n.XMLName.Local, "attempt %d: %s", i, n)
		require.NotNil(t, n.Child("", "not-authorized"), "attempt %d: %s", i, n)
	}
	// A sixth attempt on the same connection ends it.
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + "AGFsaWNlAHdyb25n" + "</auth>")
	c.expectStreamError("policy-violation")

	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"} {
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		c.Open()
		var n *xmpptest.Node
		if mech == "PLAIN" {
			n = c.Plain("", "alice", "secret-alice")
		} else {
			n = c.scram(mech, "alice", "secret-alice")
		}
		require.Equal(t, "failure", n.XMLName.Local, "%s: %s", mech, n)
		require.NotNil(t, n.Child("", "temporary-auth-failure"), "%s: %s", mech, n)
	}

	// Another user from the same address is not slowed down.
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"} {
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		c.Open()
		var n *xmpptest.Node
		if mech == "PLAIN" {
			n = c.Plain("", "bob", "secret-bob")
		} else {
			n = c.scram(mech, "bob", "secret-bob")
		}
		require.Equal(t, "success", n.XMLName.Local, "%s: %s", mech, n)
		c.Restart()
		c.Open()
		c.BindJID("phone-" + strings.ToLower(mech))
		c.ping()
	}

	// SCRAM with a wrong password fails like PLAIN.
	c = dialTLS(t, f.g.XMPPSAddr, domain)
	c.Open()
	n := c.scram("SCRAM-SHA-256", "bob", "wrong")
	require.Equal(t, "failure", n.XMLName.Local, "got %s", n)
	require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
	// An unknown user too.
	n = c.scram("SCRAM-SHA-256", "nobody", "x")
	require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
}

// TestSASLRequiresTLS: on the STARTTLS port only <starttls/> is offered
// before TLS, and SASL there ends the stream.
func TestSASLRequiresTLS(t *testing.T) {
	f := start(t, nil)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := dialTCP(t, f.g.XMPPAddr, domain)
			feat := c.Open()
			require.Len(t, feat.Nodes, 1, "only starttls before TLS: %s", feat)
			st := feat.Child(sdkproto.NSTLS, "starttls")
			require.NotNil(t, st, "got %s", feat)
			require.NotNil(t, st.Child("", "required"))
			require.Empty(t, xmpptest.Mechanisms(feat))
			c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + mech + "'>AGFsaWNlAHNlY3JldC1hbGljZQ==</auth>")
			c.expectStreamError("policy-violation")
		})
	}
	t.Run("after STARTTLS", func(t *testing.T) {
		t.Parallel()
		c := dialTCP(t, f.g.XMPPAddr, domain)
		c.Open()
		c.StartTLS()
		c.Restart()
		feat := c.Open()
		require.Equal(t, sdkproto.Mechanisms, xmpptest.Mechanisms(feat))
		require.Nil(t, feat.Child(sdkproto.NSTLS, "starttls"), "no STARTTLS twice: %s", feat)
		n := c.scram("SCRAM-SHA-256", "alice", "secret-alice")
		require.Equal(t, "success", n.XMLName.Local, "got %s", n)
		c.Restart()
		c.Open()
		c.BindJID("phone1")
		c.ping() // the device record is written after the bind result
		devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
		require.NoError(t, err)
		require.Len(t, devs, 1)
		require.Equal(t, "starttls", devs[0].Transport)
	})
	t.Run("STARTTLS on direct TLS", func(t *testing.T) {
		t.Parallel()
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		c.Open()
		c.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		c.expectStreamError("policy-violation")
	})
}

// TestAppIsolation: a session of app "acme" reaches nothing of app
// "other".
func TestAppIsolation(t *testing.T) {
	f := start(t, nil)
	other := f.g.App(t, "other")
	_, err := other.PutUser(f.ctx, "other", "carol", api.PutUserRequest{Password: "secret-carol"})
	require.NoError(t, err)
	_, err = other.PutUser(f.ctx, "other", "bob", api.PutUserRequest{Password: "other-bob"})
	require.NoError(t, err)

	t.Run("acme credentials on other's domain", func(t *testing.T) {
		c := dialTLS(t, f.g.XMPPSAddr, "other.localhost")
		c.Open()
		n := c.Plain("", "alice", "secret-alice")
		require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
		n = c.scram("SCRAM-SHA-256", "alice", "secret-alice")
		require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
		// The same user name in both apps: each app's own password.
		n = c.Plain("", "bob", "secret-bob")
		require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
		n = c.Plain("", "bob@acme.localhost", "secret-bob")
		require.NotNil(t, n.Child("", "not-authorized"), "got %s", n)
	})

	t.Run("authzid of another app", func(t *testing.T) {
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		c.Open()
		c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" +
			b64("bob@other.localhost\x00bob\x00secret-bob") + "</auth>")
		n := c.Expect("failure")
		require.NotNil(t, n.Child("", "invalid-authzid"), "got %s", n)
	})

	otherMsg, err := other.Send(f.ctx, "other", api.SendRequest{To: []string{"carol"}, Body: "for carol"}, "")
	require.NoError(t, err)
	otherID := otherMsg.Messages[0].ID

	c := f.login(t, "alice", "phone1")
	c.presence()
	for _, to := range []string{"carol@other.localhost", "other.localhost", "bob@acme.localhost", "alice@acme.localhost/phone9"} {
		c.Send("<message to='" + to + "' id='m1' type='chat'><body>hi</body></message>")
		n := c.Expect("message")
		require.Equal(t, "error", n.Attr("type"), "to %s: %s", to, n)
		require.Equal(t, "m1", n.Attr("id"))
		e := n.Child("", "error")
		require.NotNil(t, e, "got %s", n)
		require.NotNil(t, e.Child(sdkproto.NSStanzas, "service-unavailable"), "got %s", n)
	}
	n := c.iq("d1", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
	require.Equal(t, "result", n.Attr("type"))
	c.Send("<iq type='get' id='d2' to='other.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
	n = c.Expect("iq")
	require.Equal(t, "error", n.Attr("type"), "got %s", n)

	// Receipts and markers naming another app's message change nothing.
	c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + otherID + "'/></message>")
	c.Send("<message to='acme.localhost'><displayed xmlns='urn:xmpp:chat-markers:0' id='" + otherID + "'/></message>")
	c.Send("<message to='acme.localhost' id='x'><body>reply</body><reply xmlns='urn:xmpp:reply:0' id='" + otherID + "'/></message>")
	c.ping() // the gateway handled everything before
	st, err := other.GetMessage(f.ctx, "other", otherID)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status)
	_, err = f.app.GetMessage(f.ctx, "acme", otherID)
	require.Error(t, err, "acme sees no message of other")

	// Nor can acme resume a session of other.
	carol := dialTLS(t, f.g.XMPPSAddr, "other.localhost")
	carol.Open()
	carol.Authenticate("carol", "secret-carol")
	carol.BindJID("phone1")
	carolSM := carol.enableSM()
	carol.presence()
	require.Equal(t, otherID, carol.message().Attr("id"))
	carol.Drop()

	c2 := dialTLS(t, f.g.XMPPSAddr, domain)
	c2.Open()
	c2.Authenticate("alice", "secret-alice")
	c2.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + carolSM + "' h='0'/>")
	c2.Expect("failed")
	c2.BindJID("phone1") // the stream goes on as alice's
	c2.ping()
	checkFor(t, step, 10*time.Millisecond, func() error {
		st, err := other.GetMessage(f.ctx, "other", otherID)
		if err != nil {
			return err
		}
		if st.Status != "sent" { // carol got it, nobody acknowledged it
			return fmt.Errorf("status %q", st.Status)
		}
		return nil
	})

	// acme's feed shows nothing of other.
	for _, e := range f.events(t, f.app, "acme") {
		require.Equal(t, "acme", e.App, "%+v", e)
		require.NotEqual(t, "carol", e.User, "%+v", e)
		require.NotEqual(t, otherID, e.MessageID, "%+v", e)
	}
}

// TestBindConflict: binding a resource already online replaces the older
// session, which gets <conflict/>.
func TestBindConflict(t *testing.T) {
	f := start(t, nil)
	c1 := f.login(t, "alice", "phone1")
	c1.enableSM()
	c1.presence()
	c1.ping()

	c2 := f.login(t, "alice", "phone1")
	c1.expectStreamError("conflict")
	c2.presence()
	id := f.sendTo(t, "alice", "to the new session")
	require.Equal(t, id, c2.message().Attr("id"))

	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.True(t, devs[0].Online)

	// A replaced session with stream management cannot be resumed.
	c3 := dialTLS(t, f.g.XMPPSAddr, domain)
	c3.Open()
	c3.Authenticate("alice", "secret-alice")
	c3.Send("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>")
	c3.Expect("failed")
}

// smLogin logs alice in on phone1 with stream management and initial
// presence; it returns the client and the stream management id.
func smLogin(t *testing.T, f *fixture) (*client, string) {
	c := f.login(t, "alice", "phone1")
	id := c.enableSM()
	c.presence()
	return c, id
}

// resumeOn reconnects, authenticates and sends <resume/>; it returns the
// answer (<resumed/> or <failed/>).
func resumeOn(t *testing.T, f *fixture, previd string, h int) (*client, *xmpptest.Node) {
	c := dialTLS(t, f.g.XMPPSAddr, domain)
	c.Open()
	feat := c.Authenticate("alice", "secret-alice")
	require.NotNil(t, feat.Child(sdkproto.NSSM, "sm"), "got %s", feat)
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", previd, h))
	for {
		n, err := c.Next()
		require.NoError(t, err)
		if n.XMLName.Local == "resumed" || n.XMLName.Local == "failed" {
			require.Equal(t, sdkproto.NSSM, n.XMLName.Space)
			return c, n
		}
		t.Fatalf("before the resume answer: %s", n)
	}
}

// TestStreamManagementResume: messages unacknowledged when the connection
// drops come again on resumption, same ids, in order; nothing acknowledged
// comes twice.
func TestStreamManagementResume(t *testing.T) {
	f := start(t, nil)
	c, smID := smLogin(t, f)
	ids := []string{f.sendTo(t, "alice", "one"), f.sendTo(t, "alice", "two"), f.sendTo(t, "alice", "three")}
	for i, id := range ids {
		m := c.message() // <r/> requests are read and not answered
		require.Equal(t, id, m.Attr("id"), "message %d", i)
	}
	for _, id := range ids {
		f.waitStatus(t, id, "sent")
	}
	c.Drop()

	c2, n := resumeOn(t, f, smID, 1)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	require.Equal(t, smID, n.Attr("previd"))
	require.Equal(t, "1", n.Attr("h"), "the gateway handled one stanza of ours: the presence")
	for i, id := range ids[1:] {
		m := c2.message()
		require.Equal(t, id, m.Attr("id"), "resent message %d", i)
		require.Equal(t, []string{"two", "three"}[i], m.Child("", "body").Text)
		require.NotNil(t, m.Child(sdkproto.NSDelay, "delay"))
	}
	require.Empty(t, c2.ping(), "nothing but the unacknowledged messages")
	f.waitStatus(t, ids[0], "delivered") // h='1' covered the first
	require.Equal(t, "sent", f.status(t, ids[1]))
	require.Equal(t, "sent", f.status(t, ids[2]))

	// Acknowledge the two: their stanzas are the 2nd and 3rd the gateway
	// counted on this stream.
	c2.Send("<a xmlns='urn:xmpp:sm:3' h='3'/>")
	f.waitStatus(t, ids[1], "delivered")
	f.waitStatus(t, ids[2], "delivered")

	// Live messages still flow on the resumed stream.
	live := f.sendTo(t, "alice", "four")
	m := c2.message()
	require.Equal(t, live, m.Attr("id"))
	// The gateway asks, the client answers: ping result (4), live (5).
	c2.Send("<r xmlns='urn:xmpp:sm:3'/>")
	a := c2.Expect("a")
	require.Equal(t, "2", a.Attr("h"), "h goes on across resumption: the presence, then the ping")
	c2.Send("<a xmlns='urn:xmpp:sm:3' h='5'/>")
	f.waitStatus(t, live, "delivered")

	// Dropped again with everything acknowledged: nothing comes again.
	c2.Drop()
	c3, n := resumeOn(t, f, smID, 5)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	require.Empty(t, c3.ping())
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.True(t, devs[0].Online)
}

// TestStreamManagementResumeUnderLoad: live messages posted while the
// device drops and resumes over and over all reach it (at least once):
// none is lost to a hand-off during the takeover of the old session.
func TestStreamManagementResumeUnderLoad(t *testing.T) {
	f := start(t, nil)
	c, smID := smLogin(t, f)
	const n = 150
	sent := make(chan string, n)
	sendErr := make(chan error, 1)
	go func() {
		defer close(sent)
		for i := range n {
			r, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: fmt.Sprint(i)}, "")
			if err != nil {
				sendErr <- err
				return
			}
			sent <- r.Messages[0].ID
		}
	}()
	t.Cleanup(func() {
		for range sent { // the sender ends before the gateway stops
		}
	})
	got := map[string]bool{}
	var all []string
	h := 0 // stanzas received since <enable/>: messages and ping results
	for done := false; !done; {
		msgs := c.ping()
		for _, m := range msgs {
			got[m.Attr("id")] = true
		}
		h += len(msgs) + 1
	drain:
		for {
			select {
			case id, ok := <-sent:
				if !ok {
					done = true
					break drain
				}
				all = append(all, id)
			default:
				break drain
			}
		}
		if !done {
			c.Drop()
			var res *xmpptest.Node
			c, res = resumeOn(t, f, smID, h)
			require.Equal(t, "resumed", res.XMLName.Local, "got %s", res)
		}
	}
	select {
	case err := <-sendErr:
		require.NoError(t, err)
	default:
	}
	require.Len(t, all, n)
	checkFor(t, step, 10*time.Millisecond, func() error {
		for _, m := range c.ping() {
			got[m.Attr("id")] = true
		}
		var missing []string
		for _, id := range all {
			if !got[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d never arrived: %v", len(missing), len(all), missing)
		}
		return nil
	})
}

// TestStreamManagementResumeWithBacklog: a device with more queued than
// the window takes a window's worth, drops, and resumes acknowledging all
// of it: the rest of the backlog and new messages follow on the resumed
// stream. (The resumed session inherited "more is pending" with nothing in
// flight; only an ack read the queue again, and none could come: it got
// nothing more until the device logged in afresh.)
func TestStreamManagementResumeWithBacklog(t *testing.T) {
	f := start(t, nil)
	const backlog = 300 // over the window (256) and two pending pages (128)
	r, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "first"}, "")
	require.NoError(t, err)
	ids := []string{r.Messages[0].ID}
	for i := 1; i < backlog; i++ {
		ids = append(ids, f.sendTo(t, "alice", fmt.Sprint(i)))
	}
	c, smID := smLogin(t, f)
	first := c.ping() // the gateway answers the ping once the window is written
	require.NotEmpty(t, first)
	require.Less(t, len(first), backlog, "the window holds back part of the backlog")
	for i, m := range first {
		require.Equal(t, ids[i], m.Attr("id"), "message %d", i)
	}
	c.Drop()

	// Everything written is acknowledged: the messages and the ping result.
	c2, n := resumeOn(t, f, smID, len(first)+1)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	live := ""
	var rest []string
	// No <a/> unasked: the device answers the gateway's <r/> only, as
	// SDKs do (an unasked ack would read the queue again by itself).
	checkFor(t, step, 10*time.Millisecond, func() error {
		msgs := c2.ping()
		for _, m := range msgs {
			rest = append(rest, m.Attr("id"))
		}
		if len(first)+len(rest) < backlog {
			return fmt.Errorf("%d of %d backlog messages after the resumption", len(rest), backlog-len(first))
		}
		if live == "" {
			live = f.sendTo(t, "alice", "live")
			return fmt.Errorf("waiting for the live message")
		}
		if rest[len(rest)-1] != live {
			return fmt.Errorf("waiting for the live message")
		}
		return nil
	})
	require.Equal(t, append(ids[len(first):], live), rest, "the rest of the backlog, in order, then the live message")
}

// TestStreamManagementResumeExpired: resumption after the window fails
// cleanly, and a fresh session gets the unacknowledged messages from the
// queue, same ids, in order.
func TestStreamManagementResumeExpired(t *testing.T) {
	f := start(t, func(c *gateway.Config) { c.SessionResumeWindow = time.Second })
	c := f.login(t, "alice", "phone1")
	c.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	en := c.Expect("enabled")
	require.Equal(t, "1", en.Attr("max"))
	smID := en.Attr("id")
	c.presence()
	ids := []string{f.sendTo(t, "alice", "one"), f.sendTo(t, "alice", "two"), f.sendTo(t, "alice", "three")}
	for _, id := range ids {
		require.Equal(t, id, c.message().Attr("id"))
	}
	c.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
	f.waitStatus(t, ids[0], "delivered")
	c.Drop()

	// The device goes offline once the window has passed.
	checkFor(t, step, 20*time.Millisecond, func() error {
		devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
		if err != nil {
			return err
		}
		if len(devs) != 1 || devs[0].Online {
			return fmt.Errorf("devices %+v", devs)
		}
		return nil
	})

	c2, n := resumeOn(t, f, smID, 3)
	require.Equal(t, "failed", n.XMLName.Local, "got %s", n)
	require.NotNil(t, n.Child(sdkproto.NSStanzas, "item-not-found"), "got %s", n)
	// The stream goes on: a fresh session on it.
	c2.BindJID("phone1")
	c2.presence()
	for i, id := range ids[1:] {
		m := c2.message()
		require.Equal(t, id, m.Attr("id"), "message %d", i)
	}
	require.Empty(t, c2.ping())
	// The h of the failed resumption acknowledged nothing.
	require.Equal(t, "sent", f.status(t, ids[1]))
	require.Equal(t, "sent", f.status(t, ids[2]))
	for _, id := range ids[1:] {
		c2.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + id + "'/></message>")
		f.waitStatus(t, id, "delivered")
	}

	var offline int
	for _, e := range f.events(t, f.app, "acme") {
		if e.Type == "device.offline" {
			offline++
			require.Equal(t, "resume_expired", e.Reason)
		}
	}
	require.Equal(t, 1, offline)
}

// TestStreamManagementCounts: h counts only stanzas since <enable/>
// (XEP-0198 section 4), not those between bind and enable.
func TestStreamManagementCounts(t *testing.T) {
	f := start(t, nil)
	c := f.login(t, "alice", "phone1")
	n := c.iq("s1", "set", "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>")
	require.Equal(t, "result", n.Attr("type"))
	c.iq("r1", "get", "<query xmlns='jabber:iq:roster'/>")
	c.enableSM()
	c.Send("<r xmlns='urn:xmpp:sm:3'/>")
	require.Equal(t, "0", c.Expect("a").Attr("h"))
	c.ping()
	c.presence()
	c.Send("<r xmlns='urn:xmpp:sm:3'/>")
	require.Equal(t, "2", c.Expect("a").Attr("h"))
	// SM requests before bind or twice fail without ending the stream.
	c.Send("<enable xmlns='urn:xmpp:sm:3'/>")
	c.Expect("failed")
	c.ping()
}

// TestIQ: disco#info, ping, roster, unknown IQs, push registration and
// client config.
func TestIQ(t *testing.T) {
	f := start(t, nil)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{ClientConfig: json.RawMessage(`{"theme":"dark","limits":{"n":3},"s":"<&>"}`)})
	require.NoError(t, err)
	c := f.login(t, "alice", "phone1")

	n := c.iq("d1", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
	require.Equal(t, "result", n.Attr("type"), "got %s", n)
	q := n.Child(sdkproto.NSDiscoInfo, "query")
	require.NotNil(t, q, "got %s", n)
	require.NotNil(t, q.Child("", "identity"))
	var features []string
	for _, c := range q.Nodes {
		if c.XMLName.Local == "feature" {
			features = append(features, c.Attr("var"))
		}
	}
	require.ElementsMatch(t, []string{
		sdkproto.NSDiscoInfo, sdkproto.NSPing, sdkproto.NSSM, sdkproto.NSReceipts, sdkproto.NSMarkers,
		sdkproto.NSDelay, sdkproto.NSReply, sdkproto.NSRoster, sdkproto.NSData, sdkproto.NSExpire,
		sdkproto.NSChannel, sdkproto.NSPush, sdkproto.NSConfig,
	}, features)
	n = c.iq("d2", "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
	require.Equal(t, "result", n.Attr("type"))
	c.Send("<iq type='get' id='d3' to='acme.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
	n = c.Expect("iq")
	require.Equal(t, "result", n.Attr("type"), "disco#info on the app domain: %s", n)

	n = c.iq("p1", "get", "<ping xmlns='urn:xmpp:ping'/>")
	require.Equal(t, "result", n.Attr("type"))
	require.Empty(t, n.Nodes)

	n = c.iq("r1", "get", "<query xmlns='jabber:iq:roster'/>")
	require.Equal(t, "result", n.Attr("type"))
	rq := n.Child(sdkproto.NSRoster, "query")
	require.NotNil(t, rq, "got %s", n)
	require.Empty(t, rq.Nodes)

	for i, payload := range []string{
		"<query xmlns='jabber:iq:version'/>",
		"<vCard xmlns='vcard-temp'/>",
		"<query xmlns='jabber:iq:roster'><item jid='bob@acme.localhost'/></query>", // a roster set
		"<push xmlns='urn:tether:push:0' provider='fcm' token='t'/>",               // push is a set
	} {
		id := fmt.Sprintf("u%d", i)
		typ := "get"
		if strings.Contains(payload, "item") {
			typ = "set"
		}
		n = c.iq(id, typ, payload)
		require.Equal(t, "error", n.Attr("type"), "%s: %s", payload, n)
		e := n.Child("", "error")
		require.NotNil(t, e, "got %s", n)
		require.NotNil(t, e.Child(sdkproto.NSStanzas, "service-unavailable"), "%s: %s", payload, n)
	}
	n = c.iq("e1", "get", "")
	require.Equal(t, "error", n.Attr("type"), "an IQ without payload: %s", n)

	n = c.iq("push1", "set", "<push xmlns='urn:tether:push:0' provider='fcm' token='tok123456789'/>")
	require.Equal(t, "result", n.Attr("type"), "got %s", n)
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, "phone1", devs[0].Device)
	require.Equal(t, &api.PushView{Provider: "fcm", TokenSuffix: "456789"}, devs[0].Push)
	n = c.iq("push2", "set", "<push xmlns='urn:tether:push:0' provider='carrier-pigeon' token='x'/>")
	require.Equal(t, "error", n.Attr("type"), "got %s", n)
	n = c.iq("push3", "set", "<push xmlns='urn:tether:push:0' provider='none'/>")
	require.Equal(t, "result", n.Attr("type"), "got %s", n)
	devs, err = f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Nil(t, devs[0].Push)

	n = c.iq("cfg1", "get", "<config xmlns='urn:tether:config:0'/>")
	require.Equal(t, "result", n.Attr("type"), "got %s", n)
	cfg := n.Child(sdkproto.NSConfig, "config")
	require.NotNil(t, cfg, "got %s", n)
	require.JSONEq(t, `{"theme":"dark","limits":{"n":3},"s":"<&>"}`, cfg.Text)

	// Before bind, IQs other than bind are refused.
	c2 := dialTLS(t, f.g.XMPPSAddr, domain)
	c2.Open()
	c2.Authenticate("bob", "secret-bob")
	n = c2.iq("early", "get", "<ping xmlns='urn:xmpp:ping'/>")
	require.Equal(t, "error", n.Attr("type"), "got %s", n)
}

// TestInboundMessage: a message to the app domain with a body is stored,
// answered with a receipt when asked, and shows in the event feed as
// message.inbound.
func TestInboundMessage(t *testing.T) {
	f := start(t, nil)
	orig := f.sendTo(t, "alice", "question?")
	c := f.login(t, "alice", "phone1")
	c.presence()
	require.Equal(t, orig, c.message().Attr("id"))

	c.Send("<message to='acme.localhost' id='in-1' type='chat'><body>answer &lt;42&gt;</body>" +
		"<data xmlns='urn:tether:data:0'>{\"k\":[1,2]}</data>" +
		"<channel xmlns='urn:tether:channel:0'>support</channel>" +
		"<reply xmlns='urn:xmpp:reply:0' to='acme.localhost' id='" + orig + "'/>" +
		"<request xmlns='urn:xmpp:receipts'/></message>")
	r := c.Expect("message")
	require.Equal(t, domain, r.Attr("from"))
	rc := r.Child(sdkproto.NSReceipts, "received")
	require.NotNil(t, rc, "got %s", r)
	require.Equal(t, "in-1", rc.Attr("id"))

	// Without a receipt request: no receipt. With invalid data: an error.
	c.Send("<message to='acme.localhost' id='in-2'><body>no receipt</body></message>")
	c.Send("<message to='acme.localhost' id='in-3'><data xmlns='urn:tether:data:0'>{nope</data><request xmlns='urn:xmpp:receipts'/></message>")
	n := c.Expect("message")
	require.Equal(t, "error", n.Attr("type"), "got %s", n)
	require.Equal(t, "in-3", n.Attr("id"))
	require.Empty(t, c.ping())

	var inbound []api.Event
	for _, e := range f.events(t, f.app, "acme") {
		if e.Type == "message.inbound" {
			inbound = append(inbound, e)
		}
	}
	require.Len(t, inbound, 2)
	e := inbound[0]
	require.Equal(t, "answer <42>", e.Body)
	require.JSONEq(t, `{"k":[1,2]}`, string(e.Data))
	require.Equal(t, "alice", e.User)
	require.Equal(t, "phone1", e.Device)
	require.Equal(t, "support", e.Channel)
	require.Equal(t, orig, e.InReplyTo)
	require.Equal(t, "no receipt", inbound[1].Body)
	require.Empty(t, inbound[1].InReplyTo)
}

// TestWebSocket: a whole session over RFC 7395 framing: <open/>, SASL,
// <open/> again, bind, presence, a message, receipt, <close/> answered
// with <close/>.
func TestWebSocket(t *testing.T) {
	f := start(t, nil)
	queued := f.sendTo(t, "alice", "queued")

	c := dialWS(t, f.g.URL, domain)
	feat := c.Open()
	require.Equal(t, sdkproto.Mechanisms, xmpptest.Mechanisms(feat), "PLAIN over ws:// from loopback")
	n := c.scram("SCRAM-SHA-256", "alice", "secret-alice")
	require.Equal(t, "success", n.XMLName.Local, "got %s", n)
	feat = c.Open()
	require.NotNil(t, feat.Child(sdkproto.NSBind, "bind"), "got %s", feat)
	require.Equal(t, "alice@acme.localhost/browser1", c.BindJID("browser1"))
	c.enableSM()
	c.presence()
	m := c.message()
	require.Equal(t, queued, m.Attr("id"))
	require.Equal(t, "queued", m.Child("", "body").Text)
	live := f.sendTo(t, "alice", strings.Repeat("x", 8<<10)) // larger than one 4 KiB frame
	m = c.message()
	require.Equal(t, live, m.Attr("id"))
	require.Len(t, m.Child("", "body").Text, 8<<10)
	c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + queued + "'/></message>")
	c.Send("<a xmlns='urn:xmpp:sm:3' h='2'/>")
	f.waitStatus(t, queued, "delivered")
	f.waitStatus(t, live, "delivered")
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Equal(t, "websocket", devs[0].Transport)

	c.Send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
	c.expectClosed()
	checkFor(t, step, 10*time.Millisecond, func() error {
		if f.g.Sessions().Online("acme", "alice", "browser1") {
			return fmt.Errorf("still online")
		}
		return nil
	})
}

// TestWebSocketNotWellFormed: a frame that is not one well-formed element
// gets the stream error.
func TestWebSocketNotWellFormed(t *testing.T) {
	f := start(t, nil)
	for _, frame := range []string{
		"<message><body></message>",
		"<message/><message/>",
		"not xml",
		"<presence/>trailing",
	} {
		t.Run(frame, func(t *testing.T) {
			t.Parallel()
			c := dialWS(t, f.g.URL, domain)
			c.Open()
			c.Plain("", "bob", "secret-bob")
			c.Open()
			c.Send(frame)
			c.expectStreamError("not-well-formed")
		})
	}
	t.Run("before open", func(t *testing.T) {
		t.Parallel()
		c := dialWS(t, f.g.URL, domain)
		c.Send("<<")
		c.Expect("open")
		c.expectStreamError("not-well-formed")
	})
}

// TestWebSocketLimits: an oversized frame or no authentication in time
// closes the WebSocket; a WebSocket session and a TCP one replace each
// other on bind.
func TestWebSocketLimits(t *testing.T) {
	f := start(t, func(c *gateway.Config) { c.SessionAuthTimeout = time.Second })
	t.Run("oversized frame", func(t *testing.T) {
		t.Parallel()
		c := dialWS(t, f.g.URL, domain)
		c.Open()
		c.Plain("", "bob", "secret-bob")
		c.Open()
		c.BindJID("big")
		c.Send("<message to='acme.localhost'><body>" + strings.Repeat("a", sdkproto.MaxStanzaBytes) + "</body></message>")
		// The stream error and <close/> (RFC 7395 3.6), then the close
		// frame with 1009, known from the frame's header alone.
		n, err := c.Next()
		require.NoError(t, err)
		require.Equal(t, "error", n.XMLName.Local, "got %s", n)
		require.NotNil(t, n.Child(sdkproto.NSStreams, "policy-violation"), "got %s", n)
		n, err = c.Next()
		require.NoError(t, err)
		require.Equal(t, "close", n.XMLName.Local, "got %s", n)
		_, err = c.Next()
		require.Equal(t, websocket.StatusMessageTooBig, websocket.CloseStatus(err), "got %v", err)
		f.login(t, "bob", "after").ping()
	})
	t.Run("binary message", func(t *testing.T) {
		t.Parallel()
		c := dialWS(t, f.g.URL, domain)
		c.Open()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, c.ws.Write(ctx, websocket.MessageBinary, []byte("<presence/>")))
		// RFC 7395 3.2: text only. The stream error, <close/>, then the
		// close frame with 1003.
		n, err := c.Next()
		require.NoError(t, err)
		require.NotNil(t, n.Child(sdkproto.NSStreams, "not-well-formed"), "got %s", n)
		n, err = c.Next()
		require.NoError(t, err)
		require.Equal(t, "close", n.XMLName.Local, "got %s", n)
		_, err = c.Next()
		require.Equal(t, websocket.StatusUnsupportedData, websocket.CloseStatus(err), "got %v", err)
	})
	t.Run("auth timeout", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		c := dialWS(t, f.g.URL, domain)
		c.Open()
		// <connection-timeout/>, <close/>, then the connection ends.
		c.expectStreamError("connection-timeout")
		require.Less(t, time.Since(t0), 5*time.Second)
	})
	t.Run("bind conflict across transports", func(t *testing.T) {
		t.Parallel()
		tcp := f.login(t, "alice", "phone1")
		tcp.presence()
		ws := dialWS(t, f.g.URL, domain)
		ws.Open()
		ws.Plain("", "alice", "secret-alice")
		ws.Open()
		ws.BindJID("phone1")
		tcp.expectStreamError("conflict")
		ws.presence()
		ws.ping()
		tcp2 := f.login(t, "alice", "phone1")
		ws.expectStreamError("conflict")
		tcp2.ping()
	})
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestStreamManagementCountsFromEnable: a message written before <enabled/>
// is not counted by XEP-0198, so no <a/> covers it (xmpp.js sends presence
// before <enable/>); only a receipt marks it delivered.
func TestStreamManagementCountsFromEnable(t *testing.T) {
	f := start(t, nil)
	early := f.sendTo(t, "alice", "before enable")
	c := f.login(t, "alice", "phone1")
	c.presence()
	m := c.message()
	require.Equal(t, early, m.Attr("id"))
	f.waitStatus(t, early, "sent")
	c.enableSM()
	c.Send("<a xmlns='urn:xmpp:sm:3' h='0'/>")
	live := f.sendTo(t, "alice", "after enable")
	require.Equal(t, live, c.message().Attr("id"))
	c.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
	f.waitStatus(t, live, "delivered")
	require.Empty(t, c.ping())
	require.Equal(t, "sent", f.status(t, early), "an <a/> covered a message sent before <enabled/>")
	c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + early + "'/></message>")
	f.waitStatus(t, early, "delivered")
}

// TestIdleSessionsPark: a ready TCP session with nothing to read gives up
// its reader goroutine (tether_sessions_parked counts it) and still gets
// live messages, answers pings, acknowledges, and wakes for every stanza;
// the count follows sessions that end.
func TestIdleSessionsPark(t *testing.T) {
	f := start(t, nil)
	parked := func() int {
		resp, err := http.Get("http://" + f.g.Addr("metrics") + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "tether_sessions_parked "); ok {
				n, err := strconv.Atoi(v)
				require.NoError(t, err)
				return n
			}
		}
		t.Fatal("no tether_sessions_parked in /metrics")
		return 0
	}
	waitParked := func(want int) {
		t.Helper()
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if n := parked(); n != want {
				return fmt.Errorf("parked %d, want %d", n, want)
			}
			return nil
		})
	}
	var cs []*client
	for _, dev := range []string{"phone1", "phone2", "phone3"} {
		c := f.login(t, "alice", dev)
		c.enableSM()
		c.presence()
		cs = append(cs, c)
	}
	ws := dialWS(t, f.g.URL, domain)
	ws.Open()
	ws.Plain("", "alice", "secret-alice")
	ws.Open()
	ws.BindJID("desktop")
	ws.enableSM()
	ws.presence()
	cs = append(cs, ws)
	waitParked(4)
	for round := range 3 {
		id := f.sendTo(t, "alice", fmt.Sprintf("live %d", round))
		for _, c := range cs {
			require.Equal(t, id, c.message().Attr("id"))
			c.ping()
		}
		waitParked(4)
		for _, c := range cs {
			c.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", 2*round+1)) // the message; the ping's answer follows it
		}
		f.waitStatus(t, id, "delivered")
		waitParked(4)
	}
	cs[0].Send("</stream:stream>")
	cs[0].RequireEOF()
	waitParked(3)
	f.login(t, "alice", "phone2").presence() // replaces a parked session
	cs[1].expectStreamError("conflict")
	waitParked(3)
	// A WebSocket ping wakes the session and gets its pong (the client
	// reads the pong while it reads the answers to XMPP pings).
	pinged := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pinged <- ws.ws.Ping(ctx)
	}()
	for done := false; !done; {
		ws.ping()
		select {
		case err := <-pinged:
			require.NoError(t, err)
			done = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	waitParked(3)
	ws.Send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
	waitParked(2)
}

// TestAckRequestsFollowReceipts: with stream management each message comes
// with an <r/>, until the device answers a receipt; from then on messages
// come without one (the receipts acknowledge them), and <a/> still works.
func TestAckRequestsFollowReceipts(t *testing.T) {
	f := start(t, nil)
	c := f.login(t, "alice", "phone1")
	c.enableSM()
	c.presence()
	m1 := f.sendTo(t, "alice", "one")
	n, err := c.Next()
	require.NoError(t, err)
	require.Equal(t, m1, n.Attr("id"))
	n, err = c.Next()
	require.NoError(t, err)
	require.Equal(t, "r", n.XMLName.Local, "an ack request after the message, got %s", n)
	c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + m1 + "'/></message>")
	f.waitStatus(t, m1, "delivered")
	m2 := f.sendTo(t, "alice", "two")
	m3 := f.sendTo(t, "alice", "three")
	for _, want := range []string{m2, m3} {
		n, err := c.Next()
		require.NoError(t, err)
		require.Equal(t, "message", n.XMLName.Local, "no <r/> once receipts come, got %s", n)
		require.Equal(t, want, n.Attr("id"))
	}
	c.Send("<a xmlns='urn:xmpp:sm:3' h='3'/>") // m1 (h 1), m2, m3
	f.waitStatus(t, m3, "delivered")
}

// A message acknowledged soon after it was written is recorded sent and
// delivered in one commit (one time for both events); one never
// acknowledged is recorded sent on its own within the half second the
// session waits, and one still waiting when the session ends, at the end.
func TestSentRecordedWithTheAck(t *testing.T) {
	f := start(t, nil)
	c := f.login(t, "alice", "phone1")
	c.enableSM()
	c.presence()
	m1 := f.sendTo(t, "alice", "acked")
	n, err := c.Next()
	require.NoError(t, err)
	require.Equal(t, m1, n.Attr("id"))
	n, err = c.Next()
	require.NoError(t, err)
	require.Equal(t, "r", n.XMLName.Local) // until the first receipt
	c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + m1 + "'/></message>")
	f.waitStatus(t, m1, "delivered")

	m2 := f.sendTo(t, "alice", "never acked")
	n, err = c.Next()
	require.NoError(t, err)
	require.Equal(t, m2, n.Attr("id"))
	f.waitStatus(t, m2, "sent")

	at := map[string]map[string]time.Time{m1: {}, m2: {}}
	for _, e := range f.events(t, f.app, "acme") {
		if at[e.MessageID] != nil {
			at[e.MessageID][e.Type] = e.At
		}
	}
	require.Len(t, at[m1], 2, "sent and delivered: %v", at[m1])
	require.Equal(t, at[m1]["message.sent"], at[m1]["message.delivered"], "one commit")
	require.Contains(t, at[m2], "message.sent")

	m3 := f.sendTo(t, "alice", "in flight at the close")
	n, err = c.Next()
	require.NoError(t, err)
	require.Equal(t, m3, n.Attr("id"))
	c.Send("</stream:stream>")
	f.waitStatus(t, m3, "sent")
}

// TestAckTimeout: a device from which nothing comes after the gateway's
// <r/> (gone without closing its connection, or stuck) counts as a lost
// connection after the ack timeout: the gateway closes the connection,
// the message stays "sent", and comes again on resumption. A device that
// answers stays connected however long it is quiet afterwards.
func TestAckTimeout(t *testing.T) {
	const ackTimeout = time.Second // the answering device's budget to read and answer, under -race on a busy machine
	f := start(t, func(c *gateway.Config) { c.SessionAckTimeout = ackTimeout })
	c, smID := smLogin(t, f)
	asked := time.Now() // before the message: the timer starts when the <r/> after it is queued
	id := f.sendTo(t, "alice", "one")
	m := c.message()
	require.Equal(t, id, m.Attr("id"))
	c.Expect("r") // and no answer
	c.RequireEOF()
	require.GreaterOrEqual(t, time.Since(asked), ackTimeout-50*time.Millisecond, "closed before the ack timeout")
	f.waitStatus(t, id, "sent")

	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	m = c2.message()
	require.Equal(t, id, m.Attr("id"), "the unacknowledged message comes again")
	c2.Expect("r")
	c2.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
	f.waitStatus(t, id, "delivered")

	// Answered: quiet for several ack timeouts, the session stays.
	id2 := f.sendTo(t, "alice", "two")
	m = c2.message()
	require.Equal(t, id2, m.Attr("id"))
	c2.Expect("r")
	c2.Send("<a xmlns='urn:xmpp:sm:3' h='2'/>")
	time.Sleep(3 * ackTimeout)
	require.Empty(t, c2.ping(), "the answering session is still up")
	f.waitStatus(t, id2, "delivered")
}

// TestBacklogOfLargeMessages: a backlog of messages near the payload limit
// reaches a device that neither enables stream management nor sends
// receipts, all of it and in order, then a live message: the session reads
// the queue again each time its output has gone out, and never queues
// more than its output bound at once (a whole page of such messages is
// over it, which ended the session as a slow consumer).
func TestBacklogOfLargeMessages(t *testing.T) {
	f := start(t, nil)
	const backlog = 300 // over two pending pages (128)
	body := strings.Repeat("x", 12<<10)
	var ids []string
	for i := range backlog {
		ids = append(ids, f.sendTo(t, "alice", fmt.Sprintf("%04d%s", i, body)))
	}
	c := f.login(t, "alice", "phone1")
	c.presence()
	var got []string
	for len(got) < backlog {
		n, err := c.NextWithin(10 * time.Second)
		require.NoError(t, err, "after %d of %d messages", len(got), backlog)
		require.Equal(t, "message", n.XMLName.Local, "after %d messages: %s", len(got), n)
		got = append(got, n.Attr("id"))
	}
	require.Equal(t, ids, got, "the backlog, in order")
	live := f.sendTo(t, "alice", "live")
	require.Equal(t, live, c.message().Attr("id"), "a live message after the backlog")
}

// TestBacklogOfLargeMessagesResumed: the same backlog with stream
// management, and a resumption that acknowledges nothing: the messages in
// flight go out again at once, which the session keeps under its output
// bound, and the device gets the whole backlog in order.
func TestBacklogOfLargeMessagesResumed(t *testing.T) {
	f := start(t, nil)
	const backlog = 300
	body := strings.Repeat("x", 12<<10)
	var ids []string
	for i := range backlog {
		ids = append(ids, f.sendTo(t, "alice", fmt.Sprintf("%04d%s", i, body)))
	}
	c, smID := smLogin(t, f)
	for i := range 20 {
		require.Equal(t, ids[i], c.message().Attr("id"))
	}
	c.Drop()
	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	var got []string
	for len(got) < backlog {
		n, err := c2.NextWithin(10 * time.Second)
		require.NoError(t, err, "after %d of %d messages", len(got), backlog)
		switch n.XMLName.Local {
		case "message":
			got = append(got, n.Attr("id"))
		case "r":
			c2.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", len(got)))
		default:
			t.Fatalf("after %d messages: %s", len(got), n)
		}
	}
	require.Equal(t, ids, got, "the backlog, in order, from the first unacknowledged message")
}
