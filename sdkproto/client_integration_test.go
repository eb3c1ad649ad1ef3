package sdkproto_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

// These tests run the client against the real gateway in-process, on
// loopback listeners (internal/gatewaytest).

// allTransports are the transports the gateway serves.
var allTransports = []sdkproto.Transport{sdkproto.TransportTLS, sdkproto.TransportStartTLS, sdkproto.TransportWebSocket}

type liveGateway struct {
	g   *gatewaytest.Gateway
	app *api.Client
	tls *tls.Config
}

func startGateway(t testing.TB) *liveGateway {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a gateway")
	}
	g := gatewaytest.Start(t)
	t.Cleanup(func() { http.DefaultTransport.(*http.Transport).CloseIdleConnections() })
	app := g.App(t, fakeApp)
	pem, err := os.ReadFile(filepath.Join(g.DataDir, "tls-cert.pem"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	return &liveGateway{g: g, app: app, tls: &tls.Config{RootCAs: pool}}
}

func (lg *liveGateway) user(t testing.TB, user string) {
	t.Helper()
	_, err := lg.app.PutUser(ctxT(t), fakeApp, user, api.PutUserRequest{Password: fakePass})
	require.NoError(t, err)
}

func (lg *liveGateway) config(mode sdkproto.Transport, user, device string) sdkproto.Config {
	cfg := sdkproto.Config{
		Transport: mode, App: fakeApp, User: user, Password: fakePass, Device: device,
		TLSConfig: lg.tls.Clone(), SourceIP: "127.0.0.1",
	}
	switch mode {
	case sdkproto.TransportTLS:
		cfg.Addr = lg.g.XMPPSAddr
	case sdkproto.TransportStartTLS:
		cfg.Addr = lg.g.XMPPAddr
	case sdkproto.TransportWebSocket:
		cfg.URL = "ws" + strings.TrimPrefix(lg.g.URL, "http") + sdkproto.WebSocketPath
	}
	return cfg
}

// eachTransport runs f as a subtest for each of modes, with a user of its
// own on the gateway: prefix followed by the transport's name.
func (lg *liveGateway) eachTransport(t *testing.T, modes []sdkproto.Transport, prefix string, f func(t *testing.T, mode sdkproto.Transport, user string)) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			user := prefix + mode.String()
			lg.user(t, user)
			f(t, mode, user)
		})
	}
}

// replaceSession creates user and connects device phone1 over TLS with
// AutoReconnect, then a second session on the same device over second,
// and waits for the first to be told <conflict/>. It returns the replaced
// Client and the one that replaced it.
func (lg *liveGateway) replaceSession(t *testing.T, user string, second sdkproto.Transport) (replaced, current *sdkproto.Client) {
	t.Helper()
	lg.user(t, user)
	discs := make(chan error, 8)
	cfg := lg.config(sdkproto.TransportTLS, user, "phone1")
	cfg.AutoReconnect = true
	cfg.ReconnectMin, cfg.ReconnectMax = 5*time.Millisecond, 20*time.Millisecond
	cfg.OnDisconnect = func(err error) { discs <- err }
	replaced = dial(t, cfg)
	current = dial(t, lg.config(second, user, "phone1"))
	err := within(t, discs, 10*time.Second, "the first session was not replaced")
	require.ErrorIs(t, err, &sdkproto.StreamError{Condition: "conflict"})
	return replaced, current
}

// post sends a message through REST and returns its id.
func (lg *liveGateway) post(t *testing.T, to, body string) string {
	t.Helper()
	res, err := lg.app.Send(ctxT(t), fakeApp, api.SendRequest{To: []string{to}, Body: body, Data: json.RawMessage(`{"k":"` + body + `"}`)}, "")
	require.NoError(t, err)
	require.Len(t, res.Messages, 1)
	return res.Messages[0].ID
}

// waitStatus polls the message's REST status until it is want.
func (lg *liveGateway) waitStatus(t *testing.T, id, want string) {
	t.Helper()
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("message %s: last status %q", id, last)
		}
	}()
	require.Eventually(t, func() bool {
		st, err := lg.app.GetMessage(context.Background(), fakeApp, id)
		if err != nil {
			last = "error: " + err.Error()
			return false
		}
		last = st.Status
		return st.Status == want
	}, 10*time.Second, 10*time.Millisecond, "message %s never reached %q", id, want)
}

func TestGatewayTransports(t *testing.T) {
	lg := startGateway(t)
	lg.eachTransport(t, allTransports, "u-", func(t *testing.T, mode sdkproto.Transport, user string) {
		// One message queued while the device is offline.
		offline := lg.post(t, user, "offline")

		cfg := lg.config(mode, user, "phone1")
		var wrapped []*countingConn
		cfg.WrapConn = func(c net.Conn) net.Conn {
			cc := &countingConn{Conn: c}
			wrapped = append(wrapped, cc)
			return cc
		}
		c, box := dialInbox(t, cfg)
		require.Equal(t, user+"@"+fakeDomain+"/phone1", c.JID())
		// Every byte of the session went through the wrapped connection.
		require.Len(t, wrapped, 1)
		require.Positive(t, wrapped[0].read.Load())
		require.Positive(t, wrapped[0].written.Load())
		require.NotEmpty(t, c.SMID())

		m := box.next(t)
		require.Equal(t, offline, m.ID)
		require.Equal(t, "offline", m.Body)
		require.JSONEq(t, `{"k":"offline"}`, string(m.Data))
		require.False(t, m.Stamp.IsZero())
		require.False(t, m.ExpiresAt.IsZero())

		// And one live.
		live := lg.post(t, user, "live")
		m = box.next(t)
		require.Equal(t, live, m.ID)
		require.Equal(t, "live", m.Body)

		for _, id := range []string{offline, live} {
			require.NoError(t, c.Ack(id))
			lg.waitStatus(t, id, "delivered")
			require.NoError(t, c.MarkRead(id))
			lg.waitStatus(t, id, "read")
		}
		require.EqualValues(t, 2, c.Stats().Received)
		require.Zero(t, c.Stats().Duplicates)
		require.NoError(t, c.Close())
	})
}

// countingConn counts the bytes read and written through it.
type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

func TestGatewayLoginMechanisms(t *testing.T) {
	lg := startGateway(t)
	const phone = "+393331234567" // SPEC section 1: phone numbers are user ids
	lg.user(t, phone)
	cache := &sdkproto.CredentialCache{}
	for _, mech := range []string{"", sdkproto.MechSCRAMSHA256, sdkproto.MechSCRAMSHA1, sdkproto.MechPLAIN} {
		cfg := lg.config(sdkproto.TransportTLS, phone, "d1")
		cfg.Mechanism = mech
		cfg.Credentials = cache
		c, err := sdkproto.Dial(ctxT(t), cfg)
		require.NoError(t, err, "mechanism %q", mech)
		require.Equal(t, phone+"@"+fakeDomain+"/d1", c.JID())
		require.NoError(t, c.Close())
	}
	st := cache.Stats()
	require.EqualValues(t, 1, st.Hits, "the second SCRAM-SHA-256 login used the cached key")
	require.EqualValues(t, 2, st.Misses, "one per SCRAM mechanism")

	cfg := lg.config(sdkproto.TransportTLS, phone, "d1")
	cfg.Password = "not-the-password"
	_, err := sdkproto.Dial(ctxT(t), cfg)
	require.ErrorIs(t, err, &sdkproto.SASLError{Condition: "not-authorized"})
}

func TestGatewayDeviceRequests(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "bob")
	c := dial(t, lg.config(sdkproto.TransportTLS, "bob", "tablet"))

	require.NoError(t, c.Ping(ctxT(t)))
	cfg, err := c.ClientConfig(ctxT(t))
	require.NoError(t, err)
	require.NotEmpty(t, cfg)
	require.NoError(t, c.RegisterPush(ctxT(t), "fcm", "token-123456", "", ""))
	devs, err := lg.app.ListDevices(ctxT(t), fakeApp, "bob")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, "tablet", devs[0].Device)

	id, err := c.Send(ctxT(t), sdkproto.Outbound{Body: "from the device", Channel: "support"})
	require.NoError(t, err, "the gateway confirms a stored inbound message with a receipt")
	require.NotEmpty(t, id)
}

// TestGatewayStreamManagementResume drops the connection with a message in
// flight (sent by the gateway, lost before the device read it) and
// resumes: the device gets exactly that one again, and what was sent while
// it was away, nothing twice.
func TestGatewayStreamManagementResume(t *testing.T) {
	lg := startGateway(t)
	lg.eachTransport(t, []sdkproto.Transport{sdkproto.TransportTLS, sdkproto.TransportWebSocket}, "sm-", func(t *testing.T, mode sdkproto.Transport, user string) {
		c, box := dialInbox(t, lg.config(mode, user, "phone1"))
		smid := c.SMID()
		require.NotEmpty(t, smid)

		m1 := lg.post(t, user, "one")
		require.Equal(t, m1, box.next(t).ID)
		lg.waitStatus(t, m1, "delivered") // by stream management alone

		sdkproto.LoseInbound(c, 1)
		m2 := lg.post(t, user, "two") // lost in flight
		lg.waitStatus(t, m2, "sent")
		c.Drop()
		m3 := lg.post(t, user, "three") // while away

		mustResume(t, c, "the gateway resumes within the window")
		require.Equal(t, smid, c.SMID())
		require.Equal(t, m2, box.next(t).ID, "the unacknowledged message again")
		require.Equal(t, m3, box.next(t).ID)
		lg.waitStatus(t, m2, "delivered")
		lg.waitStatus(t, m3, "delivered")

		st := c.Stats()
		require.EqualValues(t, 1, st.Resumes)
		require.EqualValues(t, 3, st.Received)
		require.Zero(t, st.Duplicates)
		require.Equal(t, []string{m1, m2, m3}, box.ids())
	})
}

// TestGatewayFreshSessionRedelivers drops a session without resuming: a new
// session on the same device gets the unacknowledged messages again from
// the queue, with the same ids.
func TestGatewayFreshSessionRedelivers(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "carol")
	cfg := lg.config(sdkproto.TransportTLS, "carol", "phone1")
	cfg.DisableStreamManagement = true
	c, box := dialInbox(t, cfg)
	m1 := lg.post(t, "carol", "one")
	require.Equal(t, m1, box.next(t).ID)
	c.Drop()
	require.NoError(t, c.Close())

	c2, box2 := dialInbox(t, cfg)
	require.Equal(t, m1, box2.next(t).ID, "redelivered with the same id")
	require.NoError(t, c2.Ack(m1))
	lg.waitStatus(t, m1, "delivered")
}

// TestGatewayConflict: a second session on the same device replaces the
// first, which gets <conflict/> and does not reconnect.
func TestGatewayConflict(t *testing.T) {
	lg := startGateway(t)
	c1, c2 := lg.replaceSession(t, "dave", sdkproto.TransportWebSocket)
	require.Never(t, c1.Connected, 200*time.Millisecond, 10*time.Millisecond)
	require.True(t, c2.Connected())
}

// TestGatewayCloseWhileDelivering: devices that connect, take messages and
// close (as a woken app does) while messages keep coming, over each
// transport, neither hang in Close nor lose a message: every message posted
// reaches its device in one of its sessions.
func TestGatewayCloseWhileDelivering(t *testing.T) {
	lg := startGateway(t)
	lg.user(t, "erin")
	const perTransport = 3
	type dev struct {
		name string
		tr   sdkproto.Transport
		mu   sync.Mutex
		got  map[string]bool
	}
	var devs []*dev
	for _, tr := range allTransports {
		for i := range perTransport {
			devs = append(devs, &dev{name: fmt.Sprintf("%s-%d", tr, i), tr: tr, got: map[string]bool{}})
		}
	}
	// session connects d once, takes messages for hold and closes; Close
	// must return promptly.
	session := func(d *dev, hold time.Duration) {
		cfg := lg.config(d.tr, "erin", d.name)
		var c *sdkproto.Client
		cfg.OnMessage = func(m *sdkproto.Message) {
			d.mu.Lock()
			d.got[m.ID] = true
			d.mu.Unlock()
			c.Ack(m.ID)
		}
		var err error
		c, err = sdkproto.New(cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Connect(ctx); err != nil {
			t.Errorf("%s: connect: %v", d.name, err)
			c.Close()
			return
		}
		time.Sleep(hold)
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Errorf("%s: Close hangs:\n%s", d.name, buf[:runtime.Stack(buf, true)])
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				session(d, time.Duration(rand.IntN(40))*time.Millisecond)
			}
		})
	}
	// Messages to each device in turn, named: each must reach its device.
	var ids [][]string = make([][]string, len(devs))
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		k := i % len(devs)
		res, err := lg.app.Send(ctxT(t), fakeApp, api.SendRequest{To: []string{"erin/" + devs[k].name}, Body: strconv.Itoa(i)}, "")
		require.NoError(t, err)
		ids[k] = append(ids[k], res.Messages[0].ID)
	}
	close(stop)
	wg.Wait()
	// One last session each takes what is still pending.
	for k, d := range devs {
		require.Eventually(t, func() bool {
			session(d, 200*time.Millisecond)
			d.mu.Lock()
			defer d.mu.Unlock()
			for _, id := range ids[k] {
				if !d.got[id] {
					return false
				}
			}
			return true
		}, 20*time.Second, time.Millisecond, "%s: messages missing", d.name)
	}
	n := 0
	for _, s := range ids {
		n += len(s)
	}
	t.Logf("%d messages to %d devices closing every 0-40 ms", n, len(devs))
}

// TestGatewayLargestMessages: the largest messages the REST API takes,
// made of the characters XML escaping expands most (a 16 KiB body of '&'
// is an 80 KiB stanza), reach the client whole on every transport, and a
// message after them too: a client that refused such a stanza would
// reconnect and get it again, for good.
func TestGatewayLargestMessages(t *testing.T) {
	lg := startGateway(t)
	const payload = 16 << 10
	bodies := map[string]string{
		"amp":   strings.Repeat("&", payload),
		"lt":    strings.Repeat("<", payload),
		"mixed": strings.Repeat("<a href=\"x&amp;y\">&</a>\r\n", payload/26),
	}
	lg.eachTransport(t, allTransports, "big-", func(t *testing.T, mode sdkproto.Transport, user string) {
		want := map[string]string{}
		for _, body := range bodies {
			res, err := lg.app.Send(ctxT(t), fakeApp, api.SendRequest{To: []string{user}, Body: body}, "")
			require.NoError(t, err)
			want[res.Messages[0].ID] = body
		}
		dataID := ""
		{
			data := `{"k":"` + strings.Repeat("&<>", (payload-10)/3) + `"}`
			res, err := lg.app.Send(ctxT(t), fakeApp, api.SendRequest{To: []string{user}, Data: json.RawMessage(data)}, "")
			require.NoError(t, err)
			dataID = res.Messages[0].ID
			want[dataID] = data
		}
		c, box := dialInbox(t, lg.config(mode, user, "phone1"))
		for range want {
			m := box.next(t)
			w, ok := want[m.ID]
			require.True(t, ok, "unexpected message %s", m.ID)
			got := m.Body
			if m.ID == dataID {
				got = string(m.Data)
			}
			// Compared by hand: testify cannot print strings this long.
			if got != w {
				i := 0
				for i < min(len(got), len(w)) && got[i] == w[i] {
					i++
				}
				t.Fatalf("message %s: got %d bytes, want %d; first difference at %d: %q, want %q",
					m.ID, len(got), len(w), i, got[i:min(i+20, len(got))], w[i:min(i+20, len(w))])
			}
			require.NoError(t, c.Ack(m.ID))
		}
		live := lg.post(t, user, "after")
		require.Equal(t, live, box.next(t).ID)
		require.Zero(t, c.Stats().Duplicates, "no message came twice")
		for id := range want {
			lg.waitStatus(t, id, "delivered")
		}
	})
}
