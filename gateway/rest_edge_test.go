package gateway_test

// Edge cases of the REST API and the message lifecycle
// (SPEC sections 3, 4, 7, 8), written as a backend developer would rely on
// them. Every test talks to a real gateway on loopback.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
	"tether/wake/waketest"
)

// edgeEvents reads the whole feed of app from the start, page by page.
func edgeEvents(t *testing.T, c *api.Client, app string) []api.Event {
	t.Helper()
	var out []api.Event
	after := ""
	for {
		ev, err := c.Events(ctxT(t), app, after, 1000, 0)
		require.NoError(t, err)
		for _, raw := range ev.Events {
			var e api.Event
			require.NoError(t, json.Unmarshal(raw, &e))
			out = append(out, e)
		}
		if len(ev.Events) == 0 {
			return out
		}
		after = ev.Next
	}
}

// edgeTypesFor lists the event types of message id, in feed order.
func edgeTypesFor(evs []api.Event, id string) []string {
	var out []string
	for _, e := range evs {
		if e.MessageID == id {
			out = append(out, e.Type)
		}
	}
	return out
}

// edgePull is a pull of device dev of user@app, decoded.
func edgePull(t *testing.T, g *gatewaytest.Gateway, user, app, pass, dev string) []api.PulledMessage {
	t.Helper()
	code, body := pull(t, "GET", g.URL+"/v1/device/messages", user+"@"+app, pass, dev, nil)
	require.Equal(t, 200, code, "%s", body)
	var pr api.PullResponse
	require.NoError(t, json.Unmarshal(body, &pr))
	return pr.Messages
}

func edgeAck(t *testing.T, g *gatewaytest.Gateway, user, app, pass, dev string, req api.AcksRequest) {
	t.Helper()
	code, body := pull(t, "POST", g.URL+"/v1/device/acks", user+"@"+app, pass, dev, req)
	require.Equal(t, 204, code, "%s", body)
}

func edgeIDs(ms []api.PulledMessage) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// TestRESTExpiresZeroOfflineWithSMSFallback: an OTP sent with
// expires_in 0 ("only if the user is online now") and an sms_fallback to a
// user with no live session. SPEC 4/8: fallback_sent when the fallback
// deadline (default: at expiry) passes with no delivery; expiry is now, so
// the SMS must go out. The gateway marks the message expired at once and
// leaves the fallback "pending" forever: no SMS is ever sent.
func TestRESTExpiresZeroOfflineWithSMSFallback(t *testing.T) {
	sms := waketest.NewSMS(t)
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"}})
	require.NoError(t, err)
	zero := int64(0)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"carol"}, Body: "code 1234", ExpiresIn: &zero,
		SMSFallback: &api.SMSFallback{To: "+393331234567"}}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	deadline := time.Now().Add(5 * time.Second)
	var st *api.MessageStatus
	for time.Now().Before(deadline) {
		st, err = app.GetMessage(ctx, "acme", id)
		require.NoError(t, err)
		if st.Status == "fallback_sent" || st.Status == "fallback_failed" {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling an asynchronous outcome
	}
	require.Equal(t, "fallback_sent", st.Status, "offline recipient of an expires_in 0 message with sms_fallback: the SMS is the only way to reach them (fallback %+v)", st.Fallback)
	require.Len(t, sms.Requests(), 1)
}

// TestRESTDeliveryAnyAndAll drives two HTTP-pull devices of one user:
// delivery any completes on the first ack and is withdrawn from the other
// device; delivery all waits for both; deleting the device that has not
// acknowledged completes the message.
func TestRESTDeliveryAnyAndAll(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "alice-password"})
	require.NoError(t, err)
	const pw = "alice-password"
	// Both devices become known.
	require.Empty(t, edgePull(t, g, "alice", "acme", pw, "web1"))
	require.Empty(t, edgePull(t, g, "alice", "acme", pw, "web2"))

	anyRes, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "any", Delivery: "any", Ref: "r-any"}, "")
	require.NoError(t, err)
	allRes, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "all", Ref: "r-all"}, "")
	require.NoError(t, err)
	anyID, allID := anyRes.Messages[0].ID, allRes.Messages[0].ID

	require.Equal(t, []string{anyID, allID}, edgeIDs(edgePull(t, g, "alice", "acme", pw, "web1")), "enqueue order")
	require.Equal(t, []string{anyID, allID}, edgeIDs(edgePull(t, g, "alice", "acme", pw, "web2")))
	edgeAck(t, g, "alice", "acme", pw, "web1", api.AcksRequest{Delivered: []string{anyID, allID}})

	st, err := app.GetMessage(ctx, "acme", anyID)
	require.NoError(t, err)
	require.Equal(t, "delivered", st.Status)
	require.NotNil(t, st.SentAt)
	require.NotNil(t, st.DeliveredAt)
	require.Equal(t, []string{allID}, edgeIDs(edgePull(t, g, "alice", "acme", pw, "web2")), "delivery any is withdrawn from the other device")

	st, err = app.GetMessage(ctx, "acme", allID)
	require.NoError(t, err)
	require.Equal(t, "delivered", st.Status)
	stats, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.QueueDepth, "delivery all waits for web2")
	_, err = app.CancelMessage(ctx, "acme", allID)
	apiErr(t, err, 409, api.CodeConflict, "")

	// Removing web2 completes the message that waited only for it.
	require.NoError(t, app.DeleteDevice(ctx, "acme", "alice", "web2"))
	stats, err = g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 0, stats.QueueDepth)

	evs := edgeEvents(t, app, "acme")
	for _, e := range evs {
		if e.MessageID == anyID {
			require.Equal(t, "r-any", e.Ref, "ref echoed in %s", e.Type)
		}
		if e.MessageID == allID {
			require.Equal(t, "r-all", e.Ref, "ref echoed in %s", e.Type)
			require.NotEmpty(t, e.Device, "per-device event %s names its device", e.Type)
		}
	}
}

// TestRESTReadImpliesDelivered: a read ack on a message never marked sent
// or delivered walks it through sent, delivered and read, with one event
// each, timestamps in order; repeats change nothing.
func TestRESTReadImpliesDelivered(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	const pw = "alice-password"
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: pw})
	require.NoError(t, err)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice/web1"}, Body: "hi", Ref: "x"}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID
	for range 2 {
		edgeAck(t, g, "alice", "acme", pw, "web1", api.AcksRequest{Read: []string{id, id}})
	}
	st, err := app.GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "read", st.Status)
	require.Equal(t, "alice/web1", st.To)
	require.NotNil(t, st.SentAt)
	require.NotNil(t, st.DeliveredAt)
	require.NotNil(t, st.ReadAt)
	require.False(t, st.DeliveredAt.Before(*st.SentAt))
	require.False(t, st.ReadAt.Before(*st.DeliveredAt))
	require.Len(t, st.Devices, 1)
	require.Equal(t, api.DeviceStatus{Device: "web1", Status: "read", At: st.Devices[0].At}, st.Devices[0])
	require.Equal(t, []string{"message.sent", "message.delivered", "message.read"}, edgeTypesFor(edgeEvents(t, app, "acme"), id))
	_, err = app.CancelMessage(ctx, "acme", id)
	apiErr(t, err, 409, api.CodeConflict, "id")
}

// TestRESTCancelAfterSent: a message returned by a pull (sent) but not
// acknowledged can be cancelled; it is not returned again and a late ack
// does not revive it.
func TestRESTCancelAfterSent(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	const pw = "alice-password"
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: pw})
	require.NoError(t, err)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice", "bob"}, Body: "oops"}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID
	require.Equal(t, []string{id}, edgeIDs(edgePull(t, g, "alice", "acme", pw, "web1")))
	st, err := app.CancelMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	require.Empty(t, edgePull(t, g, "alice", "acme", pw, "web1"))
	edgeAck(t, g, "alice", "acme", pw, "web1", api.AcksRequest{Delivered: []string{id}, Read: []string{id}})
	st, err = app.GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	require.Nil(t, st.DeliveredAt)
	require.Equal(t, []string{"message.sent", "message.cancelled"}, edgeTypesFor(edgeEvents(t, app, "acme"), id))
	// The other recipient of the fan-out is untouched.
	st, err = app.GetMessage(ctx, "acme", res.Messages[1].ID)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status)
}

// TestRESTCollapseScope: collapse keys are per user and per app; a
// delivered message is not collapsed; a fan-out collapses per recipient.
func TestRESTCollapseScope(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	acme := g.App(t, "acme")
	other := g.App(t, "other")
	const pw = "alice-password"
	_, err := acme.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: pw})
	require.NoError(t, err)

	first, err := acme.Send(ctx, "acme", api.SendRequest{To: []string{"alice", "bob"}, Body: "v1", CollapseKey: "score"}, "")
	require.NoError(t, err)
	otherApp, err := other.Send(ctx, "other", api.SendRequest{To: []string{"alice"}, Body: "v1", CollapseKey: "score"}, "")
	require.NoError(t, err)
	// alice gets and acknowledges v1 before v2 arrives.
	edgeAck(t, g, "alice", "acme", pw, "web1", api.AcksRequest{Delivered: []string{first.Messages[0].ID}})
	second, err := acme.Send(ctx, "acme", api.SendRequest{To: []string{"alice", "bob", "carol"}, Body: "v2", CollapseKey: "score"}, "")
	require.NoError(t, err)

	status := func(c *api.Client, app, id string) string {
		st, err := c.GetMessage(ctx, app, id)
		require.NoError(t, err)
		return st.Status
	}
	require.Equal(t, "delivered", status(acme, "acme", first.Messages[0].ID), "a delivered message is not collapsed")
	require.Equal(t, "collapsed", status(acme, "acme", first.Messages[1].ID))
	require.Equal(t, "enqueued", status(other, "other", otherApp.Messages[0].ID), "another app's collapse key is separate")
	for _, m := range second.Messages {
		require.Equal(t, "enqueued", status(acme, "acme", m.ID))
	}
	evs := edgeEvents(t, acme, "acme")
	require.Equal(t, []string{"message.collapsed"}, edgeTypesFor(evs, first.Messages[1].ID))
	for _, e := range evs {
		if e.Type == "message.collapsed" {
			require.Contains(t, e.Reason, second.Messages[1].ID)
		}
	}
	require.Empty(t, edgeEvents(t, other, "other"), "nothing of acme in other's feed")
}

// TestRESTIdempotencyEdges: a refused request does not burn its key;
// concurrent requests with one key and different bodies enqueue exactly
// once; the admin token and the app key share the app's keys.
func TestRESTIdempotencyEdges(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	url := g.URL + "/v1/apps/acme/messages"

	// A refused request (400) with a key, then a good one with the same key.
	code, _, b := rawDo(t, "POST", url, app.Token, []byte(`{"to":["alice"]}`), map[string]string{"Idempotency-Key": "k1"})
	require.Equal(t, 400, code, "%s", b)
	code, h, b := rawDo(t, "POST", url, app.Token, []byte(`{"to":["alice"],"body":"x"}`), map[string]string{"Idempotency-Key": "k1"})
	require.Equal(t, 202, code, "%s", b)
	require.Empty(t, h.Get("Idempotent-Replayed"))
	first := string(b)
	// The admin token reaches the same app's keys.
	code, h, b = rawDo(t, "POST", url, g.AdminToken, []byte(`{"to":["alice"],"body":"x"}`), map[string]string{"Idempotency-Key": "k1"})
	require.Equal(t, 202, code, "%s", b)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.JSONEq(t, first, string(b))

	// Concurrent, same key, different bodies: one 202, the rest 409.
	var wg sync.WaitGroup
	var ok, conflict atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"to":["u%d"],"body":"race"}`, i)
			code, _, b := rawDo(t, "POST", url, app.Token, []byte(body), map[string]string{"Idempotency-Key": "k2"})
			switch code {
			case 202:
				ok.Add(1)
			case 409:
				conflict.Add(1)
				require.Contains(t, string(b), `"field":"Idempotency-Key"`)
			default:
				t.Errorf("unexpected %d: %s", code, b)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, ok.Load())
	require.EqualValues(t, 7, conflict.Load())
	st, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.QueueDepth, "k1 once, k2 once")

	// An over-long key is refused before anything happens.
	code, _, b = rawDo(t, "POST", url, app.Token, []byte(`{"to":["alice"],"body":"x"}`), map[string]string{"Idempotency-Key": strings.Repeat("k", 256)})
	require.Equal(t, 400, code, "%s", b)
	require.Contains(t, string(b), `"field":"Idempotency-Key"`)
}

// TestRESTEventPagination: small pages walk the whole feed once, in order,
// each next the id of the page's last event; cursors of one app show
// nothing of another.
func TestRESTEventPagination(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	acme := g.App(t, "acme")
	other := g.App(t, "other")
	for i := range 23 {
		res, err := acme.Send(ctx, "acme", api.SendRequest{To: []string{fmt.Sprintf("u%d", i)}, Body: "x"}, "")
		require.NoError(t, err)
		_, err = acme.CancelMessage(ctx, "acme", res.Messages[0].ID)
		require.NoError(t, err)
	}
	res, err := other.Send(ctx, "other", api.SendRequest{To: []string{"z"}, Body: "x"}, "")
	require.NoError(t, err)
	_, err = other.CancelMessage(ctx, "other", res.Messages[0].ID)
	require.NoError(t, err)

	var ids []string
	after := ""
	pages := 0
	for {
		ev, err := acme.Events(ctx, "acme", after, 10, 0)
		require.NoError(t, err)
		if len(ev.Events) == 0 {
			require.Equal(t, after, ev.Next, "an empty page echoes the cursor")
			break
		}
		pages++
		require.LessOrEqual(t, len(ev.Events), 10)
		var last api.Event
		for _, raw := range ev.Events {
			require.NoError(t, json.Unmarshal(raw, &last))
			require.Equal(t, "acme", last.App)
			if len(ids) > 0 {
				require.Greater(t, last.ID, ids[len(ids)-1])
			}
			ids = append(ids, last.ID)
		}
		require.Equal(t, last.ID, ev.Next)
		after = ev.Next
	}
	require.Equal(t, 3, pages)
	require.Len(t, ids, 23)

	// other's cursor from the start, and acme's cursors, on other's feed.
	oev := edgeEvents(t, other, "other")
	require.Len(t, oev, 1)
	for _, cur := range []string{"0000000000000000", ids[0], ids[10]} {
		ev, err := other.Events(ctx, "other", cur, 1000, 0)
		require.NoError(t, err)
		for _, raw := range ev.Events {
			require.NotContains(t, string(raw), `"app":"acme"`)
		}
	}
	// Bad paging parameters are 400 with the field.
	for q, field := range map[string]string{"limit=0": "limit", "limit=abc": "limit", "wait=61": "wait", "wait=-1": "wait",
		"after=00000000000000AB": "after", "after=0": "after"} {
		code, _, b := rawDo(t, "GET", g.URL+"/v1/apps/acme/events?"+q, acme.Token, nil, nil)
		require.Equal(t, 400, code, "%s: %s", q, b)
		require.Contains(t, string(b), `"field":"`+field+`"`, q)
	}
}

// TestRESTEventFeedNoGapsUnderConcurrency: a consumer that follows
// the feed with long polls (as the webhook worker does) while events are
// written concurrently for different users must see every event. Event
// ids are taken from the global sequence while a change is built, but the
// change becomes visible only when its batch commits: a reader that reads
// between two commits landing out of id order moves its cursor past an
// event that appears later below it, and never sees it. The webhook worker
// follows the feed the same way, so those events are never posted.
func TestRESTEventFeedNoGapsUnderConcurrency(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(fastWebhooks))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	r := newReceiver(t, "whsec")
	_, err := app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: r.srv.URL + "/hook", Secret: "whsec"}})
	require.NoError(t, err)

	fw := followFeed(t, app, "acme")

	zero := int64(0)
	want := 0
	for round := range 4 {
		var wg sync.WaitGroup
		// Writers: fan-outs to offline users with expires_in 0 (one
		// "expired" event per recipient, each id taken while the fan-out
		// is assembled), and send+cancel loops on other users.
		for w := range 2 {
			wg.Go(func() {
				for i := range 8 {
					to := make([]string, 300)
					for j := range to {
						to[j] = fmt.Sprintf("f%d-%d-%d-%d", round, w, i, j)
					}
					if _, err := app.Send(ctx, "acme", api.SendRequest{To: to, Body: "x", ExpiresIn: &zero}, ""); err != nil {
						t.Errorf("fan-out: %v", err)
						return
					}
				}
			})
		}
		for w := range 4 {
			wg.Go(func() {
				for i := range 60 {
					res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{fmt.Sprintf("c%d-%d-%d", round, w, i)}, Body: "x"}, "")
					if err != nil {
						t.Errorf("send: %v", err)
						return
					}
					if _, err := app.CancelMessage(ctx, "acme", res.Messages[0].ID); err != nil {
						t.Errorf("cancel: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		want += 2*8*300 + 4*60
		all := edgeEvents(t, app, "acme")
		require.Len(t, all, want, "the feed itself holds every event")
		lastID := all[len(all)-1].ID

		// The follower reaches the end of the feed (it long-polls).
		fw.waitFor(t, lastID)
		// The webhook reaches it too.
		deadline := time.Now().Add(20 * time.Second)
		for {
			ev := r.uniqueInOrder()
			if len(ev) > 0 && ev[len(ev)-1].ID >= lastID {
				break
			}
			require.True(t, time.Now().Before(deadline), "the webhook did not reach the end of the feed")
			select {
			case <-r.got:
			case <-time.After(100 * time.Millisecond):
			}
		}
		missed := fw.missed(all)
		posted := len(r.uniqueInOrder())
		if len(missed) > 0 || posted != want {
			if len(missed) > 0 {
				t.Errorf("round %d: %d of %d events never seen by a feed follower (first %s, last %s)", round, len(missed), want, missed[0], missed[len(missed)-1])
			}
			if posted != want {
				t.Errorf("round %d: webhook posted %d of %d events; the rest are skipped for good", round, posted, want)
			}
			return
		}
	}
}

// TestRESTUserDeletion: deleting a user cancels what waits for it (reason
// "user deleted"), even a message already sent; a new user of that name
// does not inherit the old queue; its old status stays readable and final.
func TestRESTUserDeletion(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	const pw = "alice-password"
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: pw})
	require.NoError(t, err)
	r1, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "one"}, "")
	require.NoError(t, err)
	require.Len(t, edgePull(t, g, "alice", "acme", pw, "web1"), 1) // r1 is sent
	r2, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice/web1"}, Body: "two"}, "")
	require.NoError(t, err)

	require.NoError(t, app.DeleteUser(ctx, "acme", "alice"))
	_, err = app.GetUser(ctx, "acme", "alice")
	apiErr(t, err, 404, api.CodeNotFound, "user")
	_, err = app.ListDevices(ctx, "acme", "alice")
	apiErr(t, err, 404, api.CodeNotFound, "user")
	err = app.DeleteUser(ctx, "acme", "alice")
	apiErr(t, err, 404, api.CodeNotFound, "user")
	for _, id := range []string{r1.Messages[0].ID, r2.Messages[0].ID} {
		st, err := app.GetMessage(ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, "cancelled", st.Status, id)
		require.Equal(t, "user deleted", st.Reason)
		_, err = app.CancelMessage(ctx, "acme", id)
		apiErr(t, err, 409, api.CodeConflict, "")
	}
	// The old password is gone with the user.
	code, _ := pull(t, "GET", g.URL+"/v1/device/messages", "alice@acme", pw, "web1", nil)
	require.Equal(t, 401, code)

	_, err = app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "new-password"})
	require.NoError(t, err)
	devs, err := app.ListDevices(ctx, "acme", "alice")
	require.NoError(t, err)
	require.Empty(t, devs, "devices went with the user")
	require.Empty(t, edgePull(t, g, "alice", "acme", "new-password", "web1"), "the new alice gets nothing of the old queue")
	st, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 0, st.QueueDepth)
}

// TestRESTCrossAppAcksAndIds: the same user name in two apps; app B's
// device acknowledging app A's message ids changes nothing in A; B's key
// cannot read or cancel A's message through B's own path.
func TestRESTCrossAppAcksAndIds(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	a := g.App(t, "appa")
	b := g.App(t, "appb")
	const pw = "alice-password"
	for _, c := range []struct {
		cl  *api.Client
		app string
	}{{a, "appa"}, {b, "appb"}} {
		_, err := c.cl.PutUser(ctx, c.app, "alice", api.PutUserRequest{Password: pw})
		require.NoError(t, err)
	}
	res, err := a.Send(ctx, "appa", api.SendRequest{To: []string{"alice"}, Body: "for a"}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	require.Empty(t, edgePull(t, g, "alice", "appb", pw, "web1"), "b's alice sees nothing of a")
	edgeAck(t, g, "alice", "appb", pw, "web1", api.AcksRequest{Delivered: []string{id}, Read: []string{id}})
	st, err := a.GetMessage(ctx, "appa", id)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status, "another app's device acked a's message")
	_, err = b.GetMessage(ctx, "appb", id)
	apiErr(t, err, 404, api.CodeNotFound, "id")
	_, err = b.CancelMessage(ctx, "appb", id)
	apiErr(t, err, 404, api.CodeNotFound, "id")
	// The admin reaching app b does not see a's message there either.
	_, err = g.Admin().GetMessage(ctx, "appb", id)
	apiErr(t, err, 404, api.CodeNotFound, "id")
	// A device may not ack with a mangled id of a real message either.
	mangled := id[:len(id)-1] + string("0123456789abcdefghijklmnopqrstuv"[(strings.IndexByte("0123456789abcdefghijklmnopqrstuv", id[len(id)-1])+1)%32])
	edgeAck(t, g, "alice", "appa", pw, "web1", api.AcksRequest{Delivered: []string{mangled}})
	st, err = a.GetMessage(ctx, "appa", id)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status)
	_, err = a.GetMessage(ctx, "appa", mangled)
	apiErr(t, err, 404, api.CodeNotFound, "id")
	require.Empty(t, edgeEvents(t, b, "appb"))
}

// TestRESTBadInput: malformed requests get a clear 4xx in the error
// shape, never a 500 or a hang.
func TestRESTBadInput(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{})
	require.NoError(t, err)
	base := g.URL + "/v1/apps/acme"
	big := []byte(`{"password":"` + strings.Repeat("p", 1<<20) + `"}`)
	cases := []struct {
		name, method, path, token, body string
		hdr                             map[string]string
		status                          int
		code, field                     string
	}{
		{"expires_in overflow", "POST", "/messages", app.Token, `{"to":["a"],"body":"x","expires_in":99999999999999999999}`, nil, 400, "invalid_argument", "expires_in"},
		{"to is a string", "POST", "/messages", app.Token, `{"to":"alice","body":"x"}`, nil, 400, "invalid_argument", "to"},
		{"to null", "POST", "/messages", app.Token, `{"to":null,"body":"x"}`, nil, 400, "invalid_argument", "to"},
		{"data invalid", "POST", "/messages", app.Token, `{"to":["a"],"data":{"a":}}`, nil, 400, "invalid_argument", ""},
		{"sms after negative", "POST", "/messages", app.Token, `{"to":["a"],"body":"x","sms_fallback":{"to":"+393331234567","after":-5}}`, nil, 400, "invalid_argument", "sms_fallback.after"},
		{"sms without text or body", "POST", "/messages", app.Token, `{"to":["a"],"data":{"k":1},"sms_fallback":{"to":"+393331234567"}}`, nil, 400, "invalid_argument", "sms_fallback.text"},
		{"empty device", "POST", "/messages", app.Token, `{"to":["alice/"],"body":"x"}`, nil, 400, "invalid_argument", "to"},
		{"channel control char", "POST", "/messages", app.Token, `{"to":["a"],"body":"x","channel":"a\u0001"}`, nil, 400, "invalid_argument", "channel"},
		{"collapse key too long", "POST", "/messages", app.Token, `{"to":["a"],"body":"x","collapse_key":"` + strings.Repeat("k", 129) + `"}`, nil, 400, "invalid_argument", "collapse_key"},
		{"put user wrong type", "PUT", "/users/bob", app.Token, `{"password":123}`, nil, 400, "invalid_argument", "password"},
		{"put user unknown field", "PUT", "/users/bob", app.Token, `{"pass":"abcdefgh1"}`, nil, 400, "invalid_argument", "pass"},
		{"put user over 1 MiB", "PUT", "/users/bob", app.Token, string(big), nil, 413, "payload_too_large", ""},
		{"bad user id in path", "PUT", "/users/-x", app.Token, `{}`, nil, 400, "invalid_argument", "user"},
		{"put device unknown field", "PUT", "/users/alice/devices/d1", app.Token, `{"push":{"provider":"fcm","token":"t","badge":1}}`, nil, 400, "invalid_argument", "push.badge"},
		{"put device bad id", "PUT", "/users/alice/devices/d%201", app.Token, `{}`, nil, 400, "invalid_argument", "device"},
		{"put device token with space", "PUT", "/users/alice/devices/d1", app.Token, `{"push":{"provider":"fcm","token":"a b"}}`, nil, 400, "invalid_argument", "push.token"},
		{"patch unknown nested field", "PATCH", "", app.Token, `{"defaults":{"expires":5}}`, nil, 400, "invalid_argument", "defaults.expires"},
		{"patch wake interval zero", "PATCH", "", app.Token, `{"defaults":{"wake_interval":0}}`, nil, 400, "invalid_argument", "defaults.wake_interval"},
		{"patch fallback key", "PATCH", "", app.Token, `{"defaults":{"fallback_after":{"urgent":5}}}`, nil, 400, "invalid_argument", "defaults.fallback_after"},
		{"bearer without token", "GET", "", "", ``, map[string]string{"Authorization": "Bearer"}, 401, "unauthenticated", ""},
		{"basic auth on REST", "GET", "", "", ``, map[string]string{"Authorization": "Basic YTpi"}, 401, "unauthenticated", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := rawDo(t, tc.method, base+tc.path, tc.token, []byte(tc.body), tc.hdr)
			require.Equal(t, tc.status, code, "%s", body)
			require.Equal(t, "application/json", h.Get("Content-Type"))
			var eb api.ErrorBody
			require.NoError(t, json.Unmarshal(body, &eb), "%s", body)
			require.NotNil(t, eb.Error, "%s", body)
			require.Equal(t, tc.code, eb.Error.Code, "%s", body)
			if tc.field != "" {
				require.Equal(t, tc.field, eb.Error.Field, "%s", eb.Error.Message)
			}
			require.NotEmpty(t, eb.Error.Message)
		})
	}
	// Nothing of the refused sends was enqueued, no user bob was made.
	st, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 0, st.QueueDepth)
	_, err = app.GetUser(ctx, "acme", "bob")
	apiErr(t, err, 404, api.CodeNotFound, "user")
}

// TestRESTExpiresZeroOnline: expires_in 0 to a user with a live session
// is handed to it (not expired), and to a user/device whose device is not
// the one online it expires at once.
func TestRESTExpiresZeroOnline(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	const pw = "alice-password"
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: pw})
	require.NoError(t, err)
	got := make(chan string, 10)
	c, err := sdkproto.Dial(ctx, sdkproto.Config{
		Addr: g.XMPPSAddr, App: "acme", User: "alice", Password: pw, Device: "phone",
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		OnMessage: func(m *sdkproto.Message) { got <- m.ID },
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var devs []api.Device
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		devs, err = app.ListDevices(ctx, "acme", "alice")
		require.NoError(t, err)
		if len(devs) == 1 && devs[0].Online {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling session registration
	}
	require.Len(t, devs, 1)
	require.True(t, devs[0].Online)

	zero := int64(0)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice", "alice/tablet"}, Body: "now", ExpiresIn: &zero}, "")
	require.NoError(t, err)
	select {
	case id := <-got:
		require.Equal(t, res.Messages[0].ID, id)
	case <-time.After(10 * time.Second):
		t.Fatal("the online device did not get the expires_in 0 message")
	}
	st, err := app.GetMessage(ctx, "acme", res.Messages[1].ID)
	require.NoError(t, err)
	require.Equal(t, "expired", st.Status, "tablet is offline")
	require.Equal(t, "recipient offline", st.Reason)
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err = app.GetMessage(ctx, "acme", res.Messages[0].ID)
		require.NoError(t, err)
		if st.Status == "delivered" || st.Status == "read" {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the ack
	}
	require.Equal(t, "delivered", st.Status)
}

// TestRESTWebhookIsolationAndSecret: each app's webhook gets only its own
// events, signed with its own secret; removing the webhook stops posts and
// re-adding it delivers what happened meanwhile (the outbox is durable).
func TestRESTWebhookIsolationAndSecret(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(fastWebhooks))
	ctx := ctxT(t)
	a := g.App(t, "appa")
	b := g.App(t, "appb")
	ra, rb := newReceiver(t, "secret-a"), newReceiver(t, "secret-b")
	_, err := a.PatchApp(ctx, "appa", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: ra.srv.URL, Secret: "secret-a"}})
	require.NoError(t, err)
	_, err = b.PatchApp(ctx, "appb", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: rb.srv.URL, Secret: "secret-b"}})
	require.NoError(t, err)
	sendCancel := func(c *api.Client, app string) string {
		res, err := c.Send(ctx, app, api.SendRequest{To: []string{"u"}, Body: "x", Ref: app}, "")
		require.NoError(t, err)
		_, err = c.CancelMessage(ctx, app, res.Messages[0].ID)
		require.NoError(t, err)
		return res.Messages[0].ID
	}
	idA, idB := sendCancel(a, "appa"), sendCancel(b, "appb")
	evA, evB := ra.waitCount(1), rb.waitCount(1)
	require.Equal(t, idA, evA[0].MessageID)
	require.Equal(t, "appa", evA[0].App)
	require.Equal(t, idB, evB[0].MessageID)
	require.Equal(t, "appb", evB[0].App)

	// Removed: no posts; re-added: the backlog arrives, in order.
	code, _, body := rawDo(t, "PATCH", g.URL+"/v1/apps/appa", a.Token, []byte(`{"webhook":null}`), nil)
	require.Equal(t, 200, code, "%s", body)
	idA2 := sendCancel(a, "appa")
	_, err = a.PatchApp(ctx, "appa", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: ra.srv.URL, Secret: "secret-a"}})
	require.NoError(t, err)
	idA3 := sendCancel(a, "appa")
	evA = ra.waitCount(3)
	require.Equal(t, []string{idA, idA2, idA3}, []string{evA[0].MessageID, evA[1].MessageID, evA[2].MessageID})
	require.Len(t, rb.uniqueInOrder(), 1, "appb's receiver saw only appb")
	ra.mu.Lock()
	require.Zero(t, ra.bad)
	ra.mu.Unlock()
	rb.mu.Lock()
	require.Zero(t, rb.bad)
	rb.mu.Unlock()
}

// TestRESTDeleteAppThenRecreate: after an app is deleted and created
// again under the same id, nothing of the old one shows: its message ids
// answer 404, its idempotency keys are forgotten.
func TestRESTDeleteAppThenRecreate(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	url := g.URL + "/v1/apps/acme/messages"
	body := []byte(`{"to":["alice"],"body":"x"}`)
	code, _, b := rawDo(t, "POST", url, app.Token, body, map[string]string{"Idempotency-Key": "same"})
	require.Equal(t, 202, code, "%s", b)
	var first api.SendResponse
	require.NoError(t, json.Unmarshal(b, &first))
	require.NoError(t, g.Admin().DeleteApp(ctx, "acme"))
	fresh := g.App(t, "acme")
	_, err := fresh.GetMessage(ctx, "acme", first.Messages[0].ID)
	apiErr(t, err, 404, api.CodeNotFound, "id")
	code, h, b := rawDo(t, "POST", url, fresh.Token, body, map[string]string{"Idempotency-Key": "same"})
	require.Equal(t, 202, code, "%s", b)
	require.Empty(t, h.Get("Idempotent-Replayed"))
	require.NotContains(t, string(b), first.Messages[0].ID)
	// The admin on a deleted app's paths: 404.
	require.NoError(t, g.Admin().DeleteApp(ctx, "acme"))
	_, err = g.Admin().Send(ctx, "acme", api.SendRequest{To: []string{"a"}, Body: "x"}, "")
	apiErr(t, err, 404, api.CodeNotFound, "app")
	var ae *api.Error
	_, err = g.Admin().Events(ctx, "acme", "", 0, 0)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, http.StatusNotFound, ae.Status)
}

// TestRESTFinalMessageFallbackNotPending: a message with an
// sms_fallback that is cancelled (or collapsed) before its deadline will
// never send an SMS; its status must not keep reporting the fallback as
// "pending", which tells the backend an SMS may still go out.
func TestRESTFinalMessageFallbackNotPending(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "code 1", CollapseKey: "otp",
		SMSFallback: &api.SMSFallback{To: "+393331234567"}}, "")
	require.NoError(t, err)
	res2, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "code 2", CollapseKey: "otp",
		SMSFallback: &api.SMSFallback{To: "+393331234567"}}, "")
	require.NoError(t, err)
	_, err = app.CancelMessage(ctx, "acme", res2.Messages[0].ID)
	require.NoError(t, err)
	for _, id := range []string{res.Messages[0].ID, res2.Messages[0].ID} {
		st, err := app.GetMessage(ctx, "acme", id)
		require.NoError(t, err)
		require.Contains(t, []string{"collapsed", "cancelled"}, st.Status)
		require.NotNil(t, st.Fallback)
		require.NotEqual(t, "pending", st.Fallback.Status, "%s message %s still reports its SMS fallback pending", st.Status, id)
	}
}

// TestRESTBearerSchemeCaseInsensitive: RFC 9110 11.1: the auth
// scheme is case-insensitive; "bearer <key>" is what several HTTP client
// libraries send.
func TestRESTBearerSchemeCaseInsensitive(t *testing.T) {
	g := gatewaytest.Start(t)
	app := g.App(t, "acme")
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		code, _, body := rawDo(t, "GET", g.URL+"/v1/apps/acme", "", nil, map[string]string{"Authorization": scheme + " " + app.Token})
		require.Equal(t, 200, code, "scheme %q: %s", scheme, body)
	}
}

// TestRESTEventFeedNoGapsBulkAcks: the same gap with ordinary
// traffic: HTTP-pull devices of different users acknowledge their backlog
// (100 messages per ack, two events each) at the same time, while a
// reader follows the feed with long polls.
func TestRESTEventFeedNoGapsBulkAcks(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	const users, perUser = 8, 300
	const pw = "device-password"
	ids := make([][]string, users)
	for u := range users {
		name := fmt.Sprintf("b%d", u)
		_, err := app.PutUser(ctx, "acme", name, api.PutUserRequest{Password: pw})
		require.NoError(t, err)
		for range perUser / 100 {
			to := []string{name + "/web"}
			for range 100 {
				res, err := app.Send(ctx, "acme", api.SendRequest{To: to, Body: "x"}, "")
				require.NoError(t, err)
				ids[u] = append(ids[u], res.Messages[0].ID)
			}
		}
	}
	fw := followFeed(t, app, "acme")
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			for i := 0; i < perUser; i += 100 {
				code, body := pull(t, "POST", g.URL+"/v1/device/acks", fmt.Sprintf("b%d@acme", u), pw, "web", api.AcksRequest{Delivered: ids[u][i : i+100]})
				if code != 204 {
					t.Errorf("ack: %d %s", code, body)
					return
				}
			}
		})
	}
	wg.Wait()
	all := edgeEvents(t, app, "acme")
	require.Len(t, all, 2*users*perUser, "sent and delivered per message")
	fw.waitFor(t, all[len(all)-1].ID)
	require.Empty(t, fw.missed(all), "events never seen by a feed follower")
}

// feedFollower long-polls an app's event feed from the start, as a
// backend would, and records every event id it was given.
type feedFollower struct {
	mu     sync.Mutex
	seen   map[string]bool
	cursor string
}

// followFeed starts a follower; it stops with the test.
func followFeed(t *testing.T, app *api.Client, appID string) *feedFollower {
	fw := &feedFollower{seen: map[string]bool{}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		after := ""
		for {
			select {
			case <-stop:
				return
			default:
			}
			ev, err := app.Events(context.Background(), appID, after, 1000, 1)
			if err != nil {
				return
			}
			fw.mu.Lock()
			for _, raw := range ev.Events {
				var e api.Event
				if json.Unmarshal(raw, &e) == nil {
					fw.seen[e.ID] = true
				}
			}
			fw.cursor = ev.Next
			fw.mu.Unlock()
			after = ev.Next
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return fw
}

// waitFor waits until the follower's cursor reached event id last.
func (fw *feedFollower) waitFor(t *testing.T, last string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fw.mu.Lock()
		c := fw.cursor
		fw.mu.Unlock()
		if c >= last {
			return
		}
		require.True(t, time.Now().Before(deadline), "the follower did not reach the end of the feed")
		time.Sleep(10 * time.Millisecond) // polling the follower's progress
	}
}

// missed returns the ids of all that the follower was never given.
func (fw *feedFollower) missed(all []api.Event) []string {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var out []string
	for _, e := range all {
		if !fw.seen[e.ID] {
			out = append(out, e.ID)
		}
	}
	return out
}
