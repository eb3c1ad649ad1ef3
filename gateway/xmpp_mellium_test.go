package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
)

// melliumMsg is what the mellium client saw of a message from the gateway.
type melliumMsg struct {
	ID   string
	Body string
	Data string
}

// TestInteropMellium logs in with mellium's own XMPP client over direct
// TLS (SCRAM-SHA-256), gets one message queued while offline and one live,
// sends a receipt and a displayed marker, and checks the REST status moves
// to delivered, then read.
func TestInteropMellium(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	u, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{})
	require.NoError(t, err)

	offline, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "while you were away", Data: []byte(`{"n":1}`)}, "")
	require.NoError(t, err)

	conn, err := tls.Dial("tcp", g.XMPPSAddr, &tls.Config{InsecureSkipVerify: true, ServerName: "acme.localhost", MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	origin := jid.MustParse("alice@acme.localhost/phone1")
	sess, err := xmpp.NewClientSession(ctx, origin, conn, xmpp.SASL("", u.Password, sasl.ScramSha256), xmpp.BindResource())
	require.NoError(t, err)
	defer sess.Close()

	got := make(chan melliumMsg, 10)
	go sess.Serve(xmpp.HandlerFunc(func(tr xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		if start.Name.Local != "message" {
			return nil
		}
		var m struct {
			ID   string `xml:"id,attr"`
			Body string `xml:"body"`
			Data string `xml:"urn:tether:data:0 data"`
		}
		d := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), tr))
		if _, err := d.Token(); err != nil {
			return err
		}
		if err := d.DecodeElement(&m, start); err != nil {
			return err
		}
		got <- melliumMsg{m.ID, m.Body, m.Data}
		return nil
	}))
	// Bound, but without its initial presence the device takes no
	// messages yet: the REST API lists it offline until the presence.
	devs, err := app.ListDevices(ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.False(t, devs[0].Online, "bound without presence")
	onlineEvents := func() int { return wakeEdgeCount(tmFeed(t, ctx, app, ""), "device.online", "alice") }
	require.Zero(t, onlineEvents(), "no device.online before the presence")
	require.NoError(t, sess.Send(ctx, stanza.Presence{}.Wrap(nil)))

	recv := func() melliumMsg {
		select {
		case m := <-got:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message within 10 s")
			return melliumMsg{}
		}
	}
	m1 := recv()
	require.Equal(t, offline.Messages[0].ID, m1.ID)
	require.Equal(t, "while you were away", m1.Body)
	require.JSONEq(t, `{"n":1}`, m1.Data)

	live, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "live <&> one"}, "")
	require.NoError(t, err)
	m2 := recv()
	require.Equal(t, live.Messages[0].ID, m2.ID)
	require.Equal(t, "live <&> one", m2.Body)

	devs, err = app.ListDevices(ctx, "acme", "alice")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.True(t, devs[0].Online)
	require.Eventually(t, func() bool { return onlineEvents() == 1 }, 10*time.Second, 10*time.Millisecond, "one device.online, at the presence")
	require.Equal(t, "tls", devs[0].Transport)
	require.True(t, strings.HasPrefix(devs[0].Device, "gen-"), "mellium v0.22 binds an empty resource: the gateway makes one")

	for _, m := range []melliumMsg{m1, m2} {
		// Marked sent within half a second when no ack comes.
		waitStatus(t, app, m.ID, "sent")
		raw := `<message to='acme.localhost' xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='` + m.ID + `'/></message>`
		require.NoError(t, sess.Send(ctx, xml.NewDecoder(strings.NewReader(raw))))
		waitStatus(t, app, m.ID, "delivered")
		raw = `<message to='acme.localhost' xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='` + m.ID + `'/></message>`
		require.NoError(t, sess.Send(ctx, xml.NewDecoder(strings.NewReader(raw))))
		waitStatus(t, app, m.ID, "read")
	}
}

// waitStatus polls the REST status until it is want (at most 10 s).
func waitStatus(t *testing.T, app *api.Client, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		st, err := app.GetMessage(context.Background(), "acme", id)
		require.NoError(t, err)
		if last = st.Status; last == want {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling the REST status
	}
	t.Fatalf("message %s: status %q, want %q", id, last, want)
}

var _ sync.Mutex
