package sdkproto_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

// Scenario tests of the SDK against the real gateway (in-process, loopback):
// edge cases an app developer meets — sessions lost at awkward moments,
// callbacks that call back into the client, gateway restarts, credentials
// that go bad, oversized input and concurrent use.

// sdkInbound returns the message.inbound events of the app feed whose
// message_id is id.
func sdkInbound(t *testing.T, lg *liveGateway, id string) []api.Event {
	t.Helper()
	var out []api.Event
	after := ""
	for {
		res, err := lg.app.Events(context.Background(), fakeApp, after, 1000, 0)
		require.NoError(t, err)
		for _, raw := range res.Events {
			var e api.Event
			require.NoError(t, json.Unmarshal(raw, &e))
			if e.Type == "message.inbound" && e.MessageID == id {
				out = append(out, e)
			}
		}
		if len(res.Events) == 0 || res.Next == "" || res.Next == after {
			return out
		}
		after = res.Next
	}
}

// sdkWaitInbound polls the feed until the inbound message id is there
// and returns how many times it is.
func sdkWaitInbound(t *testing.T, lg *liveGateway, id string) int {
	t.Helper()
	n := 0
	require.Eventually(t, func() bool {
		n = len(sdkInbound(t, lg, id))
		return n > 0
	}, 10*time.Second, 10*time.Millisecond, "inbound %s never in the event feed", id)
	return n
}

// sdkClientGoroutines counts goroutines running the SDK's Client code
// (reader, reconnect loop, handshake), to detect leaks after Close / a
// failed Dial.
func sdkClientGoroutines() (int, string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var dump strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "tether/sdkproto.(*Client)") {
			n++
			dump.WriteString(g + "\n\n")
		}
	}
	return n, dump.String()
}

func sdkNoClientGoroutines(t *testing.T) {
	t.Helper()
	var dump string
	ok := false
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		n, dump = sdkClientGoroutines()
		if n == 0 {
			ok = true
			break
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	require.True(t, ok, "SDK goroutines left behind:\n%s", dump)
}

// sdkStall is a TCP listener that accepts and never answers (a gateway
// that hangs during the handshake). It returns the address and a channel
// that receives each accepted connection.
func sdkStall(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- c:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), accepted
}

// TestSDKCallbackCallsBlockingMethods: the package doc says callbacks
// may call the Client's methods. Send (which waits for the gateway's
// receipt) and Ping (which waits for the IQ result) from OnMessage must
// complete, not wait for an answer only the (blocked) reader can read.
func TestSDKCallbackCallsBlockingMethods(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "cbuser")
	for _, what := range []string{"Send", "Ping"} {
		t.Run(what, func(t *testing.T) {
			var c *sdkproto.Client
			inCallback, res := make(chan error, 4), make(chan error, 4)
			cfg := lg.config(sdkproto.TransportTLS, "cbuser", "d-"+what)
			cfg.OnMessage = func(m *sdkproto.Message) {
				call := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					if what == "Send" {
						_, err := c.Send(ctx, sdkproto.Outbound{Body: "auto-reply", InReplyTo: m.ID})
						return err
					}
					return c.Ping(ctx)
				}
				// On the reader, the call cannot wait for its answer: it
				// says so at once. From another goroutine it works.
				inCallback <- call()
				go func() { res <- call() }()
			}
			var err error
			c, err = sdkproto.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.Connect(ctxT(t)))
			defer c.Close()
			lg.post(t, "cbuser/d-"+what, "please answer")
			err = within(t, inCallback, 10*time.Second, "callback never returned")
			require.ErrorIs(t, err, sdkproto.ErrInCallback, "%s from OnMessage must not deadlock the reader", what)
			err = within(t, res, 10*time.Second, "the call from another goroutine never returned")
			require.NoError(t, err, "%s from a goroutine the callback started", what)
		})
	}
}

// TestSDKOversizedSendNoStorm: a Send over the gateway's stanza limit
// (64 KiB) gets <policy-violation/>. The SDK must report it to the caller
// and not reconnect and resend the same stanza forever (a poison message
// that also blocks every later stanza of the device).
//
// "escaped" is a body within the 16 KiB payload limit the REST API allows
// for messages, made of '&': 80 KiB once escaped.
func TestSDKOversizedSendNoStorm(t *testing.T) {
	lg := startGateway(t)
	for name, body := range map[string]string{
		"raw":     strings.Repeat("x", sdkproto.MaxStanzaBytes+1024),
		"escaped": strings.Repeat("&", 16<<10),
	} {
		t.Run(name, func(t *testing.T) { sdkOversized(t, lg, "big-"+name, body) })
	}
}

func sdkOversized(t *testing.T, lg *liveGateway, user, body string) {
	lg.user(t, user)
	var connects, discs atomic.Int32
	var lastDisc atomic.Value
	cfg := lg.config(sdkproto.TransportTLS, user, "phone1")
	cfg.AutoReconnect = true
	cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Millisecond, 50*time.Millisecond
	cfg.OnConnect = func(bool) { connects.Add(1) }
	cfg.OnDisconnect = func(err error) {
		discs.Add(1)
		if err != nil {
			lastDisc.Store(err)
		}
	}
	c := dial(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.Send(ctx, sdkproto.Outbound{Body: body})
	t.Logf("Send: %v; sessions so far %d, disconnects %d, last %v", err, connects.Load(), discs.Load(), lastDisc.Load())
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an oversized Send should fail fast with a clear error, got %v", err)
	}

	// Once the Send has been given up, the client must not keep cycling
	// through sessions resending it.
	before := connects.Load()
	assertNeverSDKEdge(func() bool { return false }, time.Second) // observe for 1 s
	if more := connects.Load() - before; more > 1 {
		t.Errorf("reconnect storm goes on after the Send returned: %d more sessions in 1 s (%d in all)", more, connects.Load())
	}
}

// assertNeverSDKEdge polls cond for d and reports whether it stayed false.
func assertNeverSDKEdge(cond func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return false
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	return !cond()
}

// TestSDKOfflineExactlyOnce: messages queued while the device is
// offline, then more lost in flight, sent while away, redelivered on a
// resumption and on a fresh session, reach OnMessage exactly once each, in
// enqueue order, and end delivered.
func TestSDKOfflineExactlyOnce(t *testing.T) {
	lg := startGateway(t)
	lg.eachTransport(t, []sdkproto.Transport{sdkproto.TransportTLS, sdkproto.TransportWebSocket}, "once-", func(t *testing.T, mode sdkproto.Transport, user string) {
		var want []string
		for i := range 10 {
			want = append(want, lg.post(t, user, fmt.Sprintf("offline-%d", i)))
		}
		cfg := lg.config(mode, user, "phone1")
		c, box := dialInbox(t, cfg)
		for range 10 {
			box.next(t)
		}

		// Three lost in flight, then the connection drops.
		sdkproto.LoseInbound(c, 3)
		var lost []string
		for i := range 3 {
			lost = append(lost, lg.post(t, user, fmt.Sprintf("lost-%d", i)))
		}
		for _, id := range lost {
			lg.waitStatus(t, id, "sent")
		}
		want = append(want, lost...)
		c.Drop()
		for i := range 3 {
			want = append(want, lg.post(t, user, fmt.Sprintf("away-%d", i)))
		}
		mustResume(t, c)
		for range 6 {
			box.next(t)
		}

		// A fresh session (not a resumption) right after more arrive.
		for i := range 5 {
			want = append(want, lg.post(t, user, fmt.Sprintf("fresh-%d", i)))
		}
		require.Eventually(t, func() bool { return len(box.ids()) == len(want) }, 10*time.Second, 5*time.Millisecond)
		c.Drop()
		require.NoError(t, c.Connect(ctxT(t)), "fresh bind")
		// Barrier: one more message; everything redelivered comes first.
		last := lg.post(t, user, "last")
		want = append(want, last)
		require.Eventually(t, func() bool {
			ids := box.ids()
			return len(ids) > 0 && ids[len(ids)-1] == last
		}, 10*time.Second, 5*time.Millisecond)

		require.Equal(t, want, box.ids(), "each message once, in enqueue order")
		st := c.Stats()
		require.EqualValues(t, len(want), st.Received)
		t.Logf("stats %+v", st)
		for _, id := range want {
			lg.waitStatus(t, id, "delivered")
		}
		require.NoError(t, c.Close())

		// The app restarts (a new Client, same device): nothing again.
		_, box2 := dialInbox(t, cfg)
		marker := lg.post(t, user, "after restart")
		require.Equal(t, marker, box2.next(t).ID, "no old message redelivered to a new Client")
	})
}

// TestSDKMarkersWhileDisconnected: Ack and MarkRead called while the
// connection is down are queued and reach the gateway on the next session,
// whether it is a resumption or a fresh bind (with and without stream
// management).
func TestSDKMarkersWhileDisconnected(t *testing.T) {
	lg := startGateway(t)
	for _, tc := range []struct {
		name   string
		noSM   bool
		resume bool
	}{
		{"sm-resume", false, true},
		{"sm-fresh", false, false},
		{"nosm-fresh", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "mk-" + tc.name
			lg.user(t, user)
			cfg := lg.config(sdkproto.TransportTLS, user, "phone1")
			cfg.DisableStreamManagement = tc.noSM
			c, box := dialInbox(t, cfg)
			m1 := lg.post(t, user, "one")
			m2 := lg.post(t, user, "two")
			require.Equal(t, m1, box.next(t).ID)
			require.Equal(t, m2, box.next(t).ID)
			if !tc.noSM {
				lg.waitStatus(t, m2, "delivered")
			}
			c.Drop()
			require.False(t, c.Connected())
			require.NoError(t, c.Ack(m1), "queued while disconnected")
			require.NoError(t, c.MarkRead(m1))
			require.NoError(t, c.MarkRead(m2))
			if tc.resume {
				mustResume(t, c)
			} else {
				require.NoError(t, c.Connect(ctxT(t)))
			}
			lg.waitStatus(t, m1, "read")
			lg.waitStatus(t, m2, "read")
			require.EqualValues(t, 2, c.Stats().Received)
			require.Equal(t, []string{m1, m2}, box.ids())
		})
	}
}

// TestSDKSendWhileDisconnected: a Send issued while the connection is
// down is queued, delivered once on the next session (resumed or fresh),
// confirmed by the gateway's receipt, and the backend sees it once.
func TestSDKSendWhileDisconnected(t *testing.T) {
	lg := startGateway(t)
	for _, resume := range []bool{true, false} {
		name := map[bool]string{true: "resume", false: "fresh"}[resume]
		t.Run(name, func(t *testing.T) {
			user := "sw-" + name
			lg.user(t, user)
			c := dial(t, lg.config(sdkproto.TransportTLS, user, "phone1"))
			c.Drop()
			id := "edge-offline-" + name
			done := make(chan error, 1)
			go func() {
				_, err := c.Send(ctxT(t), sdkproto.Outbound{ID: id, Body: "written offline", Channel: "c1"})
				done <- err
			}()
			// Queued: it must not be confirmed before a session exists.
			require.Eventually(t, func() bool { return c.Stats().Unacked > 0 }, 5*time.Second, 5*time.Millisecond)
			if resume {
				mustResume(t, c)
			} else {
				require.NoError(t, c.Connect(ctxT(t)))
			}
			require.NoError(t, within(t, done, 10*time.Second, "queued Send never confirmed"))
			// A second Send as a barrier: the first is in the feed before it.
			_, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "barrier"})
			require.NoError(t, err)
			evs := sdkInbound(t, lg, id)
			require.Len(t, evs, 1, "the backend sees the queued message once")
			require.Equal(t, "written offline", evs[0].Body)
			require.Equal(t, "phone1", evs[0].Device)
			require.Equal(t, "c1", evs[0].Channel)
		})
	}
}

// TestSDKSendReceiptLostAcrossResume: the gateway stores a Send and
// writes its receipt, the connection breaks before the device reads the
// receipt, and the device resumes. XEP-0198: what the device did not
// count is sent again on resumption, so the Send completes (once), rather
// than waiting until its context ends and leaving the message to be sent
// a second time on the next fresh session.
func TestSDKSendReceiptLostAcrossResume(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "rcpt")
	c := dial(t, lg.config(sdkproto.TransportTLS, "rcpt", "phone1"))

	const id = "edge-receipt-lost"
	sdkproto.LoseInbound(c, 1) // the receipt, lost in flight
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		_, err := c.Send(ctx, sdkproto.Outbound{ID: id, Body: "hello backend"})
		done <- err
	}()
	require.Equal(t, 1, sdkWaitInbound(t, lg, id), "stored once")
	select {
	case err := <-done:
		t.Fatalf("Send returned before its receipt could arrive: %v", err)
	default:
	}
	c.Drop()
	mustResume(t, c)
	require.NoError(t, within(t, done, 8*time.Second, "Send never returned"), "the Send is confirmed after the resumption")
	// And a later fresh session must not send it again.
	c.Drop()
	require.NoError(t, c.Connect(ctxT(t)))
	_, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "barrier"})
	require.NoError(t, err)
	require.Len(t, sdkInbound(t, lg, id), 1, "the backend sees it once")
}

// TestSDKGatewayRestart: the gateway shuts down (<system-shutdown/>)
// and comes back on the same store and addresses; an AutoReconnect client
// comes back by itself with backoff and gets the message that was in
// flight exactly once, then live ones; a Send queued meanwhile goes out.
func TestSDKGatewayRestart(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "rs")
	box := newInbox()
	discs := make(chan error, 64)
	conns := make(chan bool, 64)
	cfg := lg.config(sdkproto.TransportTLS, "rs", "phone1")
	cfg.OnMessage = box.add
	cfg.AutoReconnect = true
	cfg.ReconnectMin, cfg.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.OnDisconnect = func(err error) { discs <- err }
	cfg.OnConnect = func(resumed bool) { conns <- resumed }
	c, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	defer c.Close()

	m1 := lg.post(t, "rs", "before")
	require.Equal(t, m1, box.next(t).ID)
	lg.waitStatus(t, m1, "delivered")
	sdkproto.LoseInbound(c, 1)
	m2 := lg.post(t, "rs", "in flight")
	lg.waitStatus(t, m2, "sent")

	old := lg.g
	httpAddr := strings.TrimPrefix(old.URL, "http://")
	old.Stop()
	err = within(t, discs, 10*time.Second, "no OnDisconnect on shutdown")
	require.ErrorIs(t, err, &sdkproto.StreamError{Condition: "system-shutdown"})
	// Queued while the gateway is down.
	sent := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Send(ctx, sdkproto.Outbound{ID: "edge-restart-send", Body: "while down"})
		sent <- err
	}()
	require.Eventually(t, func() bool { return c.Stats().Unacked > 0 }, 5*time.Second, 5*time.Millisecond)
	require.False(t, c.Connected())

	lg.g = gatewaytest.Start(t, gatewaytest.WithDataDir(old.DataDir), gatewaytest.WithConfig(func(gc *gateway.Config) {
		gc.HTTPAddr, gc.XMPPAddr, gc.XMPPSAddr = httpAddr, old.XMPPAddr, old.XMPPSAddr
	}))
	resumed := within(t, conns, 15*time.Second, "did not reconnect after the restart")
	require.False(t, resumed, "a restarted gateway has no session to resume")
	require.Equal(t, m2, box.next(t).ID, "the in-flight message again, after the restart")
	m3 := lg.post(t, "rs", "after")
	require.Equal(t, m3, box.next(t).ID)
	require.NoError(t, within(t, sent, 20*time.Second, "queued Send never confirmed after the restart"))
	require.Len(t, sdkInbound(t, lg, "edge-restart-send"), 1)
	require.Equal(t, []string{m1, m2, m3}, box.ids())
	lg.waitStatus(t, m2, "delivered")
	lg.waitStatus(t, m3, "delivered")
}

// TestSDKCredentialsGoBad: a user deleted while connected ends the
// session with <not-authorized/>; a password changed while the device is
// away makes the next login fail. Either way an AutoReconnect client must
// stop (one clear error to OnDisconnect), not retry forever.
func TestSDKCredentialsGoBad(t *testing.T) {
	lg := startGateway(t)
	run := func(t *testing.T, user string, spoil func(c *sdkproto.Client), wantErr error) {
		lg.user(t, user)
		discs := make(chan error, 64)
		var connects atomic.Int32
		cfg := lg.config(sdkproto.TransportTLS, user, "phone1")
		cfg.AutoReconnect = true
		cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 20*time.Millisecond
		cfg.OnDisconnect = func(err error) { discs <- err }
		cfg.OnConnect = func(bool) { connects.Add(1) }
		c := dial(t, cfg)
		spoil(c)
		var got []error
		deadline := time.After(10 * time.Second)
	loop:
		for {
			select {
			case err := <-discs:
				got = append(got, err)
				if errors.Is(err, wantErr) {
					break loop
				}
			case <-deadline:
				t.Fatalf("never got %v; disconnects: %v", wantErr, got)
			}
		}
		require.LessOrEqual(t, len(got), 2, "disconnects: %v", got)
		require.Never(t, func() bool { return len(discs) > 0 || connects.Load() > 0 || c.Connected() },
			300*time.Millisecond, 10*time.Millisecond, "the client kept trying")
		_, err := c.Resume(ctxT(t))
		require.ErrorIs(t, err, &sdkproto.SASLError{Condition: "not-authorized"}, "an explicit Resume reports a clear error")
	}
	t.Run("user deleted", func(t *testing.T) {
		run(t, "gone", func(*sdkproto.Client) {
			require.NoError(t, lg.app.DeleteUser(ctxT(t), fakeApp, "gone"))
		}, &sdkproto.StreamError{Condition: "not-authorized"})
	})
	t.Run("password changed", func(t *testing.T) {
		run(t, "rotated", func(c *sdkproto.Client) {
			_, err := lg.app.PutUser(ctxT(t), fakeApp, "rotated", api.PutUserRequest{Password: "another-password"})
			require.NoError(t, err)
			c.Drop()
		}, &sdkproto.SASLError{Condition: "not-authorized"})
	})
}

// TestSDKDialCancel: Dial against a gateway that accepts and never
// answers returns when its context ends, and Close during a Connect aborts
// it at once; neither leaves a goroutine behind.
func TestSDKDialCancel(t *testing.T) {
	addr, accepted := sdkStall(t)
	cfg := sdkproto.Config{App: fakeApp, User: "alice", Password: fakePass, Device: "d1", Addr: addr}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := sdkproto.Dial(ctx, cfg)
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 3*time.Second)
	sdkNoClientGoroutines(t)

	for _, auto := range []bool{false, true} {
		cfg.AutoReconnect = auto
		c, err := sdkproto.New(cfg)
		require.NoError(t, err)
		res := make(chan error, 1)
		go func() { res <- c.Connect(context.Background()) }()
		within(t, accepted, 5*time.Second, "no connection")
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		require.Error(t, within(t, res, 5*time.Second, "Connect not aborted by Close"))
		within(t, closed, 5*time.Second, "Close hangs")
		require.NoError(t, c.Close(), "twice")
		require.ErrorIs(t, c.Connect(ctxT(t)), sdkproto.ErrClosed)
		sdkNoClientGoroutines(t)
	}
}

// TestSDKDialContextOnlyForDial: cancelling Dial's context after it
// returned does not affect the session.
func TestSDKDialContextOnlyForDial(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "ctxu")
	box := newInbox()
	cfg := lg.config(sdkproto.TransportWebSocket, "ctxu", "phone1")
	cfg.OnMessage = box.add
	ctx, cancel := context.WithCancel(context.Background())
	c, err := sdkproto.Dial(ctx, cfg)
	require.NoError(t, err)
	defer c.Close()
	cancel()
	id := lg.post(t, "ctxu", "still here")
	require.Equal(t, id, box.next(t).ID)
	require.NoError(t, c.Ping(ctxT(t)))
}

// TestSDKConcurrentUse: many goroutines Send, Ack and MarkRead while
// the connection is dropped and the client reconnects by itself; every
// Send is confirmed and reaches the backend, every message ends read; then
// Close races with more calls, which all return promptly, and nothing is
// left running.
func TestSDKConcurrentUse(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "conc")
	cfg := lg.config(sdkproto.TransportTLS, "conc", "phone1")
	cfg.AutoReconnect = true
	cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 20*time.Millisecond
	c, box := dialInbox(t, cfg)

	var ids []string
	for i := range 20 {
		ids = append(ids, lg.post(t, "conc", fmt.Sprintf("m%d", i)))
	}
	for range ids {
		box.next(t)
	}
	const workers, each = 8, 10
	var wg sync.WaitGroup
	sentIDs := make(chan string, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := ids[(w*each+i)%len(ids)]
				if err := c.Ack(id); err != nil {
					t.Errorf("Ack: %v", err)
				}
				if err := c.MarkRead(id); err != nil {
					t.Errorf("MarkRead: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				sid, err := c.Send(ctx, sdkproto.Outbound{ID: fmt.Sprintf("conc-%d-%d", w, i), Body: "x"})
				cancel()
				if err != nil {
					t.Errorf("Send %s: %v (in the feed %d times)", sid, err, len(sdkInbound(t, lg, sid)))
					continue
				}
				sentIDs <- sid
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			c.Drop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Resume(ctx)
			cancel()
			if err != nil {
				t.Errorf("Resume: %v", err)
			}
		}
	})
	wg.Wait()
	close(sentIDs)
	for _, id := range ids {
		lg.waitStatus(t, id, "read")
	}
	n := 0
	for sid := range sentIDs {
		n++
		require.NotEmpty(t, sdkInbound(t, lg, sid), "Send %s confirmed but not in the feed", sid)
	}
	if n != workers*each {
		t.Errorf("%d of %d Sends confirmed", n, workers*each)
	}

	// Close racing with calls.
	var wg2 sync.WaitGroup
	for w := range workers {
		wg2.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Send(ctx, sdkproto.Outbound{Body: fmt.Sprintf("late %d", w)})
			if err != nil && !errors.Is(err, sdkproto.ErrClosed) {
				t.Errorf("Send racing Close: %v", err)
			}
			if err := c.Ack(ids[0]); err != nil && !errors.Is(err, sdkproto.ErrClosed) {
				t.Errorf("Ack racing Close: %v", err)
			}
		})
	}
	wg2.Go(func() { c.Close() })
	wg2.Go(func() { c.Close() })
	done := make(chan struct{})
	go func() { wg2.Wait(); close(done) }()
	within(t, done, 10*time.Second, "calls racing Close hang")
	require.ErrorIs(t, c.Ack(ids[0]), sdkproto.ErrClosed)
	_, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "after close"})
	require.ErrorIs(t, err, sdkproto.ErrClosed)
	sdkNoClientGoroutines(t)
}

// TestSDKConflictPendingSend: when a second session takes the device
// (<conflict/>), the replaced Client stops; a Send pending on it must not
// be left waiting forever: it fails once the Client gives up (or is at
// least failed by Close).
func TestSDKConflictPendingSend(t *testing.T) {
	lg := startGateway(t)
	c1, c2 := lg.replaceSession(t, "cf", sdkproto.TransportTLS)
	res := make(chan error, 1)
	go func() {
		_, err := c1.Send(context.Background(), sdkproto.Outbound{Body: "on a replaced client"})
		res <- err
	}()
	// The Client stopped for good: the Send fails at once with the reason,
	// instead of waiting for a session that never comes.
	err := within(t, res, 5*time.Second, "a Send on a Client stopped by <conflict/> waits for good")
	require.ErrorIs(t, err, &sdkproto.StreamError{Condition: "conflict"})
	require.True(t, c2.Connected())
}

// TestSDKCloseWhileReconnecting: the gateway goes away for good; the
// AutoReconnect client backs off and retries; Close (also from the
// OnDisconnect callback) stops it promptly and leaves nothing running.
func TestSDKCloseWhileReconnecting(t *testing.T) {
	for _, fromCallback := range []bool{false, true} {
		t.Run(map[bool]string{false: "outside", true: "from OnDisconnect"}[fromCallback], func(t *testing.T) {
			lg := startGateway(t)
			lg.user(t, "cr")
			var c *sdkproto.Client
			discs := make(chan error, 64)
			cfg := lg.config(sdkproto.TransportWebSocket, "cr", "phone1")
			cfg.AutoReconnect = true
			cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 50*time.Millisecond
			cfg.OnDisconnect = func(err error) {
				discs <- err
				if fromCallback {
					c.Close()
				}
			}
			var err error
			c, err = sdkproto.New(cfg)
			require.NoError(t, err)
			require.NoError(t, c.Connect(ctxT(t)))
			lg.g.Stop()
			within(t, discs, 10*time.Second, "no OnDisconnect")
			closed := make(chan struct{})
			go func() { c.Close(); close(closed) }()
			within(t, closed, 5*time.Second, "Close hangs while reconnecting")
			sdkNoClientGoroutines(t)
			require.False(t, c.Connected())
		})
	}
}
