package session_test

// Edge cases of the device protocol (SPEC sections 4 and 6,
// docs/protocol.md). Every test talks to a real
// gateway over loopback through the raw-XML client of helpers_test.go.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/xmpptest"
	"tether/sdkproto"
)

// loginWS logs user in over WebSocket and binds resource.
func loginWS(t *testing.T, f *fixture, user, resource string) *client {
	t.Helper()
	c := dialWS(t, f.g.URL, domain)
	c.Login(user, "secret-"+user, resource)
	return c
}

// deviceStatus returns the per-device status of message id for device.
func deviceStatus(t *testing.T, f *fixture, id, device string) string {
	t.Helper()
	st, err := f.app.GetMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	for _, d := range st.Devices {
		if d.Device == device {
			return d.Status
		}
	}
	return ""
}

// eventCount counts the app's events of type typ for message id.
func eventCount(t *testing.T, f *fixture, typ, id string) int {
	t.Helper()
	n := 0
	for _, e := range f.events(t, f.app, "acme") {
		if e.Type == typ && e.MessageID == id {
			n++
		}
	}
	return n
}

// TestResumeBeforePresence: a device binds and enables stream
// management, and its connection drops before its initial presence
// reached the gateway (or was handled). It resumes, and sends the presence
// it has not seen counted (the Go SDK resends every stanza the <resumed h>
// does not cover, presence included). Messages must then flow: pending ones
// and live ones.
func TestResumeBeforePresence(t *testing.T) {
	f := start(t, nil)
	pending := f.sendTo(t, "alice", "waiting before the login")
	c := f.login(t, "alice", "phone1")
	smID := c.enableSM()
	c.Drop() // lost before <presence/>

	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	require.Equal(t, "0", n.Attr("h"), "the gateway handled no stanza of ours")
	c2.presence() // the unacknowledged presence, resent
	live := f.sendTo(t, "alice", "live after the resumption")
	var got []string
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, m := range c2.ping() {
			got = append(got, m.Attr("id"))
		}
		if len(got) < 2 {
			return fmt.Errorf("resumed session before initial presence: got %v, want [%s %s]", got, pending, live)
		}
		return nil
	})
	require.Equal(t, []string{pending, live}, got)
}

// TestSCRAMUserWithEquals: user ids may contain '=' (SPEC section 1:
// [A-Za-z0-9._+=-]); SCRAM escapes it as "=3D" in the username. Such a user
// logs in with every offered mechanism, as with PLAIN.
func TestSCRAMUserWithEquals(t *testing.T) {
	f := start(t, nil)
	const user = "a=b"
	_, err := f.app.PutUser(f.ctx, "acme", user, api.PutUserRequest{Password: "secret-" + user})
	require.NoError(t, err)
	for _, mech := range sdkproto.Mechanisms {
		t.Run(mech, func(t *testing.T) {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			var n *xmpptest.Node
			if mech == "PLAIN" {
				n = c.Plain("", user, "secret-"+user)
			} else {
				n = c.scram(mech, user, "secret-"+user)
			}
			require.Equal(t, "success", n.XMLName.Local, "%s for user %q: %s", mech, user, n)
			c.Restart()
			c.Open()
			require.Equal(t, user+"@"+domain+"/phone-"+strings.ToLower(mech), c.BindJID("phone-"+strings.ToLower(mech)))
		})
	}
}

// TestAckWithoutStreamManagement: an XEP-0198 <a/> from a device that
// never enabled stream management acknowledges nothing (XEP-0198 counts
// from <enable/>): its messages stay "sent" and come again on the next
// session.
func TestAckWithoutStreamManagement(t *testing.T) {
	f := start(t, nil)
	c := f.login(t, "alice", "phone1")
	c.presence()
	id := f.sendTo(t, "alice", "one")
	require.Equal(t, id, c.message().Attr("id"))
	f.waitStatus(t, id, "sent")
	c.Send("<a xmlns='urn:xmpp:sm:3' h='0'/>")
	c.ping()
	c.ping()
	require.Equal(t, "sent", f.status(t, id), "an <a/> outside stream management marked the message delivered")
}

// TestHandledCountTooHigh: an <a h/> above the number of stanzas the
// gateway sent ends the stream with <undefined-condition/> and
// <handled-count-too-high/> (XEP-0198 section 4), and acknowledges nothing:
// the message in flight is sent again on the next session. A <resume/>
// with such an h fails, and the session it named stays resumable.
func TestHandledCountTooHigh(t *testing.T) {
	f := start(t, nil)
	c := f.login(t, "alice", "phone1")
	smID := c.enableSM()
	c.presence()
	id := f.sendTo(t, "alice", "in flight")
	require.Equal(t, id, c.message().Attr("id"))
	c.Send("<a xmlns='urn:xmpp:sm:3' h='1000'/>") // 1 sent
	var e *xmpptest.Node
	for e == nil {
		n, err := c.Next()
		require.NoError(t, err)
		if n.XMLName.Space == sdkproto.NSStream && n.XMLName.Local == "error" {
			e = n
		}
	}
	require.NotNil(t, e.Child("urn:ietf:params:xml:ns:xmpp-streams", "undefined-condition"), "got %s", e)
	hc := e.Child(sdkproto.NSSM, "handled-count-too-high")
	require.NotNil(t, hc, "got %s", e)
	require.Equal(t, "1000", hc.Attr("h"))
	require.Equal(t, "1", hc.Attr("send-count"))
	require.NotEqual(t, "delivered", f.status(t, id), "the bogus count acknowledged the message")

	// A session dropped with messages in flight (the first one too, not
	// acknowledged by this device): a resumption counting one more than
	// were sent fails, and the right count then resumes it.
	c2 := f.login(t, "alice", "phone2")
	smID = c2.enableSM()
	c2.presence()
	id2 := f.sendTo(t, "alice/phone2", "in flight too")
	sent := 0
	for got := ""; got != id2; sent++ {
		got = c2.message().Attr("id")
	}
	c2.Drop()
	c3, n := resumeOn(t, f, smID, sent+1)
	require.Equal(t, "failed", n.XMLName.Local, "got %s", n)
	require.NotNil(t, n.Child(sdkproto.NSSM, "handled-count-too-high"), "got %s", n)
	c3.Drop()
	_, n = resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
}

// streamErrorOrPong sends a ping and reads until its answer (false)
// or a stream error (true).
func streamErrorOrPong(t *testing.T, c *client) bool {
	t.Helper()
	c.Send("<iq type='get' id='barrier'><ping xmlns='urn:xmpp:ping'/></iq>")
	for {
		n, err := c.Next()
		require.NoError(t, err)
		switch {
		case n.XMLName.Space == sdkproto.NSStream && n.XMLName.Local == "error":
			return true
		case n.XMLName.Local == "iq" && n.Attr("id") == "barrier":
			return false
		}
	}
}

// TestSeveralDevices: a message to a user reaches each of its devices
// (TCP and WebSocket), one to user/device only that device; receipts and
// markers count only for the device and user they come from, whatever id
// they name.
func TestSeveralDevices(t *testing.T) {
	f := start(t, nil)
	p1 := f.login(t, "alice", "phone1")
	p1.enableSM()
	p1.presence()
	p2 := loginWS(t, f, "alice", "phone2")
	p2.presence()
	bob := f.login(t, "bob", "phone1") // the same device name, another user
	bob.presence()
	p1.ping()
	p2.ping()
	bob.ping()

	m1 := f.sendTo(t, "alice", "to every device")
	require.Equal(t, m1, p1.message().Attr("id"))
	require.Equal(t, m1, p2.message().Attr("id"))
	m2 := f.sendTo(t, "alice/phone2", "to phone2 only")
	require.Equal(t, m2, p2.message().Attr("id"))
	m3 := f.sendTo(t, "alice/phone9", "to a device not online")
	require.Empty(t, p1.ping(), "phone1 got a message for another device")
	require.Empty(t, bob.ping(), "bob got alice's messages")
	f.waitStatus(t, m2, "sent")

	// Receipts and markers naming messages that are not theirs.
	rcpt := func(c *client, id string) {
		c.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + id + "'/></message>")
	}
	disp := func(c *client, id string) {
		c.Send("<message to='acme.localhost'><displayed xmlns='urn:xmpp:chat-markers:0' id='" + id + "'/></message>")
	}
	rcpt(p1, m2) // phone2's message
	disp(p1, m2)
	rcpt(p1, m3)  // phone9's message
	rcpt(bob, m1) // alice's message, from bob's device of the same name
	disp(bob, m1)
	for _, bad := range []string{"", "nope", "0000000000000000000000", "00000000000000000000z", "&lt;x&gt;", "zzzzzzzzzzzzzzzzzzzzz"} {
		rcpt(p1, bad)
		disp(p1, bad)
	}
	p1.ping()
	bob.ping()
	require.Equal(t, "sent", f.status(t, m1))
	require.Equal(t, "sent", f.status(t, m2))
	require.Equal(t, "enqueued", f.status(t, m3))
	require.Empty(t, deviceStatus(t, f, m2, "phone1"), "phone1 acknowledged phone2's message")

	// The right device: per-device statuses, the furthest as the
	// message's, one event per change however often it is repeated.
	rcpt(p1, m1)
	f.waitStatus(t, m1, "delivered")
	require.Equal(t, "delivered", deviceStatus(t, f, m1, "phone1"))
	require.Equal(t, "sent", deviceStatus(t, f, m1, "phone2"))
	disp(p2, m1)
	disp(p2, m1)
	rcpt(p2, m1)
	f.waitStatus(t, m1, "read")
	p2.ping()
	require.Equal(t, "read", deviceStatus(t, f, m1, "phone2"))
	require.Equal(t, "delivered", deviceStatus(t, f, m1, "phone1"))
	require.Equal(t, 1, eventCount(t, f, "message.read", m1))
	require.Equal(t, 2, eventCount(t, f, "message.delivered", m1), "one per device")
	// An <a/> covering m1 on phone1 after its receipt changes nothing.
	p1.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
	p1.ping()
	require.Equal(t, 2, eventCount(t, f, "message.delivered", m1))
	// Nothing is sent again to a device that acknowledged.
	p1.Drop()
	p1b := f.login(t, "alice", "phone1")
	p1b.presence()
	require.Empty(t, p1b.ping(), "phone1 got again what it acknowledged")
}

// TestResumeEdgeCases: resumption with a wrong id, with another
// user's id, twice on one stream after a failure, and while the old
// connection is still open.
func TestResumeEdgeCases(t *testing.T) {
	f := start(t, nil)
	bob := f.login(t, "bob", "phone1")
	bobSM := bob.enableSM()
	bob.presence()

	c, smID := smLogin(t, f)
	m1 := f.sendTo(t, "alice", "one")
	require.Equal(t, m1, c.message().Attr("id"))
	c.Drop()

	// A wrong id, then bob's, then the right one, on one stream.
	c2 := dialTLS(t, f.g.XMPPSAddr, domain)
	c2.Open()
	c2.Authenticate("alice", "secret-alice")
	for _, prev := range []string{"", "nope", smID + "x", bobSM} {
		c2.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + prev + "' h='0'/>")
		n := c2.Expect("failed")
		require.NotNil(t, n.Child(sdkproto.NSStanzas, "item-not-found"), "previd %q: %s", prev, n)
	}
	c2.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + smID + "' h='0'/>")
	n := c2.Expect("resumed")
	require.Equal(t, smID, n.Attr("previd"))
	require.Equal(t, m1, c2.message().Attr("id"), "resent after the failed attempts")
	// bob's session was not touched.
	mb := f.sendTo(t, "bob", "for bob")
	require.Equal(t, mb, bob.message().Attr("id"))
	require.Empty(t, c2.ping())

	// Resumed again while c2 is still open: c2 ends, c3 gets what c2
	// did not acknowledge (the message, and the ping's result: XEP-0198
	// sends every stanza not counted again), and live messages.
	c3, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	require.Equal(t, m1, c3.message().Attr("id"))
	require.Equal(t, "result", c3.Expect("iq").Attr("type"))
	c2.RequireEOF()
	m2 := f.sendTo(t, "alice", "two")
	require.Equal(t, m2, c3.message().Attr("id"))
	c3.Send("<a xmlns='urn:xmpp:sm:3' h='3'/>")
	f.waitStatus(t, m1, "delivered")
	f.waitStatus(t, m2, "delivered")
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.True(t, devs[0].Online)
	// The replaced session's end left c3's registration alone.
	require.True(t, f.g.Sessions().Online("acme", "alice", "phone1"))
	m3 := f.sendTo(t, "alice", "three")
	require.Equal(t, m3, c3.message().Attr("id"))
}

// TestPipelinedLogin: the whole login in one write (stream header,
// PLAIN, the second header, bind, enable, presence) gets every answer, in
// order, then the pending message; over TLS and WebSocket.
func TestPipelinedLogin(t *testing.T) {
	f := start(t, nil)
	pending := f.sendTo(t, "alice", "pending")
	header := "<?xml version='1.0'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
	auth := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + b64("\x00alice\x00secret-alice") + "</auth>"
	rest := "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>RES</resource></bind></iq>" +
		"<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
	want := []string{"stream", "features", "success", "stream", "features", "iq", "enabled", "message", "iq"}
	readAll := func(t *testing.T, c *client, want []string) {
		for i, w := range want {
			n, err := c.Next()
			require.NoError(t, err, "element %d (%s)", i, w)
			if n.XMLName.Local == "r" {
				n, err = c.Next()
				require.NoError(t, err)
			}
			require.Equal(t, w, n.XMLName.Local, "element %d: %s", i, n)
			if w == "message" {
				require.Equal(t, pending, n.Attr("id"))
			}
		}
	}
	t.Run("tls", func(t *testing.T) {
		c := dialTLS(t, f.g.XMPPSAddr, domain)
		// One decoder for both streams: the second header nests in the
		// first for encoding/xml, which is fine for reading elements.
		c.Send(header + auth + header + strings.ReplaceAll(rest, "RES", "pipe-tls"))
		readAll(t, c, want)
	})
	t.Run("websocket", func(t *testing.T) {
		c := dialWS(t, f.g.URL, domain)
		open := "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='acme.localhost' version='1.0'/>"
		for _, fr := range []string{open, auth, open,
			"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>pipe-ws</resource></bind></iq>",
			"<enable xmlns='urn:xmpp:sm:3' resume='true'/>", "<presence/>",
			"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"} {
			c.Send(fr)
		}
		readAll(t, c, []string{"open", "features", "success", "open", "features", "iq", "enabled", "message", "iq"})
	})
}

// TestBadInputKeepsMessages: a device that sends malformed XML or an
// oversized stanza with messages unacknowledged gets the stream error; the
// session cannot be resumed, and the next session gets the messages again,
// same ids, in order.
func TestBadInputKeepsMessages(t *testing.T) {
	f := start(t, nil)
	cases := []struct {
		name, dev, input, cond string
		ws                     bool
	}{
		{"not well-formed", "bad1", "<message to='acme.localhost'><body></message>", "not-well-formed", false},
		{"too large", "bad2", "<message to='acme.localhost'><body>" + strings.Repeat("a", sdkproto.MaxStanzaBytes+1024) + "</body></message>", "policy-violation", false},
		{"websocket not well-formed", "bad3", "<message><body></message>", "not-well-formed", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *client
			if tc.ws {
				c = loginWS(t, f, "alice", tc.dev)
			} else {
				c = f.login(t, "alice", tc.dev)
			}
			smID := c.enableSM()
			c.presence()
			ids := []string{f.sendTo(t, "alice/"+tc.dev, "one"), f.sendTo(t, "alice/"+tc.dev, "two")}
			for _, id := range ids {
				require.Equal(t, id, c.message().Attr("id"))
			}
			go c.TrySend(tc.input) // the gateway may stop reading midway
			c.expectStreamError(tc.cond)
			c2, n := resumeOn(t, f, smID, 0)
			require.Equal(t, "failed", n.XMLName.Local, "a session ended by a stream error resumed: %s", n)
			c2.BindJID(tc.dev)
			c2.presence()
			var got []string
			for _, m := range c2.ping() {
				got = append(got, m.Attr("id"))
			}
			require.Equal(t, ids, got)
		})
	}
}

// TestMaxSessionsPerUser: over the per-user cap a new device gets
// <resource-constraint/> and the stream goes on (it may retry); the same
// device rebinding is a replacement, not a new device; another user is
// not limited; a device that leaves frees its place.
func TestMaxSessionsPerUser(t *testing.T) {
	f := start(t, func(c *gateway.Config) { c.MaxSessionsPerUser = 2 })
	p1 := f.login(t, "alice", "phone1")
	p1.presence()
	p2 := f.login(t, "alice", "phone2")
	p2.presence()

	c := dialTLS(t, f.g.XMPPSAddr, domain)
	c.Open()
	c.Authenticate("alice", "secret-alice")
	c.Send("<iq type='set' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone3</resource></bind></iq>")
	n := c.Expect("iq")
	require.Equal(t, "error", n.Attr("type"), "got %s", n)
	require.NotNil(t, n.Child("", "error").Child(sdkproto.NSStanzas, "resource-constraint"), "got %s", n)

	f.login(t, "bob", "phone3").ping()   // bob has his own count
	p1b := f.login(t, "alice", "phone1") // a replacement
	p1.expectStreamError("conflict")
	p1b.presence()
	p1b.ping()

	p2.Send("</stream:stream>")
	p2.RequireEOF()
	checkFor(t, step, 20*time.Millisecond, func() error {
		c.Send("<iq type='set' id='b4'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone3</resource></bind></iq>")
		n := c.Expect("iq")
		if n.Attr("type") != "result" {
			return fmt.Errorf("bind after a device left: %s", n)
		}
		return nil
	})
	c.presence()
	id := f.sendTo(t, "alice", "to both")
	require.Equal(t, id, c.message().Attr("id"))
	require.Equal(t, id, p1b.message().Attr("id"))
}

// TestResumeAfterCancel: a message sent, not acknowledged, then
// cancelled by the backend while the device's connection is down is not
// sent again on resumption (a fresh session does not get it either:
// SPEC section 4, cancelled is final and the message leaves the queues).
func TestResumeAfterCancel(t *testing.T) {
	f := start(t, nil)
	c, smID := smLogin(t, f)
	id := f.sendTo(t, "alice", "cancel me")
	keep := f.sendTo(t, "alice", "keep me")
	require.Equal(t, id, c.message().Attr("id"))
	require.Equal(t, keep, c.message().Attr("id"))
	f.waitStatus(t, id, "sent")
	c.Drop()
	st, err := f.app.CancelMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)

	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	var got []string
	for _, m := range c2.ping() {
		got = append(got, m.Attr("id"))
	}
	require.Equal(t, []string{keep}, got, "the cancelled message came again on the resumed stream")
}

// TestAbruptDisconnects: the connection dropped at every step of the
// login leaves nothing behind: the device is not online (or is replaced
// by the next login), and the next session gets the pending message once.
func TestAbruptDisconnects(t *testing.T) {
	f := start(t, nil)
	stages := []struct {
		name string
		run  func(t *testing.T, dev string) *client
	}{
		{"tcp connect on the STARTTLS port", func(t *testing.T, dev string) *client {
			return dialTCP(t, f.g.XMPPAddr, domain)
		}},
		{"mid STARTTLS", func(t *testing.T, dev string) *client {
			c := dialTCP(t, f.g.XMPPAddr, domain)
			c.Open()
			c.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
			c.Expect("proceed")
			return c
		}},
		{"after the header", func(t *testing.T, dev string) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			return c
		}},
		{"mid SCRAM", func(t *testing.T, dev string) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" + b64("n,,n=alice,r=abcdefghijklmnop") + "</auth>")
			c.Expect("challenge")
			return c
		}},
		{"after SASL success", func(t *testing.T, dev string) *client {
			c := dialTLS(t, f.g.XMPPSAddr, domain)
			c.Open()
			require.Equal(t, "success", c.Plain("", "alice", "secret-alice").XMLName.Local)
			return c
		}},
		{"after bind", func(t *testing.T, dev string) *client {
			return f.login(t, "alice", dev)
		}},
		{"mid stanza after presence", func(t *testing.T, dev string) *client {
			c := f.login(t, "alice", dev)
			c.presence()
			c.message()
			c.Send("<message to='acme.localhost'><body>half")
			return c
		}},
		{"after presence on WebSocket", func(t *testing.T, dev string) *client {
			c := loginWS(t, f, "alice", dev)
			c.presence()
			c.message()
			return c
		}},
	}
	for i, st := range stages {
		t.Run(st.name, func(t *testing.T) {
			dev := fmt.Sprintf("drop%d", i)
			id := f.sendTo(t, "alice/"+dev, "pending for "+dev)
			c := st.run(t, dev)
			c.Drop()
			checkFor(t, step, 20*time.Millisecond, func() error {
				if f.g.Sessions().Online("acme", "alice", dev) {
					return fmt.Errorf("%s still online", dev)
				}
				return nil
			})
			c2 := f.login(t, "alice", dev)
			c2.presence()
			var got []string
			for _, m := range c2.ping() {
				got = append(got, m.Attr("id"))
			}
			require.Equal(t, []string{id}, got)
			c2.Send("<message to='acme.localhost'><received xmlns='urn:xmpp:receipts' id='" + id + "'/></message>")
			f.waitStatus(t, id, "delivered")
		})
	}
}

// TestInboundCountsForResume: inbound messages count in the h the
// gateway reports, so a device that resumes resends only what the gateway
// did not handle, and the backend gets each inbound message once; stanzas
// the gateway ignores (errors, chat states) make no event.
func TestInboundCountsForResume(t *testing.T) {
	f := start(t, nil)
	c, smID := smLogin(t, f)                                                                                         // presence: 1
	c.Send("<message to='acme.localhost' id='in1'><body>first</body></message>")                                     // 2
	c.Send("<message to='acme.localhost' id='e1' type='error'><body>bounced</body></message>")                       // 3
	c.Send("<message to='acme.localhost' id='cs'><active xmlns='http://jabber.org/protocol/chatstates'/></message>") // 4
	c.Send("<message id='in2'><body>second, no to</body></message>")                                                 // 5
	c.Send("<r xmlns='urn:xmpp:sm:3'/>")
	require.Equal(t, "5", c.Expect("a").Attr("h"))
	c.Drop()
	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	require.Equal(t, "5", n.Attr("h"))
	var bodies []string
	for _, e := range f.events(t, f.app, "acme") {
		if e.Type == "message.inbound" {
			bodies = append(bodies, e.Body)
			require.Equal(t, "phone1", e.Device)
		}
	}
	require.Equal(t, []string{"first", "second, no to"}, bodies)
	c2.ping()
}

// TestSlowReader: a device that stops reading for a while (under the
// write timeout) with a backlog several times the output bound, then reads
// at its own pace, gets every message once, in order, without a stream
// error.
func TestSlowReader(t *testing.T) {
	f := start(t, func(c *gateway.Config) { c.SessionAckTimeout = 30 * time.Second })
	c, _ := smLogin(t, f)
	c.ping()
	const n = 120
	body := strings.Repeat("y", 12<<10) // 120 × 12 KiB: well over 1 MiB
	var ids []string
	for i := range n {
		ids = append(ids, f.sendTo(t, "alice", fmt.Sprintf("%03d%s", i, body)))
	}
	// Not reading for a while: the sends above took time already; the
	// socket buffers are full by now.
	time.Sleep(time.Second) // the pause of the reader is the scenario, not an assertion
	var got []string
	h := 1 // the ping's result
	for len(got) < n {
		e, err := c.NextWithin(step)
		require.NoError(t, err, "after %d of %d", len(got), n)
		switch e.XMLName.Local {
		case "message":
			got = append(got, e.Attr("id"))
			h++
			time.Sleep(2 * time.Millisecond) // a slow reader
		case "r":
			c.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", h))
		default:
			t.Fatalf("after %d messages: %s", len(got), e)
		}
	}
	require.Equal(t, ids, got)
	c.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", h))
	f.waitStatus(t, ids[n-1], "delivered")
}

// TestResumeResendsOtherStanzas: the stanzas the gateway writes besides
// queued messages (the receipt of a device's message, an IQ result) are
// counted for stream management and, when the device did not count them,
// sent again on resumption (XEP-0198 section 5): a device whose
// connection dropped before it read them would otherwise wait for them
// for good.
func TestResumeResendsOtherStanzas(t *testing.T) {
	f := start(t, nil)
	c, smID := smLogin(t, f)
	c.Send("<message to='acme.localhost' id='up1'><body>hi</body><request xmlns='urn:xmpp:receipts'/></message>")
	c.Send("<iq type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
	// Wait until both are handled (the gateway counts them), without
	// reading its answers.
	checkFor(t, step, 10*time.Millisecond, func() error {
		for _, e := range f.events(t, f.app, "acme") {
			if e.Type == "message.inbound" && e.Body == "hi" {
				return nil
			}
		}
		return fmt.Errorf("the device's message is not in the feed yet")
	})
	c.Drop()
	c2, n := resumeOn(t, f, smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "got %s", n)
	got := map[string]bool{}
	for len(got) < 2 {
		n, err := c2.NextWithin(5 * time.Second)
		require.NoError(t, err, "after %v", got)
		switch {
		case n.XMLName.Local == "message" && n.Child(sdkproto.NSReceipts, "received") != nil:
			require.Equal(t, "up1", n.Child(sdkproto.NSReceipts, "received").Attr("id"))
			got["receipt"] = true
		case n.XMLName.Local == "iq" && n.Attr("id") == "q1":
			require.Equal(t, "result", n.Attr("type"))
			got["iq"] = true
		}
	}
}

// TestInboundDuplicateIgnored: a device's message sent again with the same
// id (an SDK resends its unconfirmed messages on a session it could not
// resume) reaches the backend once, and is confirmed again each time;
// another device's message with the same id is its own.
func TestInboundDuplicateIgnored(t *testing.T) {
	f := start(t, nil)
	up := "<message to='acme.localhost' id='dup1'><body>once</body><request xmlns='urn:xmpp:receipts'/></message>"
	for i := range 2 {
		c := f.login(t, "alice", "phone1")
		c.presence()
		c.Send(up)
		r := c.Expect("message")
		require.NotNil(t, r.Child(sdkproto.NSReceipts, "received"), "attempt %d: %s", i, r)
		c.Drop()
	}
	c := f.login(t, "alice", "tablet")
	c.presence()
	c.Send(up)
	c.Expect("message")
	var from []string
	for _, e := range f.events(t, f.app, "acme") {
		if e.Type == "message.inbound" && e.MessageID == "dup1" {
			from = append(from, e.Device)
		}
	}
	require.Equal(t, []string{"phone1", "tablet"}, from, "once per device")
}

// TestCountsByTransport: the node's session counts by transport (GET
// /v1/stats) follow binds, replacements, detached sessions waiting for
// resumption, a resumption over another transport, and closes.
func TestCountsByTransport(t *testing.T) {
	f := start(t, nil)
	want := func(tls, ws int64) {
		t.Helper()
		checkFor(t, step, 10*time.Millisecond, func() error {
			got := f.g.Sessions().Counts()
			if got["tls"] != tls || got["websocket"] != ws || got["starttls"] != 0 {
				return fmt.Errorf("counts %v, want tls %d, websocket %d", got, tls, ws)
			}
			return nil
		})
	}
	a, smID := smLogin(t, f)
	b := loginWS(t, f, "bob", "browser")
	want(1, 1)

	a2 := f.login(t, "alice", "phone1") // replaces the first
	a.expectStreamError("conflict")
	want(1, 1)
	smID = a2.enableSM()
	a2.presence()
	a2.Drop()
	want(1, 1) // detached, waiting for resumption

	// Resumed over WebSocket: the device's session moves to that transport.
	w := dialWS(t, f.g.URL, domain)
	w.Open()
	w.Authenticate("alice", "secret-alice")
	w.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", smID))
	w.Expect("resumed")
	want(0, 2)

	b.Send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
	b.expectClosed()
	want(0, 1)
}
