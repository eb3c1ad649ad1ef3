package sdkproto_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/sdkproto"
)

// inbox collects what OnMessage receives.
type inbox struct {
	mu   sync.Mutex
	msgs []*sdkproto.Message
	ch   chan *sdkproto.Message
}

func newInbox() *inbox { return &inbox{ch: make(chan *sdkproto.Message, 1024)} }

func (b *inbox) add(m *sdkproto.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.ch <- m
}

func (b *inbox) next(t testing.TB) *sdkproto.Message {
	t.Helper()
	return within(t, b.ch, 5*time.Second, "no message delivered")
}

func (b *inbox) ids() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.msgs {
		out = append(out, m.ID)
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// within returns the next value from ch, failing the test with failure if
// none comes within d.
func within[T any](t testing.TB, ch <-chan T, d time.Duration, failure string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatal(failure)
		var zero T
		return zero
	}
}

// dial connects a Client with cfg, failing the test if it cannot. The
// Client is closed when the test ends.
func dial(t testing.TB, cfg sdkproto.Config) *sdkproto.Client {
	t.Helper()
	c, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// dialInbox is dial with OnMessage collecting into the returned inbox.
func dialInbox(t testing.TB, cfg sdkproto.Config) (*sdkproto.Client, *inbox) {
	t.Helper()
	box := newInbox()
	cfg.OnMessage = box.add
	return dial(t, cfg), box
}

// mustResume resumes c's stream-management session after a drop, failing
// the test unless it was resumed.
func mustResume(t testing.TB, c *sdkproto.Client, msgAndArgs ...any) {
	t.Helper()
	resumed, err := c.Resume(ctxT(t))
	require.NoError(t, err)
	require.True(t, resumed, msgAndArgs...)
}

func isMarker(name, ns, id string) func(*sdkproto.Element) bool {
	return func(e *sdkproto.Element) bool {
		c := e.Child(ns, name)
		return e.Name.Local == "message" && c != nil && c.AttrValue("id") == id
	}
}

func isSM(local string) func(*sdkproto.Element) bool {
	return func(e *sdkproto.Element) bool { return e.Is(sdkproto.NSSM, local) }
}

func TestClientLogin(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode sdkproto.Transport
		mech string
	}{
		{"tls scram-sha-256", sdkproto.TransportTLS, ""},
		{"tls scram-sha-1", sdkproto.TransportTLS, sdkproto.MechSCRAMSHA1},
		{"tls plain", sdkproto.TransportTLS, sdkproto.MechPLAIN},
		{"starttls", sdkproto.TransportStartTLS, ""},
		{"websocket", sdkproto.TransportWebSocket, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t, fakeOptions{mode: tc.mode})
			cfg := srv.config()
			cfg.Mechanism = tc.mech
			c, box := dialInbox(t, cfg)
			require.Equal(t, "alice@acme.localhost/phone1", c.JID())
			require.NotEmpty(t, c.SMID())
			require.True(t, c.Connected())

			fc := srv.waitConn(t)
			fc.sendMessage("m1", "hello")
			m := box.next(t)
			require.Equal(t, "m1", m.ID)
			require.Equal(t, "hello", m.Body)
			require.JSONEq(t, `{"n":1}`, string(m.Data))
			require.Equal(t, "alerts", m.Channel)
			require.Equal(t, time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), m.Stamp)
			require.Equal(t, time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC), m.ExpiresAt)
			require.True(t, m.ReceiptRequested)
			require.True(t, m.Markable)

			require.NoError(t, c.Ack("m1"))
			fc.waitFor(t, "receipt", isMarker("received", sdkproto.NSReceipts, "m1"))
			require.NoError(t, c.MarkRead("m1"))
			fc.waitFor(t, "displayed marker", isMarker("displayed", sdkproto.NSMarkers, "m1"))

			require.NoError(t, c.Close())
			require.False(t, c.Connected())
			within(t, fc.done, 5*time.Second, "server did not see the stream end")
			require.ErrorIs(t, c.Ack("m1"), sdkproto.ErrClosed)
			require.NoError(t, c.Close(), "Close is idempotent")
		})
	}
}

func TestClientAuthFailures(t *testing.T) {
	t.Parallel()
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{})
		cfg := srv.config()
		cfg.Password = "wrong"
		_, err := sdkproto.Dial(ctxT(t), cfg)
		require.ErrorIs(t, err, &sdkproto.SASLError{Condition: "not-authorized"})
	})
	t.Run("tampered server signature", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{tamperSignature: true})
		cache := &sdkproto.CredentialCache{}
		cfg := srv.config()
		cfg.Credentials = cache
		_, err := sdkproto.Dial(ctxT(t), cfg)
		require.ErrorIs(t, err, sdkproto.ErrServerSignature)
		require.Zero(t, cache.Stats().Entries)
	})
	t.Run("unknown host", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{})
		cfg := srv.config()
		cfg.App = "other"
		cfg.TLSConfig.InsecureSkipVerify = true
		_, err := sdkproto.Dial(ctxT(t), cfg)
		require.ErrorIs(t, err, &sdkproto.StreamError{Condition: "host-unknown"})
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{})
		cfg := srv.config()
		cfg.TLSConfig = nil
		_, err := sdkproto.Dial(ctxT(t), cfg)
		require.Error(t, err)
	})
	t.Run("bad config", func(t *testing.T) {
		t.Parallel()
		_, err := sdkproto.New(sdkproto.Config{App: "acme", User: "alice", Password: "x", Device: "bad/device", Addr: "127.0.0.1:1"})
		require.ErrorIs(t, err, sdkproto.ErrConfig)
		_, err = sdkproto.New(sdkproto.Config{App: "acme", User: "alice", Password: "x", Device: "d", Transport: sdkproto.TransportWebSocket, URL: "http://x"})
		require.ErrorIs(t, err, sdkproto.ErrConfig)
	})
}

func TestClientCredentialCacheAcrossLogins(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{})
	cache := &sdkproto.CredentialCache{}
	for i := range 3 {
		cfg := srv.config()
		cfg.Device = "d" + strconv.Itoa(i)
		cfg.Credentials = cache
		require.NoError(t, dial(t, cfg).Close())
	}
	st := cache.Stats()
	require.EqualValues(t, 1, st.Misses)
	require.EqualValues(t, 2, st.Hits)
}

func TestClientStreamManagementAcks(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{})
	cfg := srv.config()
	cfg.AckInterval = 50 * time.Millisecond
	cfg.AckRequestInterval = 100 * time.Millisecond
	c, box := dialInbox(t, cfg)
	fc := srv.waitConn(t)

	// 25 messages in a burst: <a/> after 10 and 20, then after the quiet
	// interval for all 25.
	for i := range 25 {
		fc.sendMessage("m"+strconv.Itoa(i), "x")
	}
	var hs []string
	fc.waitFor(t, "<a h='25'/>", func(e *sdkproto.Element) bool {
		if e.Is(sdkproto.NSSM, "a") {
			hs = append(hs, e.AttrValue("h"))
			return e.AttrValue("h") == "25"
		}
		return false
	})
	require.Equal(t, []string{"10", "20", "25"}, hs)
	require.Len(t, box.ids(), 25)

	// The server asks: the client answers at once, even with nothing new.
	fc.write("<r xmlns='" + sdkproto.NSSM + "'/>")
	a := fc.waitFor(t, "<a/>", isSM("a"))
	require.Equal(t, "25", a.AttrValue("h"))

	// The client's own stanzas are acknowledged by the server: it asks
	// AckRequestInterval after the first one.
	require.NoError(t, c.Ack("m0"))
	require.Eventually(t, func() bool { return c.Stats().Unacked == 0 }, 5*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 25, c.Stats().Received)
}

// describe names what the client sent, for order checks: "received m1",
// "displayed m1", "a 1", "r".
func describe(e *sdkproto.Element) string {
	switch {
	case e.Is(sdkproto.NSSM, "a"):
		return "a " + e.AttrValue("h")
	case e.Is(sdkproto.NSSM, "r"):
		return "r"
	case e.Name.Local == "message" && len(e.Children) > 0:
		return e.Children[0].Name.Local + " " + e.Children[0].AttrValue("id")
	}
	return e.Name.Local
}

// The receipt and read marker a callback sends go out with the <a/> for
// the message they answer, without waiting for AckInterval, and the client
// asks for the server's <a/> only every AckRequestEvery stanzas.
func TestClientRepliesWithOneAck(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{})
	cfg := srv.config()
	cfg.AckInterval = time.Hour
	cfg.AckRequestInterval = time.Hour
	cfg.AckRequestEvery = 4
	var c *sdkproto.Client
	var silent atomic.Bool
	ready := make(chan struct{})
	cfg.OnMessage = func(m *sdkproto.Message) {
		<-ready
		if silent.Load() {
			return
		}
		c.Ack(m.ID)
		if m.ID != "m2" {
			c.MarkRead(m.ID)
		}
	}
	c, err := sdkproto.New(cfg)
	require.NoError(t, err)
	close(ready)
	require.NoError(t, c.Connect(ctxT(t)))
	defer c.Close()
	fc := srv.waitConn(t)

	var got []string
	next := func() string {
		e := fc.waitFor(t, "stanza", func(e *sdkproto.Element) bool { return e.Name.Local != "presence" })
		got = append(got, describe(e))
		return got[len(got)-1]
	}
	fc.sendMessage("m1", "x")
	for next() != "a 1" {
	}
	fc.sendMessage("m2", "x")
	for next() != "a 2" {
	}
	fc.sendMessage("m3", "x")
	for next() != "a 3" {
	}
	require.Equal(t, []string{
		"received m1", "displayed m1", "a 1",
		"received m2", "r", "a 2", // the 4th unacknowledged stanza (with the initial presence) asks
		"received m3", "displayed m3", "a 3",
	}, got)
	// The server answered h=4: m3's two stanzas wait for the next request.
	require.Eventually(t, func() bool { return c.Stats().Unacked == 2 }, 5*time.Second, 5*time.Millisecond)

	// A message nobody answers is acknowledged after AckEvery (10) stanzas
	// or AckInterval, not at once.
	silent.Store(true)
	fc.send("<iq type='result' id='unsolicited'/>")
	fc.sendMessage("m4", "x")
	select {
	case e := <-fc.in:
		t.Fatalf("the client sent %s unprompted", describe(e))
	case <-time.After(200 * time.Millisecond):
	}
}

func TestClientIQs(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{mode: sdkproto.TransportWebSocket})
	c := dial(t, srv.config())
	fc := srv.waitConn(t)

	require.NoError(t, c.Ping(ctxT(t)))
	cfg, err := c.ClientConfig(ctxT(t))
	require.NoError(t, err)
	require.JSONEq(t, `{"theme":"dark"}`, string(cfg))
	require.NoError(t, c.RegisterPush(ctxT(t), "apns", "tok&1", "com.acme", "sandbox"))
	srv.mu.Lock()
	require.Equal(t, []string{"apns:tok&1"}, srv.pushes)
	srv.mu.Unlock()

	// The server pings the client, and asks something it does not know.
	fc.send("<iq type='get' id='sp1' from='" + fakeDomain + "'><ping xmlns='urn:xmpp:ping'/></iq>")
	r := fc.waitFor(t, "ping result", func(e *sdkproto.Element) bool { return e.AttrValue("id") == "sp1" })
	require.Equal(t, "result", r.AttrValue("type"))
	require.Equal(t, fakeDomain, r.AttrValue("to"))
	fc.send("<iq type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>")
	r = fc.waitFor(t, "error", func(e *sdkproto.Element) bool { return e.AttrValue("id") == "q1" })
	require.Equal(t, "error", r.AttrValue("type"))
	require.NotNil(t, r.FirstChild().Child(sdkproto.NSStanzas, "service-unavailable"))
}

func TestClientSend(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{mode: sdkproto.TransportStartTLS})
	c := dial(t, srv.config())
	fc := srv.waitConn(t)

	id, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "hi <there>", Data: json.RawMessage(`{"a":1}`), Channel: "support", InReplyTo: "m9"})
	require.NoError(t, err)
	e := fc.waitFor(t, "message", func(e *sdkproto.Element) bool { return e.Name.Local == "message" && e.AttrValue("id") == id })
	require.Equal(t, fakeDomain, e.AttrValue("to"))
	require.Equal(t, "hi <there>", e.Child(sdkproto.NSClient, "body").Text)
	require.Equal(t, `{"a":1}`, e.Child(sdkproto.NSData, "data").Text)
	require.Equal(t, "support", e.Child(sdkproto.NSChannel, "channel").Text)
	require.Equal(t, "m9", e.Child(sdkproto.NSReply, "reply").AttrValue("id"))
	require.NotNil(t, e.Child(sdkproto.NSReceipts, "request"))
	require.EqualValues(t, 1, c.Stats().Sent)

	_, err = c.Send(ctxT(t), sdkproto.Outbound{})
	require.ErrorIs(t, err, sdkproto.ErrConfig)
	_, err = c.Send(ctxT(t), sdkproto.Outbound{Data: json.RawMessage(`{bad`)})
	require.ErrorIs(t, err, sdkproto.ErrConfig)
}

// TestClientDropResume drops the connection with stanzas unacknowledged
// both ways and resumes: the server resends what the client did not
// acknowledge, the client resends what the server did not.
func TestClientDropResume(t *testing.T) {
	for _, mode := range []sdkproto.Transport{sdkproto.TransportTLS, sdkproto.TransportWebSocket} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			// The server claims to have handled only the presence (h=1),
			// as if the receipt below had been lost in flight.
			srv := newFakeServer(t, fakeOptions{mode: mode, noAutoAck: true, resumeH: func(uint32) uint32 { return 1 }})
			cfg := srv.config()
			cfg.AckInterval = time.Hour // acknowledge only on request
			cfg.AckEvery = 1000
			c, box := dialInbox(t, cfg)
			fc := srv.waitConn(t)
			id := c.SMID()

			fc.sendMessage("m1", "one")
			require.Equal(t, "m1", box.next(t).ID)
			require.NoError(t, c.Ack("m1"))
			fc.waitFor(t, "receipt", isMarker("received", sdkproto.NSReceipts, "m1"))

			c.Drop()
			require.False(t, c.Connected())
			// While the device is away the server queues m2 in the session.
			fc.sendMessage("m2", "two")

			mustResume(t, c)
			require.Equal(t, id, c.SMID())
			fc2 := srv.waitConn(t)
			require.Equal(t, "m2", box.next(t).ID, "the server resent what the client had not acknowledged")
			fc2.waitFor(t, "resent receipt", isMarker("received", sdkproto.NSReceipts, "m1"))

			st := c.Stats()
			require.EqualValues(t, 1, st.Resumes)
			require.EqualValues(t, 2, st.Received)
			require.Zero(t, st.Duplicates)
			require.Equal(t, []string{"m1", "m2"}, box.ids())
		})
	}
}

// TestClientResumeFailedRedelivery: the server refuses resumption, the
// client binds afresh, and the queue's redelivery of already seen ids is
// dropped.
func TestClientResumeFailedRedelivery(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{failResume: true})
	c, box := dialInbox(t, srv.config())
	fc := srv.waitConn(t)
	fc.sendMessage("m1", "one")
	fc.sendMessage("m2", "two")
	box.next(t)
	box.next(t)

	c.Drop()
	resumed, err := c.Resume(ctxT(t))
	require.NoError(t, err)
	require.False(t, resumed)
	fc2 := srv.waitConn(t)
	require.NotEqual(t, fc.sess.id, c.SMID(), "a fresh stream-management session")
	// The queue redelivers unacknowledged messages with the same ids.
	fc2.sendMessage("m1", "one")
	fc2.sendMessage("m2", "two")
	fc2.sendMessage("m3", "three")
	require.Equal(t, "m3", box.next(t).ID)
	st := c.Stats()
	require.EqualValues(t, 2, st.Duplicates)
	require.EqualValues(t, 3, st.Received)
	require.EqualValues(t, 1, st.ResumeFailures)
	require.Zero(t, st.Resumes)
}

func TestClientAutoReconnect(t *testing.T) {
	t.Parallel()
	t.Run("resumes after a drop", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{})
		connected := make(chan bool, 4)
		cfg := srv.config()
		cfg.AutoReconnect = true
		cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 20*time.Millisecond
		cfg.OnConnect = func(resumed bool) { connected <- resumed }
		c, box := dialInbox(t, cfg)
		srv.waitConn(t)
		c.Drop()
		require.True(t, <-connected, "resumed")
		fc := srv.waitConn(t)
		fc.sendMessage("m1", "after")
		require.Equal(t, "m1", box.next(t).ID)
		require.EqualValues(t, 1, c.Stats().Reconnects)
	})
	t.Run("system-shutdown binds afresh and resends", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{noAutoAck: true})
		var disc atomic.Value
		connected := make(chan bool, 4)
		cfg := srv.config()
		cfg.AutoReconnect = true
		cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 20*time.Millisecond
		cfg.OnConnect = func(resumed bool) { connected <- resumed }
		cfg.OnDisconnect = func(err error) { disc.Store(err) }
		c := dial(t, cfg)
		fc := srv.waitConn(t)
		require.NoError(t, c.MarkRead("m7")) // never acknowledged by this server
		fc.waitFor(t, "marker", isMarker("displayed", sdkproto.NSMarkers, "m7"))
		fc.streamError("system-shutdown")
		require.False(t, <-connected, "a stream error ends the session: no resumption")
		require.ErrorIs(t, disc.Load().(error), &sdkproto.StreamError{Condition: "system-shutdown"})
		fc2 := srv.waitConn(t)
		fc2.waitFor(t, "resent marker", isMarker("displayed", sdkproto.NSMarkers, "m7"))
	})
	t.Run("conflict stops", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{})
		discs := make(chan error, 4)
		cfg := srv.config()
		cfg.AutoReconnect = true
		cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 10*time.Millisecond
		cfg.OnDisconnect = func(err error) { discs <- err }
		c1 := dial(t, cfg)
		srv.waitConn(t)

		c2 := dial(t, srv.config()) // same device: replaces c1
		srv.waitConn(t)

		err := <-discs
		require.ErrorIs(t, err, &sdkproto.StreamError{Condition: "conflict"})
		require.False(t, (&sdkproto.StreamError{Condition: "conflict"}).Temporary())
		require.Never(t, func() bool { return srv.loginCount() > 2 || c1.Connected() }, 200*time.Millisecond, 10*time.Millisecond,
			"the replaced client must not come back")
		require.True(t, c2.Connected())
	})
	t.Run("send queued while away", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, fakeOptions{failResume: true})
		cfg := srv.config()
		cfg.AutoReconnect = true
		cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 100*time.Millisecond
		c := dial(t, cfg)
		srv.waitConn(t)
		c.Drop()
		id, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "queued"})
		require.NoError(t, err, "sent on the next session and confirmed")
		fc := srv.waitConn(t)
		fc.waitFor(t, "queued message", func(e *sdkproto.Element) bool { return e.AttrValue("id") == id })
	})
}

func TestClientCloseAcknowledges(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{})
	cfg := srv.config()
	cfg.AckInterval = time.Hour
	c, box := dialInbox(t, cfg)
	fc := srv.waitConn(t)
	fc.sendMessage("m1", "x")
	box.next(t)
	require.NoError(t, c.Close())
	a := fc.waitFor(t, "final <a/>", isSM("a"))
	require.Equal(t, "1", a.AttrValue("h"))
	require.ErrorIs(t, c.Ping(ctxT(t)), sdkproto.ErrClosed)
	_, err := c.Resume(ctxT(t))
	require.ErrorIs(t, err, sdkproto.ErrClosed)
}

func TestClientWithoutStreamManagement(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{noSM: true})
	c, box := dialInbox(t, srv.config())
	require.Empty(t, c.SMID())
	fc := srv.waitConn(t)
	fc.sendMessage("m1", "x")
	require.Equal(t, "m1", box.next(t).ID)
	require.NoError(t, c.Ack("m1"))
	fc.waitFor(t, "receipt", isMarker("received", sdkproto.NSReceipts, "m1"))
	require.Zero(t, c.Stats().Unacked)
}

func TestClientCallbacksMayCallClient(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t, fakeOptions{})
	var c *sdkproto.Client
	acked := make(chan struct{})
	cfg := srv.config()
	cfg.OnMessage = func(m *sdkproto.Message) {
		if err := c.Ack(m.ID); err != nil {
			t.Error(err)
		}
		if m.Body == "bye" {
			c.Close() // from the reader goroutine: must not deadlock
			close(acked)
		}
	}
	var err error
	c, err = sdkproto.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Connect(ctxT(t)))
	require.ErrorIs(t, c.Connect(ctxT(t)), sdkproto.ErrAlreadyConnected)
	fc := srv.waitConn(t)
	fc.sendMessage("m1", "hi")
	fc.waitFor(t, "receipt", isMarker("received", sdkproto.NSReceipts, "m1"))
	fc.sendMessage("m2", "bye")
	<-acked
	require.NoError(t, c.Close())
}

func TestClientNotConnected(t *testing.T) {
	t.Parallel()
	c, err := sdkproto.New(sdkproto.Config{App: "acme", User: "alice", Password: "x", Device: "d", Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	require.ErrorIs(t, c.Ack("x"), sdkproto.ErrNotConnected)
	require.ErrorIs(t, c.Ping(ctxT(t)), sdkproto.ErrNotConnected)
	_, err = c.Send(ctxT(t), sdkproto.Outbound{Body: "x"})
	require.ErrorIs(t, err, sdkproto.ErrNotConnected)
	err = c.Connect(ctxT(t))
	require.Error(t, err)
	require.False(t, errors.Is(err, sdkproto.ErrAlreadyConnected))
	c.Drop() // no session: nothing to do
	require.NoError(t, c.Close())
}
