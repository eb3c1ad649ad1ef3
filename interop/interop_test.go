// Package interop_test drives XMPP clients that nobody here wrote against a
// real gateway: slixmpp (Debian's python3-slixmpp) over STARTTLS with SCRAM,
// and xmpp.js (npm @xmpp/client, locked in js/) over WebSocket. Each client
// logs in as a user made through REST, gets one message queued while it was
// offline and one sent live, and acknowledges each with an XEP-0184 receipt
// and an XEP-0333 displayed marker; the test checks the REST status moves to
// delivered, then read, and that bodies and data arrived intact. Each runs
// twice: without XEP-0198 (receipts alone acknowledge) and with the
// client's own stream management (then <a h/> delivers first).
//
// The client scripts speak JSON lines: they print what they see on stdout
// and take commands (receipt, displayed, quit) on stdin, so the test
// decides when each acknowledgement goes out and can watch every step. They
// exit by themselves after a bounded time. The client's own debug log (every
// stanza in and out) is kept and shown when a test fails, or always with
// INTEROP_VERBOSE=1.
//
// A missing client (python3-slixmpp not installed, node or js/node_modules
// missing) skips its test, or fails it when CI is set: .ci/run installs
// both.
package interop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
)

const (
	appID         = "acme"
	user          = "alice"
	domain        = "acme.localhost"
	scriptTimeout = 25 * time.Second // what the scripts are told; the harness kills them 10 s later
	stepTimeout   = 10 * time.Second
)

// The payloads: markup, quotes, non-ASCII and nested JSON must come through
// unchanged.
const (
	offlineBody = `while you were away: <b>&amp;</b> "quoted" 'single' ünïcödé 日本語 🚀`
	offlineData = `{"n":1,"nested":{"list":[1,2.5,"x",null,true]},"s":"<&>\"é\""}`
	liveBody    = "live <&> one\nsecond line\ttab"
	liveData    = `{"live":true,"emoji":"🚀"}`
)

// clientRun is how one client is started once the gateway and the user are
// there.
type clientRun func(t *testing.T, g *gatewaytest.Gateway, password, resource string) *script

// scenario says how a client is expected to behave.
type scenario struct {
	resource  string // the device id the client binds
	transport string // as GET .../devices shows it
	// streamManagement: the client enables XEP-0198 and answers every <r/>,
	// so a message sent once <enabled/> is out is delivered by <a h/>
	// before any receipt. The client reports "sm_enabled".
	streamManagement bool
}

// exercise is what every client goes through: log in, get a message queued
// while offline and one live, check both arrived intact, then receipt and
// displayed marker for each, with the REST status moving to delivered, then
// read.
func exercise(t *testing.T, sc scenario, run clientRun) {
	g := gatewaytest.Start(t)
	ctx := context.Background()
	app := g.App(t, appID)
	u, err := app.PutUser(ctx, appID, user, api.PutUserRequest{})
	require.NoError(t, err)
	require.Equal(t, user+"@"+domain, u.JID)
	require.NotEmpty(t, u.Password)

	// One message while the device is offline.
	offline, err := app.Send(ctx, appID, api.SendRequest{To: []string{user}, Body: offlineBody, Data: json.RawMessage(offlineData)}, "")
	require.NoError(t, err)
	require.Len(t, offline.Messages, 1)
	offlineID := offline.Messages[0].ID
	waitStatus(t, app, offlineID, "enqueued")

	s := run(t, g, u.Password, sc.resource)
	online := s.next("online")
	require.Equal(t, user+"@"+domain+"/"+sc.resource, online.JID, "bound JID")

	// The queued one comes after initial presence.
	m1 := s.next("message")
	checkMessage(t, m1, offlineID, sc.resource, offlineBody, offlineData)
	if sc.streamManagement {
		s.next("sm_enabled")
	}

	devs, err := app.ListDevices(ctx, appID, user)
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, sc.resource, devs[0].Device)
	require.True(t, devs[0].Online)
	require.Equal(t, sc.transport, devs[0].Transport)

	// One sent while it is online.
	live, err := app.Send(ctx, appID, api.SendRequest{To: []string{user}, Body: liveBody, Data: json.RawMessage(liveData)}, "")
	require.NoError(t, err)
	liveID := live.Messages[0].ID
	m2 := s.next("message")
	checkMessage(t, m2, liveID, sc.resource, liveBody, liveData)

	for _, id := range []string{offlineID, liveID} {
		switch {
		case !sc.streamManagement:
			waitStatus(t, app, id, "sent")
		case id == liveID:
			// Sent after <enabled/>: the client's <a h/> covers it.
			waitStatus(t, app, id, "delivered")
		default:
			// The queued one goes out on presence: after <enabled/> when
			// the client enables SM first (slixmpp), and then an <a h/>
			// covers it; before it when the client sends presence first
			// (xmpp.js), and XEP-0198 does not count it, so only the
			// receipt acknowledges it (the gateway also takes any later
			// <a/> as covering it). "sent" is recorded within half a
			// second of the write when no ack comes.
			var status string
			require.Eventually(t, func() bool {
				st, err := app.GetMessage(ctx, appID, id)
				if err == nil {
					status = st.Status
				}
				return status == "sent" || status == "delivered"
			}, 5*time.Second, 20*time.Millisecond, "the queued message never became sent or delivered")
			t.Logf("queued message: %s before the receipt", status)
		}
		s.cmd("receipt", "id", id)
		require.Equal(t, id, s.next("receipt_sent").ID)
		st := waitStatus(t, app, id, "delivered")
		require.NotNil(t, st.DeliveredAt)
		require.Nil(t, st.ReadAt)
		requireDevice(t, st, sc.resource, "delivered")

		s.cmd("displayed", "id", id)
		require.Equal(t, id, s.next("displayed_sent").ID)
		st = waitStatus(t, app, id, "read")
		require.NotNil(t, st.ReadAt)
		require.False(t, st.ReadAt.Before(*st.DeliveredAt), "read_at %s before delivered_at %s", st.ReadAt, st.DeliveredAt)
		requireDevice(t, st, sc.resource, "read")
	}

	s.quit()
	// The gateway saw the stream close.
	deadline := time.Now().Add(stepTimeout)
	for {
		devs, err := app.ListDevices(ctx, appID, user)
		require.NoError(t, err)
		require.Len(t, devs, 1)
		if !devs[0].Online {
			break
		}
		require.True(t, time.Now().Before(deadline), "device still online %s after the client quit", stepTimeout)
		time.Sleep(20 * time.Millisecond) // polling the REST device list
	}
}

// checkMessage compares what the client printed with what was posted.
func checkMessage(t *testing.T, m event, id, resource, body, data string) {
	t.Helper()
	require.Equal(t, id, m.ID, "message id")
	require.Equal(t, domain, m.From, "from")
	require.Equal(t, user+"@"+domain+"/"+resource, m.To, "to")
	require.Equal(t, "normal", m.Type, "type")
	require.NotNil(t, m.Body, "no <body/>")
	require.Equal(t, body, *m.Body, "body")
	require.NotNil(t, m.Data, "no <data/>")
	require.JSONEq(t, data, *m.Data, "data")
	require.True(t, m.ReceiptRequested, "no XEP-0184 <request/>")
	require.True(t, m.Markable, "no XEP-0333 <markable/>")
}

func requireDevice(t *testing.T, st *api.MessageStatus, device, status string) {
	t.Helper()
	for _, d := range st.Devices {
		if d.Device == device {
			require.Equal(t, status, d.Status, "device %s status", device)
			return
		}
	}
	t.Fatalf("device %s not in %+v", device, st.Devices)
}

// waitStatus polls GET /v1/apps/acme/messages/ID until the status is want
// (at most stepTimeout).
func waitStatus(t *testing.T, app *api.Client, id, want string) *api.MessageStatus {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	var last string
	for time.Now().Before(deadline) {
		st, err := app.GetMessage(context.Background(), appID, id)
		require.NoError(t, err)
		if last = st.Status; last == want {
			return st
		}
		time.Sleep(10 * time.Millisecond) // polling the REST status
	}
	t.Fatalf("message %s: status %q, want %q", id, last, want)
	return nil
}

// hostPort splits a listener address.
func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	return host, port
}

// TestInteropSlixmpp: slixmpp over STARTTLS on the XMPP port, SCRAM-SHA-256
// only, trusting the gateway's self-signed certificate; once as it comes
// (no stream management: receipts alone acknowledge), once with its
// XEP-0198 plugin.
func TestInteropSlixmpp(t *testing.T) {
	needSlixmpp(t)
	for _, sm := range []bool{false, true} {
		t.Run(smName(sm), func(t *testing.T) {
			exercise(t, scenario{resource: "slix1", transport: "starttls", streamManagement: sm},
				func(t *testing.T, g *gatewaytest.Gateway, password, resource string) *script {
					host, port := hostPort(t, g.XMPPAddr)
					args := []string{"slixmpp_client.py",
						"--host", host, "--port", port,
						"--jid", user + "@" + domain + "/" + resource,
						"--mech", "SCRAM-SHA-256",
						"--cafile", filepath.Join(g.DataDir, "tls-cert.pem"),
						"--timeout", fmt.Sprint(scriptTimeout.Seconds()), "--debug",
					}
					if sm {
						args = append(args, "--sm")
					}
					return start(t, "slixmpp", ".", python, args, []string{"INTEROP_PASSWORD=" + password}, scriptTimeout)
				})
		})
	}
}

func smName(sm bool) string {
	if sm {
		return "stream_management"
	}
	return "receipts"
}

// TestInteropXmppJS: xmpp.js over WebSocket (RFC 7395) on the HTTP
// listener; plain ws:// from loopback, where the gateway allows SASL, so
// xmpp.js picks its SCRAM-SHA-1 (it keeps PLAIN for secure transports).
// As it comes, xmpp.js enables stream management and answers every <r/>
// (stream_management); the receipts run hides <sm/> from it so that
// receipts alone acknowledge.
func TestInteropXmppJS(t *testing.T) {
	needXmppJS(t)
	node, args := nodeScript(t, "client.mjs")
	for _, sm := range []bool{false, true} {
		smEnv := "off"
		if sm {
			smEnv = "on"
		}
		t.Run(smName(sm), func(t *testing.T) {
			exercise(t, scenario{resource: "xmppjs1", transport: "websocket", streamManagement: sm},
				func(t *testing.T, g *gatewaytest.Gateway, password, resource string) *script {
					service := "ws://" + strings.TrimPrefix(g.URL, "http://") + "/xmpp-websocket"
					return start(t, "xmpp.js", "js", node, args, []string{
						"INTEROP_SERVICE=" + service,
						"INTEROP_DOMAIN=" + domain,
						"INTEROP_USER=" + user,
						"INTEROP_PASSWORD=" + password,
						"INTEROP_RESOURCE=" + resource,
						"INTEROP_SM=" + smEnv,
						"INTEROP_TIMEOUT=" + fmt.Sprint(scriptTimeout.Seconds()),
						"INTEROP_DEBUG=1",
					}, scriptTimeout)
				})
		})
	}
}
