package gateway_test

// Edge cases of the gateway's time-based promises (SPEC sections 3 to 7):
// expiry, SMS fallback deadlines, retention of status records and events,
// idempotency keys, rotated API keys, stale devices, wake retries, webhook
// retries, and the session timers (resume window, idle close, pre-auth
// close). The queue's side runs on a manual clock (gatewaytest
// WithManualClock: the test advances it and runs the due timers); the
// session timers are wall-clock (session.Config), so their tests shorten
// them through gateway.Config, and the 10 s pre-auth limit is tested once
// at its real length.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/internal/xmpptest"
	"tether/sdkproto"
	"tether/wake/waketest"
)

// --- fixture -----------------------------------------------------------------

// tmEnv is a gateway on a manual clock with one app, "acme".
type tmEnv struct {
	t     *testing.T
	g     *gatewaytest.Gateway
	app   *api.Client
	ctx   context.Context
	start time.Time
}

// tmStart starts a gateway on a manual clock set to a whole second of the
// wall clock (provider tokens are signed with it) and creates app acme.
func tmStart(t *testing.T, opts ...gatewaytest.Option) *tmEnv {
	t.Helper()
	start := time.Now().UTC().Truncate(time.Second)
	g := gatewaytest.Start(t, append([]gatewaytest.Option{gatewaytest.WithManualClock(start)}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &tmEnv{t: t, g: g, app: g.App(t, "acme"), ctx: ctx, start: start}
}

// fire advances the clock by d and runs the queue's due timers.
func (e *tmEnv) fire(d time.Duration) {
	e.t.Helper()
	e.g.Clock.Advance(d)
	_, err := e.g.Queue().RunTimers(e.ctx)
	require.NoError(e.t, err)
}

// fireTo sets the clock to start+d and runs the due timers.
func (e *tmEnv) fireTo(d time.Duration) {
	e.t.Helper()
	e.g.Clock.Set(e.start.Add(d))
	_, err := e.g.Queue().RunTimers(e.ctx)
	require.NoError(e.t, err)
}

func tmPassword(user string) string { return "pw-" + user + "-123456" }

// user creates users with the password tmPassword gives.
func (e *tmEnv) user(users ...string) {
	e.t.Helper()
	for _, u := range users {
		_, err := e.app.PutUser(e.ctx, "acme", u, api.PutUserRequest{Password: tmPassword(u)})
		require.NoError(e.t, err)
	}
}

// send posts one message and returns its id.
func (e *tmEnv) send(req api.SendRequest) string {
	e.t.Helper()
	res, err := e.app.Send(e.ctx, "acme", req, "")
	require.NoError(e.t, err)
	require.Len(e.t, res.Messages, 1)
	return res.Messages[0].ID
}

func (e *tmEnv) status(id string) *api.MessageStatus {
	e.t.Helper()
	st, err := e.app.GetMessage(e.ctx, "acme", id)
	require.NoError(e.t, err, "status of %s", id)
	return st
}

// waitStatus polls message id until its status is want (fallbacks finish
// on a goroutine of their own).
func (e *tmEnv) waitStatus(id, want string) *api.MessageStatus {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.status(id)
		if st.Status == want {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("message %s: status %q (reason %q), want %q", id, st.Status, st.Reason, want)
		}
		time.Sleep(10 * time.Millisecond) // polling an asynchronous outcome
	}
}

// events returns the app's whole feed.
func (e *tmEnv) events() []api.Event { return tmFeed(e.t, e.ctx, e.app, "") }

// tmFeed returns app acme's feed after cursor, every page.
func tmFeed(t *testing.T, ctx context.Context, c *api.Client, after string) []api.Event {
	t.Helper()
	var out []api.Event
	for {
		ev, err := c.Events(ctx, "acme", after, 1000, 0)
		require.NoError(t, err)
		for _, raw := range ev.Events {
			var x api.Event
			require.NoError(t, json.Unmarshal(raw, &x))
			out = append(out, x)
		}
		if len(ev.Events) < 1000 {
			return out
		}
		after = ev.Next
	}
}

// tmTypesFor returns the types of the events of message id, in order.
func tmTypesFor(evs []api.Event, id string) []string {
	var out []string
	for _, e := range evs {
		if e.MessageID == id {
			out = append(out, e.Type)
		}
	}
	return out
}

func (e *tmEnv) depth() int64 {
	e.t.Helper()
	st, err := e.g.Admin().Stats(e.ctx)
	require.NoError(e.t, err)
	return st.QueueDepth
}

// pull is a device HTTP pull (wait 0) of user's device dev.
func (e *tmEnv) pull(user, dev string) []string {
	e.t.Helper()
	code, body := tmDeviceHTTP(e.t, "GET", e.g.URL+"/v1/device/messages", user, dev, nil)
	require.Equal(e.t, 200, code, "%s", body)
	var pr api.PullResponse
	require.NoError(e.t, json.Unmarshal(body, &pr))
	var ids []string
	for _, m := range pr.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// ack acknowledges ids as delivered from user's device dev over HTTP.
func (e *tmEnv) ack(user, dev string, ids ...string) {
	e.t.Helper()
	code, body := tmDeviceHTTP(e.t, "POST", e.g.URL+"/v1/device/acks", user, dev, api.AcksRequest{Delivered: ids})
	require.Equal(e.t, 204, code, "%s", body)
}

func tmDeviceHTTP(t *testing.T, method, url, user, dev string, in any) (int, []byte) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	req.SetBasicAuth(user+"@acme", tmPassword(user))
	req.Header.Set("Tether-Device", dev)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// tmDevice is an SDK session of a device, with the ids it got.
type tmDevice struct {
	c   *sdkproto.Client
	got chan string
}

// connect opens an SDK session (stream management on, acks by the SDK).
func (e *tmEnv) connect(user, dev string) *tmDevice {
	e.t.Helper()
	return tmConnect(e.t, e.ctx, e.g.XMPPSAddr, user, dev, nil)
}

func tmConnect(t *testing.T, ctx context.Context, addr, user, dev string, cfg func(*sdkproto.Config)) *tmDevice {
	t.Helper()
	d := &tmDevice{got: make(chan string, 100)}
	c := sdkproto.Config{
		Addr: addr, App: "acme", User: user, Password: tmPassword(user), Device: dev,
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		OnMessage: func(m *sdkproto.Message) {
			select {
			case d.got <- m.ID:
			default:
			}
		},
	}
	if cfg != nil {
		cfg(&c)
	}
	var err error
	d.c, err = sdkproto.Dial(ctx, c)
	require.NoError(t, err)
	t.Cleanup(func() { d.c.Close() })
	return d
}

// next returns the next message id the device got, or fails.
func (d *tmDevice) next(t *testing.T) string {
	t.Helper()
	select {
	case id := <-d.got:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("the device got no message")
		return ""
	}
}

// none requires that the device gets nothing within d.
func (d *tmDevice) none(t *testing.T, within time.Duration, why string) {
	t.Helper()
	select {
	case id := <-d.got:
		t.Fatalf("%s: the device got %s", why, id)
	case <-time.After(within):
	}
}

func tmInt(v int64) *int64 { return &v }

// --- a raw XMPP client -------------------------------------------------------

// tmRaw is abClient (abuse_edge_test.go) over direct TLS, with the steps
// these tests take: it sends raw XML and acknowledges nothing unless told,
// so a test decides what the gateway counts as received. Its Drop closes
// the TCP connection abruptly, as a lost network does.
type tmRaw struct{ *abClient }

const tmDomain = abDomain

// tmDialRaw connects to the direct-TLS port and completes the TLS handshake.
func tmDialRaw(t *testing.T, addr string) *tmRaw { return &tmRaw{abDialTLS(t, addr, nil)} }

// login opens the stream and authenticates with PLAIN.
func (c *tmRaw) login(user string) {
	c.T.Helper()
	c.Open()
	c.Authenticate(user, tmPassword(user))
}

// session binds dev, enables stream management with resumption and sends
// the initial presence; it returns the resumption id and the advertised
// max.
func (c *tmRaw) session(dev string) (smID, max string) {
	c.T.Helper()
	c.BindJID(dev)
	n := c.EnableSM()
	c.Send("<presence/>")
	return n.Attr("id"), n.Attr("max")
}

// resume asks to resume smID having received h stanzas; it returns the
// answer (<resumed/> or <failed/>).
func (c *tmRaw) resume(smID string, h int) *xmpptest.Node {
	c.T.Helper()
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", smID, h))
	for {
		n, err := c.NextWithin(10 * time.Second)
		require.NoError(c.T, err, "waiting for the answer to <resume/>")
		if n.XMLName.Local == "resumed" || n.XMLName.Local == "failed" {
			return n
		}
	}
}

// message reads until a message stanza comes and returns its id.
func (c *tmRaw) message() string {
	c.T.Helper()
	return c.Expect("message").Attr("id")
}

// messagesWithin returns the ids of the message stanzas read within d.
func (c *tmRaw) messagesWithin(d time.Duration) []string {
	var ids []string
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return ids
		}
		n, err := c.NextWithin(left)
		if err != nil {
			return ids
		}
		if n.XMLName.Local == "message" {
			ids = append(ids, n.Attr("id"))
		}
	}
}

// waitOnline polls until device dev of user is listed online (or not).
func (e *tmEnv) waitOnline(user, dev string, online bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		devs, err := e.app.ListDevices(e.ctx, "acme", user)
		require.NoError(e.t, err)
		for _, d := range devs {
			if d.Device == dev && d.Online == online {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s/%s: not online=%v within 10 s: %+v", user, dev, online, devs)
		}
		time.Sleep(10 * time.Millisecond) // polling session registration
	}
}

// --- expiry --------------------------------------------------------------------

// TestTmExpiryBoundary: a message with expires_in 60 is enqueued at 59.999
// s and expired at 60 s (REST status, one message.expired event), its
// payload is gone at once, and from then on no device gets it: not one
// pulling over HTTP, not one connecting over XMPP right after (which gets
// the next message first), and a late acknowledgement does not turn it
// delivered.
func TestTmExpiryBoundary(t *testing.T) {
	e := tmStart(t)
	e.user("alice")
	id := e.send(api.SendRequest{To: []string{"alice"}, Body: "soon gone", ExpiresIn: tmInt(60)})
	st := e.status(id)
	require.Equal(t, st.CreatedAt.Add(60*time.Second), st.ExpiresAt)

	e.fire(60*time.Second - time.Millisecond)
	require.Equal(t, "enqueued", e.status(id).Status, "1 ms before expires_at")
	require.Empty(t, tmTypesFor(e.events(), id))
	e.fire(time.Millisecond)
	st = e.status(id)
	require.Equal(t, "expired", st.Status, "at expires_at")
	require.NotEmpty(t, st.Reason)
	require.Equal(t, []string{"message.expired"}, tmTypesFor(e.events(), id))
	require.EqualValues(t, 0, e.depth(), "the payload of an expired message is dropped")

	require.Empty(t, e.pull("alice", "web"), "an HTTP pull right after the expiry")
	later := e.send(api.SendRequest{To: []string{"alice"}, Body: "later"})
	d := e.connect("alice", "phone")
	require.Equal(t, later, d.next(t), "a device connecting right after the expiry gets the next message, not the expired one")
	d.none(t, 300*time.Millisecond, "after the expiry")

	// A late acknowledgement of the expired message changes nothing.
	e.ack("alice", "web", id)
	require.NoError(t, d.c.Ack(id))
	require.NoError(t, d.c.MarkRead(id))
	time.Sleep(300 * time.Millisecond) // the receipts are processed asynchronously
	st = e.status(id)
	require.Equal(t, "expired", st.Status)
	require.Nil(t, st.DeliveredAt)
	require.Equal(t, []string{"message.expired"}, tmTypesFor(e.events(), id))
}

// TestTmExpiredBeforeTheTimerRuns: once expires_at has passed, no device
// gets the message even before the expiry timer has finalized it (the
// timer runs every 200 ms in production; here not at all until the end).
func TestTmExpiredBeforeTheTimerRuns(t *testing.T) {
	e := tmStart(t)
	e.user("bob")
	id := e.send(api.SendRequest{To: []string{"bob"}, Body: "x", ExpiresIn: tmInt(30)})
	e.g.Clock.Advance(30 * time.Second) // the timer has not run
	require.Empty(t, e.pull("bob", "web"))
	d := e.connect("bob", "phone")
	d.none(t, 500*time.Millisecond, "expires_at passed")
	e.fire(0)
	require.Equal(t, "expired", e.status(id).Status)
}

// TestTmExpiryOfAMessageInFlight: a device got a message and did not
// acknowledge it (XEP-0198 h not counted, no receipt) when its connection
// dropped. The message expires while the session waits for resumption:
// the resumed stream must not carry it again, and the status stays
// expired. The same holds for a live session that has it in flight when
// it expires: a late <a h/> or receipt does not make it delivered.
func TestTmExpiryOfAMessageInFlight(t *testing.T) {
	e := tmStart(t)
	e.user("carol", "dave")

	t.Run("resumed after the expiry", func(t *testing.T) {
		c := tmDialRaw(t, e.g.XMPPSAddr)
		c.login("carol")
		smID, _ := c.session("phone")
		id := e.send(api.SendRequest{To: []string{"carol"}, Body: "in flight", ExpiresIn: tmInt(60)})
		require.Equal(t, id, c.message())
		e.waitStatus(id, "sent") // recorded up to 500 ms after the write
		c.Drop()
		e.fire(61 * time.Second)
		require.Equal(t, "expired", e.status(id).Status)

		r := tmDialRaw(t, e.g.XMPPSAddr)
		r.login("carol")
		n := r.resume(smID, 0)
		require.Equal(t, "resumed", n.XMLName.Local, "within the resume window: %s", n)
		require.NotContains(t, r.messagesWithin(time.Second), id, "an expired message sent again on resumption")
		require.Equal(t, "expired", e.status(id).Status)
		require.Equal(t, []string{"message.sent", "message.expired"}, tmTypesFor(e.events(), id))
		r.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
		time.Sleep(200 * time.Millisecond) // the ack is processed asynchronously
		require.Equal(t, "expired", e.status(id).Status)
	})

	t.Run("live session, late acknowledgement", func(t *testing.T) {
		c := tmDialRaw(t, e.g.XMPPSAddr)
		c.login("dave")
		c.session("phone")
		id := e.send(api.SendRequest{To: []string{"dave"}, Body: "in flight", ExpiresIn: tmInt(60)})
		require.Equal(t, id, c.message())
		e.waitStatus(id, "sent")
		e.fire(61 * time.Second)
		require.Equal(t, "expired", e.status(id).Status)
		c.Send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
		c.Send("<message to='" + tmDomain + "'><received xmlns='urn:xmpp:receipts' id='" + id + "'/></message>")
		time.Sleep(300 * time.Millisecond) // processed asynchronously
		st := e.status(id)
		require.Equal(t, "expired", st.Status)
		require.Nil(t, st.DeliveredAt)
		require.NotContains(t, tmTypesFor(e.events(), id), "message.delivered")
	})
}

// TestTmResumeJustAfterExpiresAt: the expiry timer has not run yet (in
// production up to one 200 ms tick), but expires_at has passed: a fresh
// session would not get the message (Pending skips it), and a resumed
// stream should not either. If it does, a device that acknowledges it
// turns a message past its expiry into "delivered".
func TestTmResumeJustAfterExpiresAt(t *testing.T) {
	e := tmStart(t)
	e.user("erin")
	c := tmDialRaw(t, e.g.XMPPSAddr)
	c.login("erin")
	smID, _ := c.session("phone")
	id := e.send(api.SendRequest{To: []string{"erin"}, Body: "x", ExpiresIn: tmInt(60)})
	require.Equal(t, id, c.message())
	c.Drop()
	e.g.Clock.Advance(61 * time.Second) // expires_at passed; the timer has not run

	r := tmDialRaw(t, e.g.XMPPSAddr)
	r.login("erin")
	n := r.resume(smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "%s", n)
	got := r.messagesWithin(time.Second)
	r.Send("<a xmlns='urn:xmpp:sm:3' h='" + fmt.Sprint(len(got)) + "'/>")
	time.Sleep(200 * time.Millisecond) // the ack is processed asynchronously
	e.fire(0)
	st := e.status(id)
	require.NotContains(t, got, id, "a message past its expires_at sent again on resumption (its status then: %s)", st.Status)
	require.Equal(t, "expired", st.Status)
}

// TestTmExpiresInBounds: expires_in up to 2,419,200 s (28 days) is
// accepted and honoured to the millisecond; one more second, a negative
// value, or the same as an app default are refused with the field named.
func TestTmExpiresInBounds(t *testing.T) {
	e := tmStart(t)
	e.user("fay")
	id := e.send(api.SendRequest{To: []string{"fay"}, Body: "x", ExpiresIn: tmInt(2419200)})
	st := e.status(id)
	require.Equal(t, st.CreatedAt.Add(28*24*time.Hour), st.ExpiresAt)
	for _, v := range []int64{2419201, -1} {
		_, err := e.app.Send(e.ctx, "acme", api.SendRequest{To: []string{"fay"}, Body: "x", ExpiresIn: tmInt(v)}, "")
		tmAPIErr(t, err, 400, "expires_in")
	}
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{ExpiresIn: tmInt(2419201)}})
	tmAPIErr(t, err, 400, "defaults.expires_in")
	_, err = e.app.Send(e.ctx, "acme", api.SendRequest{To: []string{"fay"}, Body: "x", SMSFallback: &api.SMSFallback{To: "+393330000000", After: tmInt(2419201)}}, "")
	tmAPIErr(t, err, 400, "sms_fallback.after")

	e.fire(28*24*time.Hour - time.Second)
	require.Equal(t, "enqueued", e.status(id).Status)
	require.Equal(t, []string{id}, e.pull("fay", "web"), "still deliverable a second before 28 days")
	e.fire(time.Second)
	require.Equal(t, "expired", e.status(id).Status, "sent but never acknowledged: expired")
	require.Empty(t, e.pull("fay", "web"))

	// An app default of 1 hour applies to a message without expires_in.
	_, err = e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{ExpiresIn: tmInt(3600)}})
	require.NoError(t, err)
	id = e.send(api.SendRequest{To: []string{"fay"}, Body: "y"})
	st = e.status(id)
	require.Equal(t, st.CreatedAt.Add(time.Hour), st.ExpiresAt)
}

func tmAPIErr(t *testing.T, err error, status int, field string) {
	t.Helper()
	var ae *api.Error
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	require.Equal(t, status, ae.Status, "%v", ae)
	require.Equal(t, field, ae.Field, "%v", ae)
}

// TestTmExpiresInZero: expires_in 0 means "deliver only to a device online
// now" (SPEC 3). The device online at the POST gets it and has 30 s to
// acknowledge it; a device of the same user that comes online a second
// later was not online "now" and must not get it; after 30 s it is
// expired.
func TestTmExpiresInZero(t *testing.T) {
	e := tmStart(t)
	e.user("gus")
	c := tmDialRaw(t, e.g.XMPPSAddr)
	c.login("gus")
	c.session("phone")
	e.waitOnline("gus", "phone", true)
	id := e.send(api.SendRequest{To: []string{"gus"}, Body: "now or never", ExpiresIn: tmInt(0)})
	require.Equal(t, id, c.message(), "the device online now gets it")
	st := e.status(id)
	require.Equal(t, st.CreatedAt.Add(30*time.Second), st.ExpiresAt, "30 s for the online device to acknowledge (docs/api.md)")

	e.fire(time.Second)
	late := e.connect("gus", "tablet")
	lateIDs := []string{}
	select {
	case x := <-late.got:
		lateIDs = append(lateIDs, x)
	case <-time.After(500 * time.Millisecond):
	}
	pulled := e.pull("gus", "web")
	e.fire(30 * time.Second)
	// The phone never acknowledged it (the tablet's SDK may have).
	require.Empty(t, append(lateIDs, pulled...), "devices that came after the POST got the expires_in 0 message %s (XMPP: %v, HTTP pull: %v)", id, lateIDs, pulled)
	require.Equal(t, "expired", e.status(id).Status)
}

// --- SMS fallback deadlines ----------------------------------------------------

// TestTmFallbackDeadlines: sms_fallback.after before the expiry fires at
// after; at or past the expiry, or absent (no app default), at the expiry;
// an app's fallback_after default applies by priority, and at expiry when
// it is past the message's expiry. Each message gets exactly one SMS, ends
// fallback_sent (never expired), and nothing fires early.
func TestTmFallbackDeadlines(t *testing.T) {
	sms := waketest.NewSMS(t)
	e := tmStart(t)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"}})
	require.NoError(t, err)
	e.user("u1", "u2", "u3", "u4", "u5", "u6")
	fb := func(after *int64) *api.SMSFallback { return &api.SMSFallback{To: "+393330000001", After: after} }
	ids := map[string]string{
		"after30":  e.send(api.SendRequest{To: []string{"u1"}, Body: "a", ExpiresIn: tmInt(60), SMSFallback: fb(tmInt(30))}),
		"after60":  e.send(api.SendRequest{To: []string{"u2"}, Body: "b", ExpiresIn: tmInt(60), SMSFallback: fb(tmInt(60))}),
		"noAfter":  e.send(api.SendRequest{To: []string{"u3"}, Body: "c", ExpiresIn: tmInt(60), SMSFallback: fb(nil)}),
		"after999": e.send(api.SendRequest{To: []string{"u3"}, Body: "c2", ExpiresIn: tmInt(60), SMSFallback: fb(tmInt(999))}),
	}
	_, err = e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{FallbackAfter: map[string]int64{"high": 10, "normal": 40}}})
	require.NoError(t, err)
	ids["defHigh"] = e.send(api.SendRequest{To: []string{"u4"}, Body: "d", Priority: "high", ExpiresIn: tmInt(60), SMSFallback: fb(nil)})
	ids["defNormal"] = e.send(api.SendRequest{To: []string{"u5"}, Body: "e", ExpiresIn: tmInt(60), SMSFallback: fb(nil)})
	ids["defPastExpiry"] = e.send(api.SendRequest{To: []string{"u6"}, Body: "f", ExpiresIn: tmInt(20), SMSFallback: fb(nil)})

	due := map[string]time.Duration{
		"defHigh": 10 * time.Second, "defPastExpiry": 20 * time.Second, "after30": 30 * time.Second,
		"defNormal": 40 * time.Second, "after60": time.Minute, "noAfter": time.Minute, "after999": time.Minute,
	}
	for _, at := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second, time.Minute} {
		e.fireTo(at - time.Millisecond)
		for name, d := range due {
			if d >= at {
				require.Equal(t, "enqueued", e.status(ids[name]).Status, "%s before %v", name, at)
			}
		}
		e.fireTo(at)
		for name, d := range due {
			if d == at {
				st := e.waitStatus(ids[name], "fallback_sent")
				require.Equal(t, "sent", st.Fallback.Status, name)
			}
		}
	}
	e.fireTo(2 * time.Minute) // the expiry timers of those that fell back earlier
	evs := e.events()
	perMsg := map[string]int{}
	for _, r := range sms.Requests() {
		perMsg[r.MessageID]++
	}
	for name, id := range ids {
		require.Equal(t, "fallback_sent", e.status(id).Status, name)
		require.Equal(t, []string{"message.fallback_sent"}, tmTypesFor(evs, id), name)
		require.Equal(t, 1, perMsg[id], "SMS for %s", name)
	}
	require.Len(t, sms.Requests(), len(ids))
}

// tmSMSGate is an SMS provider ("http") that holds each request until
// released.
type tmSMSGate struct {
	srv     *httptest.Server
	arrived chan string // message ids
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func tmNewSMSGate(t *testing.T) *tmSMSGate {
	s := &tmSMSGate{arrived: make(chan string, 10), release: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			MessageID string `json:"message_id"`
		}
		json.NewDecoder(r.Body).Decode(&m)
		s.mu.Lock()
		s.n++
		s.mu.Unlock()
		s.arrived <- m.MessageID
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"id":"sms-1"}`)
	}))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		s.srv.Close()
	})
	return s
}

// TestTmFallbackWhileInFlight: a device got the message (sent) but did not
// acknowledge it by sms_fallback.after: the fallback fires and withdraws
// it (SPEC 8: exactly one of device delivery and SMS). The device's
// acknowledgement arriving while the SMS provider is still answering (a
// second or two is common) must not record a delivery as well: the
// backend would get message.delivered and then message.fallback_sent.
func TestTmFallbackWhileInFlight(t *testing.T) {
	gate := tmNewSMSGate(t)
	e := tmStart(t)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: gate.srv.URL, APIKey: "k", From: "ACME"}})
	require.NoError(t, err)
	e.user("oli")
	id := e.send(api.SendRequest{To: []string{"oli"}, Body: "code 1234", ExpiresIn: tmInt(600),
		SMSFallback: &api.SMSFallback{To: "+393330000002", After: tmInt(30)}})
	e.fire(5 * time.Second)
	require.Equal(t, []string{id}, e.pull("oli", "web"))
	require.Equal(t, "sent", e.status(id).Status)

	e.fire(25 * time.Second) // the fallback deadline
	select {
	case got := <-gate.arrived:
		require.Equal(t, id, got)
	case <-time.After(10 * time.Second):
		t.Fatal("no SMS hand-off")
	}
	require.Empty(t, e.pull("oli", "web"), "withdrawn from the device queue before the SMS")
	e.ack("oli", "web", id) // while the provider has not answered yet
	close(gate.release)
	st := e.waitStatus(id, "fallback_sent")
	types := tmTypesFor(e.events(), id)
	require.NotContains(t, types, "message.delivered", "a delivery recorded after the fallback fired: events %v, delivered_at %v", types, st.DeliveredAt)
	require.Nil(t, st.DeliveredAt)
}

// --- retention -----------------------------------------------------------------

// TestTmStatusRetention: a status record stays 7 days after the message is
// done (final, or acknowledged by every known device) and then answers
// 404; the payload goes as soon as no device needs it. A message
// acknowledged by one of two devices keeps its payload until the second
// does, and its 7 days count from then.
func TestTmStatusRetention(t *testing.T) {
	e := tmStart(t)
	e.user("gia", "hal", "ivy", "jon")
	require.Empty(t, e.pull("hal", "web"))
	require.Empty(t, e.pull("ivy", "web"))
	require.Empty(t, e.pull("ivy", "tab"))
	expired := e.send(api.SendRequest{To: []string{"gia"}, Body: "x", ExpiresIn: tmInt(60)})
	delivered := e.send(api.SendRequest{To: []string{"hal"}, Body: "y"})
	twoDevices := e.send(api.SendRequest{To: []string{"ivy"}, Body: "z"})
	cancelled := e.send(api.SendRequest{To: []string{"jon"}, Body: "w"})
	require.EqualValues(t, 4, e.depth())

	require.Equal(t, []string{delivered}, e.pull("hal", "web"))
	e.ack("hal", "web", delivered)
	require.EqualValues(t, 3, e.depth(), "payload dropped once the only device acknowledged it")
	_, err := e.app.CancelMessage(e.ctx, "acme", cancelled)
	require.NoError(t, err)
	require.EqualValues(t, 2, e.depth())
	e.ack("ivy", "web", twoDevices)
	require.EqualValues(t, 2, e.depth(), "the tablet still needs it")
	e.fire(time.Minute)
	require.Equal(t, "expired", e.status(expired).Status)
	require.EqualValues(t, 1, e.depth())
	e.fireTo(3 * 24 * time.Hour)
	e.ack("ivy", "tab", twoDevices)
	require.EqualValues(t, 0, e.depth())

	gone := func(id, why string) {
		t.Helper()
		_, err := e.app.GetMessage(e.ctx, "acme", id)
		tmAPIErr(t, err, 404, "id")
		_, err = e.app.CancelMessage(e.ctx, "acme", id)
		tmAPIErr(t, err, 404, "id")
	}
	e.fireTo(7*24*time.Hour - time.Second)
	for _, id := range []string{expired, delivered, twoDevices, cancelled} {
		e.status(id)
	}
	e.fireTo(7 * 24 * time.Hour)
	gone(delivered, "delivered at 0")
	gone(cancelled, "cancelled at 0")
	require.Equal(t, "expired", e.status(expired).Status)
	e.fireTo(7*24*time.Hour + time.Minute)
	gone(expired, "expired at 60 s")
	require.Equal(t, "delivered", e.status(twoDevices).Status)
	e.fireTo(10*24*time.Hour - time.Second)
	require.Equal(t, "delivered", e.status(twoDevices).Status, "done at day 3: kept until day 10")
	e.fireTo(10 * 24 * time.Hour)
	gone(twoDevices, "done at day 3")
}

// TestTmEventRetention: events are kept 7 days; once trimmed, the feed
// starts at the oldest kept event, a cursor that points into the trimmed
// range (or at the last event) still works, and new events get new,
// higher ids.
func TestTmEventRetention(t *testing.T) {
	e := tmStart(t)
	cancelEvent := func() string {
		t.Helper()
		id := e.send(api.SendRequest{To: []string{"kai"}, Body: "x"})
		_, err := e.app.CancelMessage(e.ctx, "acme", id)
		require.NoError(t, err)
		evs := e.events()
		last := evs[len(evs)-1]
		require.Equal(t, id, last.MessageID)
		return last.ID
	}
	trimAt := func(d time.Duration) {
		t.Helper()
		e.fireTo(d)
		require.NoError(t, e.g.Queue().TrimEvents())
	}
	ids := func(evs []api.Event) []string {
		out := []string{}
		for _, x := range evs {
			out = append(out, x.ID)
		}
		return out
	}
	e1, e2, e3 := cancelEvent(), cancelEvent(), cancelEvent()
	e.fireTo(3 * 24 * time.Hour)
	e4, e5 := cancelEvent(), cancelEvent()

	trimAt(7 * 24 * time.Hour)
	require.Equal(t, []string{e1, e2, e3, e4, e5}, ids(e.events()), "exactly 7 days old: kept")
	trimAt(7*24*time.Hour + time.Second)
	require.Equal(t, []string{e4, e5}, ids(e.events()), "older than 7 days: gone")
	for _, after := range []string{e1, e2, e3} {
		require.Equal(t, []string{e4, e5}, ids(tmFeed(t, e.ctx, e.app, after)), "cursor %s in the trimmed range", after)
	}
	ev, err := e.app.Events(e.ctx, "acme", e5, 10, 0)
	require.NoError(t, err)
	require.Empty(t, ev.Events)
	require.Equal(t, e5, ev.Next, "an empty page keeps the cursor")
	ev, err = e.app.Events(e.ctx, "acme", "", 1, 0)
	require.NoError(t, err)
	require.Len(t, ev.Events, 1)
	require.Equal(t, e4, ev.Next)

	trimAt(10*24*time.Hour + time.Second)
	ev, err = e.app.Events(e.ctx, "acme", "", 10, 0)
	require.NoError(t, err)
	require.Empty(t, ev.Events, "every event trimmed")
	emptyNext := ev.Next
	e6 := cancelEvent()
	require.Greater(t, e6, e5, "ids keep growing after a trim")
	for _, after := range []string{emptyNext, e1, e5} {
		require.Equal(t, []string{e6}, ids(tmFeed(t, e.ctx, e.app, after)), "after %q", after)
	}
}

// --- idempotency keys ------------------------------------------------------------

// TestTmIdempotencyWindow: a repeat with the same Idempotency-Key within
// 24 h of the first request gets the first answer (a repeat does not
// extend the window); after 24 h the key is free: the same request
// enqueues a new message, and a different body is accepted rather than
// refused as a conflict.
func TestTmIdempotencyWindow(t *testing.T) {
	e := tmStart(t)
	post := func(key, body string) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequest("POST", e.g.URL+"/v1/apps/acme/messages", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+e.app.Token)
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, b
	}
	b1, b2 := `{"to":["lou"],"body":"one"}`, `{"to":["lou"],"body":"two"}`
	code, h, first := post("k1", b1)
	require.Equal(t, 202, code, "%s", first)
	require.Empty(t, h.Get("Idempotent-Replayed"))

	e.fireTo(23 * time.Hour)
	code, h, again := post("k1", b1)
	require.Equal(t, 202, code)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(first), string(again))
	e.fireTo(24*time.Hour - time.Second)
	code, h, again = post("k1", b1)
	require.Equal(t, 202, code)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"), "a second before 24 h")
	require.JSONEq(t, string(first), string(again))
	code, _, b := post("k1", b2)
	require.Equal(t, 409, code, "another body within 24 h: %s", b)
	require.EqualValues(t, 1, e.depth())

	e.fireTo(24*time.Hour + time.Second)
	code, h, second := post("k1", b1)
	require.Equal(t, 202, code, "%s", second)
	require.Empty(t, h.Get("Idempotent-Replayed"), "after 24 h the key is new")
	require.NotEqual(t, string(first), string(second))
	require.EqualValues(t, 2, e.depth())
	code, h, again = post("k1", b1)
	require.Equal(t, 202, code)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(second), string(again), "the new window replays the new answer")

	code, _, _ = post("k2", b1)
	require.Equal(t, 202, code)
	e.fireTo(48*time.Hour + 2*time.Second)
	code, h, b = post("k2", b2)
	require.Equal(t, 202, code, "another body after 24 h: %s", b)
	require.Empty(t, h.Get("Idempotent-Replayed"))
	require.EqualValues(t, 4, e.depth())
}

// --- API key rotation ----------------------------------------------------------

// TestTmKeyRotation: after POST .../keys the old key works for 24 h
// (previous_valid_until), then answers 401; the new one works. Rotating
// again stops the key rotated out earlier at once (docs/api.md) and gives
// the one just replaced its own 24 h. The grace survives a restart.
func TestTmKeyRotation(t *testing.T) {
	e := tmStart(t)
	works := func(c *api.Client, why string) {
		t.Helper()
		_, err := c.GetApp(e.ctx, "acme")
		require.NoError(t, err, why)
		_, err = c.Send(e.ctx, "acme", api.SendRequest{To: []string{"mo"}, Body: "x"}, "")
		require.NoError(t, err, why)
	}
	refused := func(c *api.Client, why string) {
		t.Helper()
		_, err := c.GetApp(e.ctx, "acme")
		var ae *api.Error
		require.ErrorAs(t, err, &ae, why)
		require.Equal(t, 401, ae.Status, "%s: %v", why, ae)
		_, err = c.Send(e.ctx, "acme", api.SendRequest{To: []string{"mo"}, Body: "x"}, "")
		require.ErrorAs(t, err, &ae, why)
		require.Equal(t, 401, ae.Status, "%s: %v", why, ae)
	}
	k0 := e.app.Token
	kr, err := e.app.RotateKey(e.ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, e.start.Add(24*time.Hour), kr.PreviousValidUntil.UTC())
	k1 := kr.APIKey
	e.fireTo(24*time.Hour - time.Second)
	works(api.NewClient(e.g.URL, k0), "the old key a second before 24 h")
	works(api.NewClient(e.g.URL, k1), "the new key")
	e.fireTo(24 * time.Hour)
	refused(api.NewClient(e.g.URL, k0), "the old key at 24 h")
	works(api.NewClient(e.g.URL, k1), "the new key after 24 h")

	e.fireTo(25 * time.Hour)
	kr, err = api.NewClient(e.g.URL, k1).RotateKey(e.ctx, "acme")
	require.NoError(t, err)
	k2 := kr.APIKey
	require.Equal(t, e.start.Add(49*time.Hour), kr.PreviousValidUntil.UTC())
	e.fireTo(26 * time.Hour)
	kr, err = api.NewClient(e.g.URL, k2).RotateKey(e.ctx, "acme")
	require.NoError(t, err)
	k3 := kr.APIKey
	require.Equal(t, e.start.Add(50*time.Hour), kr.PreviousValidUntil.UTC())
	refused(api.NewClient(e.g.URL, k1), "rotated out earlier: stops at the second rotation (docs/api.md)")
	works(api.NewClient(e.g.URL, k2), "the key replaced by the second rotation")
	works(api.NewClient(e.g.URL, k3), "the newest key")

	// Restart on the same store, the clock going on.
	now, dir := e.g.Clock.Now(), e.g.DataDir
	e.g.Stop()
	e.g = gatewaytest.Start(t, gatewaytest.WithDataDir(dir), gatewaytest.WithManualClock(now))
	works(api.NewClient(e.g.URL, k2), "the replaced key after a restart")
	refused(api.NewClient(e.g.URL, k1), "the key stopped earlier, after a restart")
	e.fireTo(50*time.Hour - time.Second)
	works(api.NewClient(e.g.URL, k2), "a second before its 24 h, after a restart")
	e.fireTo(50 * time.Hour)
	refused(api.NewClient(e.g.URL, k2), "its 24 h are over")
	works(api.NewClient(e.g.URL, k3), "the newest key")
	_, err = e.g.Admin().GetApp(e.ctx, "acme")
	require.NoError(t, err, "the admin token is not affected")
}

// --- stale devices -------------------------------------------------------------

// TestTmStaleDevice: a device unseen for 30 days stops being known (SPEC
// 4): a message to its user leaves the store once the other devices
// acknowledged it, and the stale device never gets it, even when it comes
// back; once back it is known again. A day short of 30 it is still known.
func TestTmStaleDevice(t *testing.T) {
	const day = 24 * time.Hour

	t.Run("unseen 30 days", func(t *testing.T) {
		e := tmStart(t)
		e.user("kim")
		require.Empty(t, e.pull("kim", "old"))
		e.fireTo(30*day + time.Minute)
		require.Empty(t, e.pull("kim", "new"))
		m := e.send(api.SendRequest{To: []string{"kim"}, Body: "x"})
		require.Equal(t, []string{m}, e.pull("kim", "new"))
		e.ack("kim", "new", m)
		st := e.status(m)
		require.Equal(t, "delivered", st.Status)
		require.EqualValues(t, 0, e.depth(), "the stale device does not hold the message in the store")
		for _, d := range st.Devices {
			require.Equal(t, "new", d.Device, "only the known device in the status: %+v", st.Devices)
		}
		// It comes back: nothing of the message it missed, but it is known
		// again, and later messages wait for it too.
		require.Empty(t, e.pull("kim", "old"), "the stale device back")
		m2 := e.send(api.SendRequest{To: []string{"kim"}, Body: "y"})
		require.Equal(t, []string{m2}, e.pull("kim", "new"))
		e.ack("kim", "new", m2)
		require.EqualValues(t, 1, e.depth(), "the device is known again: the message waits for it")
		require.Equal(t, []string{m2}, e.pull("kim", "old"))
		e.ack("kim", "old", m2)
		require.EqualValues(t, 0, e.depth())
	})

	t.Run("unseen 29 days 23 h", func(t *testing.T) {
		e := tmStart(t)
		e.user("lea")
		require.Empty(t, e.pull("lea", "old"))
		e.fireTo(30*day - time.Hour)
		require.Empty(t, e.pull("lea", "new"))
		m := e.send(api.SendRequest{To: []string{"lea"}, Body: "x"})
		require.Equal(t, []string{m}, e.pull("lea", "new"))
		e.ack("lea", "new", m)
		require.EqualValues(t, 1, e.depth(), "still known: the message waits for it")
		require.Equal(t, []string{m}, e.pull("lea", "old"))
		e.ack("lea", "old", m)
		require.EqualValues(t, 0, e.depth())
	})

	// A device online the whole time was not "unseen": its session was up
	// until a minute ago. Its record's last_seen is only written when it
	// binds, so after a month online it counts as stale the moment it
	// goes offline, and a message its other device acknowledges is gone
	// for it.
	t.Run("online for 31 days, then offline a minute", func(t *testing.T) {
		e := tmStart(t)
		e.user("max")
		phone := e.connect("max", "phone")
		e.waitOnline("max", "phone", true)
		require.Empty(t, e.pull("max", "tablet"))
		e.fireTo(31 * day)
		require.Empty(t, e.pull("max", "tablet"))
		devs, err := e.app.ListDevices(e.ctx, "acme", "max")
		require.NoError(t, err)
		t.Logf("devices after 31 days with the phone online: %+v", devs)
		require.NoError(t, phone.c.Close())
		e.waitOnline("max", "phone", false)

		m := e.send(api.SendRequest{To: []string{"max"}, Body: "while the phone is offline for a minute"})
		require.Equal(t, []string{m}, e.pull("max", "tablet"))
		e.ack("max", "tablet", m)
		e.fire(time.Minute)
		back := e.connect("max", "phone")
		select {
		case got := <-back.got:
			require.Equal(t, m, got)
		case <-time.After(2 * time.Second):
			t.Fatalf("the phone, online until a minute before, never gets message %s: treated as unseen for 30 days (depth %d, last_seen %v)",
				m, e.depth(), devs)
		}
	})

	// A device still known when the message came, and acknowledged by the
	// user's other device, becomes stale later: every known device has
	// then acknowledged the message, which should leave the store.
	t.Run("turns stale while a message waits for it", func(t *testing.T) {
		e := tmStart(t)
		e.user("ned")
		require.Empty(t, e.pull("ned", "old"))
		e.fireTo(29 * day)
		require.Empty(t, e.pull("ned", "new"))
		m := e.send(api.SendRequest{To: []string{"ned"}, Body: "x"})
		require.Equal(t, []string{m}, e.pull("ned", "new"))
		e.ack("ned", "new", m)
		require.EqualValues(t, 1, e.depth())
		e.fireTo(31 * day)
		depth := e.depth()
		oldGets := e.pull("ned", "old")
		require.EqualValues(t, 0, depth, "30 days after the old device was last seen the message still waits for it in the store (it gets %v when it comes back)", oldGets)
	})
}

// --- wake retries ------------------------------------------------------------------

// tmWakeEnv is tmEnv with app acme's FCM and APNs pointed at loopback
// fakes.
type tmWakeEnv struct {
	*tmEnv
	fcm   *waketest.FCM
	apns  *waketest.APNs
	users map[string]string // by token
}

func tmStartWake(t *testing.T, wakeInterval int64, apnsWake string) *tmWakeEnv {
	fcm, apns := waketest.NewFCM(t), waketest.NewAPNs(t)
	fcm.Record(true)
	apns.Record(true)
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) {
		c.ProviderHTTPClient = func(p string) *http.Client {
			if p == "apns" {
				return apns.Client()
			}
			return nil
		}
	}))
	p := api.PatchAppRequest{
		FCM:  &api.FCMConfig{ServiceAccountJSON: fcm.ServiceAccountJSON, Endpoint: fcm.Endpoint()},
		APNS: &api.APNSConfig{KeyP8: apns.KeyP8, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: "com.acme.app", Endpoint: apns.URL, Wake: apnsWake},
	}
	if wakeInterval > 0 {
		p.Defaults = &api.Defaults{WakeInterval: tmInt(wakeInterval)}
	}
	_, err := e.app.PatchApp(e.ctx, "acme", p)
	require.NoError(t, err)
	return &tmWakeEnv{tmEnv: e, fcm: fcm, apns: apns, users: map[string]string{}}
}

// device creates user with a device "dev" registered with provider and
// token.
func (w *tmWakeEnv) device(user, provider, token string) {
	w.t.Helper()
	w.user(user)
	_, err := w.app.PutDevice(w.ctx, "acme", user, "dev", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: provider, Token: token}})
	require.NoError(w.t, err)
	w.users[token] = user
}

// count returns the pushes the fakes got for token.
func (w *tmWakeEnv) count(token string) int {
	return len(w.fcm.RequestsFor(token)) + len(w.apns.RequestsFor(token))
}

// settle waits until the gateway has taken in the provider's answer to
// every push the fakes got for token (its device.wake_sent event follows
// the waker's bookkeeping). A fake counts a push when the request arrives,
// before the waker times the next one from its answer: a clock moved in
// between shifts that schedule (the next wake timed from 59 s, not 0 s).
func (w *tmWakeEnv) settle(token string) {
	w.t.Helper()
	user := w.users[token]
	tmEventually(w.t, "the wake_sent events of "+user, func() bool {
		return wakeEdgeCount(w.events(), "device.wake_sent", user) == w.count(token)
	})
}

// tmWakeTick is a little more than the waker's retry tick (250 ms).
const tmWakeTick = 350 * time.Millisecond

// wakesAt walks the clock through the expected wake times (offsets from
// the start): one second before each, no new wake; at it, exactly one.
func (w *tmWakeEnv) wakesAt(token string, at ...time.Duration) {
	w.t.Helper()
	for _, d := range at {
		w.settle(token)
		n := w.count(token)
		w.g.Clock.Set(w.start.Add(d - time.Second))
		time.Sleep(tmWakeTick) // a retry tick: a wrong wake would show
		require.Equal(w.t, n, w.count(token), "a wake before %v", d)
		w.g.Clock.Set(w.start.Add(d))
		deadline := time.Now().Add(5 * time.Second)
		for w.count(token) == n {
			if time.Now().After(deadline) {
				w.t.Fatalf("no wake at %v (%d so far)", d, n)
			}
			time.Sleep(10 * time.Millisecond) // polling the fake
		}
		w.settle(token)
		time.Sleep(tmWakeTick) // a retry tick: a second wake would show
		require.Equal(w.t, n+1, w.count(token), "one wake at %v", d)
	}
}

// noWakes advances the clock to each offset and requires no new wake.
func (w *tmWakeEnv) noWakes(token, why string, at ...time.Duration) {
	w.t.Helper()
	w.settle(token)
	n := w.count(token)
	for _, d := range at {
		w.g.Clock.Set(w.start.Add(d))
		_, err := w.g.Queue().RunTimers(w.ctx)
		require.NoError(w.t, err)
		time.Sleep(tmWakeTick) // a retry tick: a wrong wake would show
		require.Equal(w.t, n, w.count(token), "%s: a wake at %v", why, d)
	}
}

// TestTmWakeIntervalDoublesTo30Min: with the default wake_interval (60 s)
// a device that stays offline is woken again after 60 s, 2, 4, 8, 16 min
// and then every 30 min, not beyond; once the message has expired no wake
// follows.
func TestTmWakeIntervalDoublesTo30Min(t *testing.T) {
	w := tmStartWake(t, 0, "")
	const tok = "fcm-tm-doubling"
	w.device("pia", "fcm", tok)
	id := w.send(api.SendRequest{To: []string{"pia"}, Body: "x", ExpiresIn: tmInt(6000)})
	tmEventually(t, "the first wake", func() bool { return w.count(tok) == 1 })
	s := time.Second
	w.wakesAt(tok, 60*s, 180*s, 420*s, 900*s, 1860*s, 3660*s, 5460*s)
	w.fireTo(6000 * s)
	require.Equal(t, "expired", w.status(id).Status)
	w.noWakes(tok, "the message expired", 7260*s, 9060*s, 3*time.Hour)
}

// TestTmWakeCapAcrossTheHour: with wake_interval 1 s an FCM device is
// woken 10 times in its first 511 s, then not again until the first wake
// is an hour old, and the next one after that follows the interval (the
// cap is a sliding hour, not a clock hour).
func TestTmWakeCapAcrossTheHour(t *testing.T) {
	w := tmStartWake(t, 1, "")
	const tok = "fcm-tm-cap"
	w.device("quy", "fcm", tok)
	w.send(api.SendRequest{To: []string{"quy"}, Body: "x", ExpiresIn: tmInt(86400)})
	tmEventually(t, "the first wake", func() bool { return w.count(tok) == 1 })
	s := time.Second
	w.wakesAt(tok, 1*s, 3*s, 7*s, 15*s, 31*s, 63*s, 127*s, 255*s, 511*s)
	w.noWakes(tok, "cap of 10 an hour", 1023*s, 2000*s, 3599*s)
	w.wakesAt(tok, 3600*s, 3600*s+1024*s)
	require.Equal(t, 12, w.count(tok))
}

// TestTmNoWakeAfterDelivery: a device that fetched and acknowledged its
// message (HTTP pull) is not woken again for it.
func TestTmNoWakeAfterDelivery(t *testing.T) {
	w := tmStartWake(t, 0, "")
	const tok = "fcm-tm-delivered"
	w.device("rex", "fcm", tok)
	id := w.send(api.SendRequest{To: []string{"rex"}, Body: "x"})
	tmEventually(t, "the first wake", func() bool { return w.count(tok) == 1 })
	w.fireTo(10 * time.Second)
	require.Equal(t, []string{id}, w.pull("rex", "dev"))
	w.ack("rex", "dev", id)
	require.Equal(t, "delivered", w.status(id).Status)
	s := time.Second
	w.noWakes(tok, "the message was delivered", 60*s, 180*s, 420*s, 2*time.Hour)
}

// TestTmWakeBackgroundCapSlides: in APNs background mode at most 3 wakes
// go out in any hour: with wake_interval 1 s the device is woken at 0, 1
// and 3 s, then at 3600 s (the first is an hour old), 3608 and 3624 s
// (the interval goes on doubling from 8 s; the wakes at 1 and 3 s have
// left the hour), then not until 7200 s.
func TestTmWakeBackgroundCapSlides(t *testing.T) {
	w := tmStartWake(t, 1, "background")
	tok := waketest.APNsToken(4242)
	w.device("ted", "apns", tok)
	w.send(api.SendRequest{To: []string{"ted"}, Body: "x", ExpiresIn: tmInt(3 * 86400)})
	tmEventually(t, "the first wake", func() bool { return w.count(tok) == 1 })
	require.Equal(t, "background", w.apns.RequestsFor(tok)[0].Header.Get("apns-push-type"))
	s := time.Second
	w.wakesAt(tok, 1*s, 3*s)
	w.noWakes(tok, "cap of 3 an hour in background mode", 7*s, 1800*s, 3599*s)
	w.wakesAt(tok, 3600*s, 3608*s, 3624*s)
	w.noWakes(tok, "cap of 3 an hour in background mode", 3656*s, 5000*s, 7199*s)
	w.wakesAt(tok, 7200*s)
	require.Equal(t, 7, w.count(tok))
}

func tmEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling an asynchronous outcome
	}
}

// --- webhook retries -----------------------------------------------------------------

// tmHook is a webhook receiver that can be down (503) and records the
// events it accepted and when each post came.
type tmHook struct {
	srv   *httptest.Server
	mu    sync.Mutex
	down  bool
	posts []time.Time
	tried [][]string // message ids of each post's events
	got   []api.Event
}

func tmNewHook(t *testing.T) *tmHook {
	h := &tmHook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch struct {
			Events []api.Event `json:"events"`
		}
		err := json.NewDecoder(r.Body).Decode(&batch)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.posts = append(h.posts, time.Now())
		var ids []string
		for _, e := range batch.Events {
			ids = append(ids, e.MessageID)
		}
		h.tried = append(h.tried, ids)
		if h.down || err != nil {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.got = append(h.got, batch.Events...)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *tmHook) setDown(v bool) {
	h.mu.Lock()
	h.down = v
	h.mu.Unlock()
}

func (h *tmHook) postCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.posts)
}

func (h *tmHook) waitPosts(t *testing.T, n int) {
	t.Helper()
	tmEventually(t, fmt.Sprintf("%d webhook posts", n), func() bool { return h.postCount() >= n })
}

// refused waits until the gateway has counted n refused posts: the
// worker reads the clock that times its 24 h before it counts one, so the
// test may move the clock once the count shows.
func (h *tmHook) refused(t *testing.T, e *tmEnv, n int) {
	t.Helper()
	h.waitPosts(t, n)
	tmEventually(t, fmt.Sprintf("%d refused posts counted", n), func() bool {
		return e.metric(`tether_webhook_deliveries_total{result="error"}`) == fmt.Sprint(n)
	})
}

// messageIDs returns the message ids of the events received, checking
// that event ids only go forward (repeats dropped).
func (h *tmHook) messageIDs(t *testing.T) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	last := ""
	for _, e := range h.got {
		if e.ID <= last {
			require.Equal(t, last, e.ID, "webhook events out of order")
			continue
		}
		last = e.ID
		out = append(out, e.MessageID)
	}
	return out
}

// cancelled enqueues and cancels a message: one message.cancelled event.
func (e *tmEnv) cancelled() string {
	e.t.Helper()
	id := e.send(api.SendRequest{To: []string{"zoe"}, Body: "x"})
	_, err := e.app.CancelMessage(e.ctx, "acme", id)
	require.NoError(e.t, err)
	return id
}

// kick changes the app's record: a webhook worker backing off retries at
// once (webhooks.sync).
func (e *tmEnv) kick(n int) {
	e.t.Helper()
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{ClientConfig: json.RawMessage(fmt.Sprintf(`{"kick":%d}`, n))})
	require.NoError(e.t, err)
}

func (e *tmEnv) metric(name string) string {
	e.t.Helper()
	resp, err := http.Get("http://" + e.g.Addr("metrics") + "/metrics")
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

// TestTmWebhookBackoffDoubles: failed posts are retried after the first
// delay, doubling each time (WebhookMinBackoff stands in for 1 s).
func TestTmWebhookBackoffDoubles(t *testing.T) {
	const first, posts = 150 * time.Millisecond, 6 // 4.65 s of retries
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.WebhookMinBackoff = first }))
	h := tmNewHook(t)
	h.setDown(true)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: h.srv.URL, Secret: "s"}})
	require.NoError(t, err)
	e.cancelled()
	h.waitPosts(t, posts)
	h.mu.Lock()
	at := append([]time.Time(nil), h.posts...)
	h.mu.Unlock()
	want := first
	for i := 1; i < posts; i++ {
		gap := at[i].Sub(at[i-1])
		require.GreaterOrEqual(t, gap, want*9/10, "retry %d after %v, want %v", i, gap, want)
		require.Less(t, gap, want*3/2+250*time.Millisecond, "retry %d after %v, want %v", i, gap, want)
		want *= 2
	}
}

// TestTmWebhookGivesUpAfter24h: a batch refused for 24 h is given up
// (counted as dropped); its events stay in the feed; the next events go
// out once the receiver is back, in order.
func TestTmWebhookGivesUpAfter24h(t *testing.T) {
	// Retries only when the test kicks the worker.
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.WebhookMinBackoff = time.Hour }))
	h := tmNewHook(t)
	h.setDown(true)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: h.srv.URL, Secret: "s"}})
	require.NoError(t, err)
	a := e.cancelled()
	h.refused(t, e, 1)
	e.fireTo(24*time.Hour - time.Second)
	e.kick(1)
	h.refused(t, e, 2)
	require.Empty(t, e.metric(`tether_webhook_deliveries_total{result="dropped"}`), "given up before 24 h")
	e.fireTo(24*time.Hour + time.Second)
	e.kick(2)
	h.refused(t, e, 3)
	tmEventually(t, "the batch counted as dropped", func() bool {
		return e.metric(`tether_webhook_deliveries_total{result="dropped"}`) == "1"
	})

	h.setDown(false)
	b := e.cancelled()
	tmEventually(t, "the next event delivered", func() bool { return len(h.messageIDs(t)) > 0 })
	require.Equal(t, []string{b}, h.messageIDs(t), "the given-up event is not posted again")
	var feed []string
	for _, x := range e.events() {
		feed = append(feed, x.MessageID)
	}
	require.Equal(t, []string{a, b}, feed, "the given-up event is still in the feed")
}

// TestTmWebhookGiveUpSparesYoungEvents: SPEC 7 retries events for 24 h.
// The worker's 24 h count from the first failure of a batch, and a batch
// refused for a day picks up the events that arrived since: when it is
// given up, an event that was first posted a minute earlier goes with it.
func TestTmWebhookGiveUpSparesYoungEvents(t *testing.T) {
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.WebhookMinBackoff = time.Hour }))
	h := tmNewHook(t)
	h.setDown(true)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: h.srv.URL, Secret: "s"}})
	require.NoError(t, err)
	old := e.cancelled()
	h.refused(t, e, 1)
	e.fireTo(24*time.Hour - time.Minute)
	young := e.cancelled()
	e.kick(1)
	h.refused(t, e, 2) // old and young, refused
	e.fireTo(24*time.Hour + time.Second)
	e.kick(2)
	h.waitPosts(t, 4) // refused again: old is given up after 24 h, young is tried again at once
	h.mu.Lock()
	require.Equal(t, [][]string{{old}, {old, young}, {old, young}}, h.tried[:3], "the refused posts")
	for _, x := range h.tried[3:] {
		require.Equal(t, []string{young}, x, "after the give-up, young alone")
	}
	h.mu.Unlock()
	h.setDown(false)
	e.kick(3)
	last := e.cancelled()
	tmEventually(t, "the last event delivered", func() bool {
		ids := h.messageIDs(t)
		return len(ids) > 0 && ids[len(ids)-1] == last
	})
	got := h.messageIDs(t)
	require.NotContains(t, got, old, "older than 24 h: given up")
	require.Contains(t, got, young, "an event refused for a minute was given up with the day-old one it shared a batch with (received %v)", got)
}

// --- session timers (wall clock, shortened through gateway.Config) --------------------

// TestTmResumeWindow: stream management resumption works within the
// window and fails after it (the 300 s are shortened to 3 s: resuming at
// 90 % and at 110 % of it). After the failure the messages in flight, and
// those enqueued meanwhile, come on a fresh session with the same ids; the
// device is reported offline when the window closes.
func TestTmResumeWindow(t *testing.T) {
	const window = 3 * time.Second
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.SessionResumeWindow = window }))
	e.user("sam")
	c := tmDialRaw(t, e.g.XMPPSAddr)
	c.login("sam")
	smID, max := c.session("phone")
	require.Equal(t, "3", max, "the advertised max is the window in seconds")
	c.Drop()
	dropped := time.Now()
	r := tmDialRaw(t, e.g.XMPPSAddr) // connected and logged in first: the resume alone is timed
	r.login("sam")
	time.Sleep(time.Until(dropped.Add(window * 9 / 10))) // the wall-clock resume window (90 %)
	n := r.resume(smID, 0)
	require.Equal(t, "resumed", n.XMLName.Local, "at 90 %% of the window: %s", n)

	m1 := e.send(api.SendRequest{To: []string{"sam"}, Body: "in flight"})
	require.Equal(t, m1, r.message())
	e.waitStatus(m1, "sent")
	r.Drop()
	m2 := e.send(api.SendRequest{To: []string{"sam"}, Body: "while away"})
	time.Sleep(window * 11 / 10) // the wall-clock resume window (110 %)
	e.waitOnline("sam", "phone", false)
	offlineEvents := func() (out []api.Event) {
		for _, x := range e.events() {
			if x.Type == "device.offline" && x.User == "sam" {
				out = append(out, x)
			}
		}
		return out
	}
	tmEventually(t, "sam's device.offline event", func() bool { return len(offlineEvents()) > 0 }) // appended after the unbind
	time.Sleep(tmWakeTick)                                                                         // a second one would show
	offline := offlineEvents()
	require.Len(t, offline, 1)
	require.Equal(t, "resume_expired", offline[0].Reason)

	f := tmDialRaw(t, e.g.XMPPSAddr)
	f.login("sam")
	n = f.resume(smID, 0)
	require.Equal(t, "failed", n.XMLName.Local, "at 110 %% of the window: %s", n)
	f.session("phone")
	require.Equal(t, []string{m1, m2}, f.messagesWithin(time.Second), "in flight and queued, on the fresh session")
}

// TestTmIdleClose: a session with no traffic is closed with
// <connection-timeout/> (15 min, shortened to 1 s); whitespace keeps it
// open; a message it had in flight comes again on the next session.
func TestTmIdleClose(t *testing.T) {
	// Two seconds: the talking device's whitespace every 300 ms has 1.7 s
	// of slack on a loaded machine.
	const idle = 2 * time.Second
	e := tmStart(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.SessionIdleTimeout = idle }))
	e.user("tia", "uma")

	quiet := tmDialRaw(t, e.g.XMPPSAddr)
	quiet.login("tia")
	quiet.session("phone")
	lastIn := time.Now() // the device's last traffic: its presence
	id := e.send(api.SendRequest{To: []string{"tia"}, Body: "x"})
	require.Equal(t, id, quiet.message())

	talk := tmDialRaw(t, e.g.XMPPSAddr)
	talk.login("uma")
	talk.session("phone")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				talk.Conn.SetWriteDeadline(time.Now().Add(time.Second))
				io.WriteString(talk.Conn, " ")
			}
		}
	}()

	for {
		n, err := quiet.NextWithin(4 * idle)
		require.NoError(t, err, "waiting for the idle close")
		if n.XMLName.Local == "error" {
			require.NotNil(t, n.Child("", "connection-timeout"), "%s", n)
			break
		}
	}
	require.GreaterOrEqual(t, time.Since(lastIn), idle*9/10, "closed before the idle timeout")
	require.Less(t, time.Since(lastIn), idle*3)

	time.Sleep(2 * idle) // twice the idle timeout, with whitespace coming
	close(stop)
	<-done
	talk.Send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
	require.Equal(t, "result", talk.Expect("iq").Attr("type"), "whitespace kept the session open")

	again := tmDialRaw(t, e.g.XMPPSAddr)
	again.login("tia")
	again.session("phone")
	require.Equal(t, id, again.message(), "the message in flight at the idle close comes on the next session")
}

// TestTmPreAuthTimeout: a connection must finish TLS and authentication
// within 10 s of connecting (the real limit, once): silence, an open
// stream, or whitespace trickled in meanwhile are all closed at 10 s; a
// device that authenticated in time is not. The connections run at once.
func TestTmPreAuthTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits the real 10 s")
	}
	e := tmStart(t)
	e.user("vic")
	type outcome struct {
		name        string
		elapsed     time.Duration
		timeout     bool // got <connection-timeout/>
		stillOpen   bool
		wantTimeout bool
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	start := time.Now()
	// waitClosed reads until the connection ends (no require: it runs on
	// its own goroutine).
	waitClosed := func(name string, c *tmRaw, wantTimeout bool) {
		wg.Go(func() {
			o := outcome{name: name, wantTimeout: wantTimeout}
			for {
				n, err := c.NextWithin(20 * time.Second)
				if err != nil {
					var ne net.Error
					o.stillOpen = errors.As(err, &ne) && ne.Timeout()
					break
				}
				if n.XMLName.Local == "error" && n.Child("", "connection-timeout") != nil {
					o.timeout = true
				}
			}
			o.elapsed = time.Since(start)
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		})
	}

	waitClosed("direct TLS port, no TLS handshake", &tmRaw{abDialTCP(t, e.g.XMPPSAddr, nil)}, false)

	st := &tmRaw{abDialTCP(t, e.g.XMPPAddr, nil)}
	st.Open()
	waitClosed("STARTTLS port, stream open, no STARTTLS", st, true)

	open := tmDialRaw(t, e.g.XMPPSAddr)
	open.Open()
	waitClosed("TLS, stream open, no auth", open, true)

	ws := tmDialRaw(t, e.g.XMPPSAddr)
	ws.Open()
	waitClosed("TLS, stream open, whitespace every second, no auth", ws, true)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			ws.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(ws.Conn, " "); err != nil {
				return
			}
		}
	}()

	late := tmDialRaw(t, e.g.XMPPSAddr)
	time.Sleep(time.Until(start.Add(8 * time.Second))) // the wall-clock auth limit: authenticate at 8 s
	late.login("vic")
	late.session("phone")
	time.Sleep(time.Until(start.Add(12 * time.Second))) // past the 10 s limit
	late.Send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
	require.Equal(t, "result", late.Expect("iq").Attr("type"), "closed after authenticating at 8 s")

	wg.Wait()
	close(stop)
	require.Len(t, outcomes, 4)
	for _, o := range outcomes {
		require.False(t, o.stillOpen, "%s: still open after 20 s", o.name)
		require.GreaterOrEqual(t, o.elapsed, 9500*time.Millisecond, "%s: closed after %v", o.name, o.elapsed)
		require.Less(t, o.elapsed, 13*time.Second, "%s: closed after %v", o.name, o.elapsed)
		if o.wantTimeout {
			require.True(t, o.timeout, "%s: no <connection-timeout/>", o.name)
		}
	}
}

// TestTmSessionTimerDefaults: the defaults are SPEC 6's (10 s, 15 min,
// 300 s), and a gateway with the default configuration advertises
// max='300' for resumption.
func TestTmSessionTimerDefaults(t *testing.T) {
	require.Equal(t, 10*time.Second, sdkproto.AuthTimeout)
	require.Equal(t, 15*time.Minute, sdkproto.IdleTimeout)
	require.Equal(t, 300*time.Second, sdkproto.ResumeWindow)
	e := tmStart(t)
	e.user("wes")
	c := tmDialRaw(t, e.g.XMPPSAddr)
	c.login("wes")
	_, max := c.session("phone")
	require.Equal(t, "300", max)
}

// tmKnownGap skips a test of a behaviour known not to hold yet (each is
// listed in the open issue), unless TETHER_KNOWN_GAPS=1 asks to see it fail.
func tmKnownGap(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("TETHER_KNOWN_GAPS") != "1" {
		t.Skip("known gap, not fixed yet: " + what)
	}
}

// TestTmExpiresInZeroFallbackNobodyOnline: expires_in 0 with an SMS
// fallback and no device online: the SMS goes out at the next timer tick,
// and a device that connects before that tick does not get the message
// (it was not online at the POST).
func TestTmExpiresInZeroFallbackNobodyOnline(t *testing.T) {
	sms := waketest.NewSMS(t)
	e := tmStart(t)
	_, err := e.app.PatchApp(e.ctx, "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"}})
	require.NoError(t, err)
	e.user("hal")
	id := e.send(api.SendRequest{To: []string{"hal"}, Body: "now or SMS", ExpiresIn: tmInt(0), SMSFallback: &api.SMSFallback{To: "+393330000002"}})
	late := e.connect("hal", "phone")
	select {
	case got := <-late.got:
		t.Fatalf("a device that connected after the POST got the expires_in 0 message %s", got)
	case <-time.After(500 * time.Millisecond):
	}
	require.Empty(t, e.pull("hal", "web"))
	e.fire(0)
	st := e.waitStatus(id, "fallback_sent")
	require.Equal(t, "sent", st.Fallback.Status)
	require.Len(t, sms.Requests(), 1)
}
