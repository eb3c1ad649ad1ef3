package gateway_test

// Edge cases of waking and fallback. They reuse the
// fixtures of wake_test.go (startWake, startCap, eventually) and the fakes
// of wake/waketest.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
	"tether/wake/waketest"
)

// wakeEdgeEvents returns app's event feed (first 1000 events).
func wakeEdgeEvents(t *testing.T, ctx context.Context, c *api.Client, app string) []api.Event {
	t.Helper()
	ev, err := c.Events(ctx, app, "", 1000, 0)
	require.NoError(t, err)
	out := make([]api.Event, 0, len(ev.Events))
	for _, raw := range ev.Events {
		var e api.Event
		require.NoError(t, json.Unmarshal(raw, &e))
		out = append(out, e)
	}
	return out
}

// wakeEdgeCount counts the events of type typ (for user, when not empty).
func wakeEdgeCount(evs []api.Event, typ, user string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ && (user == "" || e.User == user) {
			n++
		}
	}
	return n
}

// wakeEdgeMetrics returns the gateway's /metrics text.
func wakeEdgeMetrics(t *testing.T, g *gatewaytest.Gateway) string {
	t.Helper()
	resp, err := http.Get("http://" + g.Addr("metrics") + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// wakeEdgeConnect opens an SDK session for app/user/device.
func wakeEdgeConnect(t *testing.T, ctx context.Context, addr, app, user, password, device string, got chan string) *sdkproto.Client {
	t.Helper()
	c, err := sdkproto.Dial(ctx, sdkproto.Config{
		Addr: addr, App: app, User: user, Password: password, Device: device,
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		OnMessage: func(m *sdkproto.Message) {
			select {
			case got <- m.ID:
			default:
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func wakeEdgeInt(v int64) *int64 { return &v }

// wakeEdgeStatus polls message id of app until its status is want.
func wakeEdgeStatus(t *testing.T, ctx context.Context, c *api.Client, app, id, want string, within time.Duration) *api.MessageStatus {
	t.Helper()
	var st *api.MessageStatus
	deadline := time.Now().Add(within)
	for {
		var err error
		st, err = c.GetMessage(ctx, app, id)
		require.NoError(t, err)
		if st.Status == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: status %q (reason %q, fallback %+v), want %q within %v", id, st.Status, st.Reason, st.Fallback, want, within)
		}
		time.Sleep(10 * time.Millisecond) // polling an asynchronous outcome
	}
}

// TestWakeAfterReconnectAndOfflineAgain: a woken device that connects
// has its wake answered (SPEC 5: "until the device connects (which cancels
// any pending wake)"). When it goes offline again and a new message comes,
// it must be woken again at once, not only after the wake interval (60 s
// by default, doubling up to 30 min).
func TestWakeAfterReconnectAndOfflineAgain(t *testing.T) {
	f := startWake(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)}})
	require.NoError(t, err)
	tok := waketest.APNsToken(501)
	f.device(t, "rita", "iphone", "apns", tok)

	first, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"rita"}, Body: "one"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "the first wake", func() bool { return len(f.apns.RequestsFor(tok)) == 1 })

	// The wake works: the device connects, gets and acknowledges its
	// message, and goes away cleanly.
	got := make(chan string, 10)
	c := f.connect(t, "rita", "iphone", got)
	select {
	case id := <-got:
		require.Equal(t, first.Messages[0].ID, id)
		require.NoError(t, c.Ack(id))
	case <-time.After(10 * time.Second):
		t.Fatal("rita did not get her message")
	}
	wakeEdgeStatus(t, f.ctx, f.app, "acme", first.Messages[0].ID, "delivered", 5*time.Second)
	require.NoError(t, c.Close())
	eventually(t, 5*time.Second, "rita's device.offline", func() bool {
		return wakeEdgeCount(f.eventTypes(t), "device.offline", "rita") == 1
	})

	// Offline again: a new message must wake it again promptly.
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"rita"}, Body: "two"}, "")
	require.NoError(t, err)
	deadline := time.Now().Add(5 * time.Second)
	for len(f.apns.RequestsFor(tok)) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the fake
	}
	require.Len(t, f.apns.RequestsFor(tok), 2,
		"a device that connected after its wake and went offline again is not woken for a new message (the old wake's interval still blocks it)")
}

// TestWakeInvalidTokenIsPerApp: a token one app's provider rejects
// (here APNs BadDeviceToken, which APNs also answers for a token sent to
// the wrong environment) must not stop another app from pushing or
// registering the same token: nothing crosses apps (SPEC 1).
func TestWakeInvalidTokenIsPerApp(t *testing.T) {
	f := startWake(t)
	tok := waketest.APNsToken(502)
	f.device(t, "alice", "iphone", "apns", tok) // acme registers it first

	beta := f.g.App(t, "beta")
	_, err := beta.PatchApp(f.ctx, "beta", api.PatchAppRequest{
		APNS: &api.APNSConfig{KeyP8: f.apns.KeyP8, KeyID: f.apns.KeyID, TeamID: f.apns.TeamID, Topic: "com.beta.app", Endpoint: f.apns.URL},
	})
	require.NoError(t, err)
	_, err = beta.PutUser(f.ctx, "beta", "mallory", api.PutUserRequest{Password: "pw-mallory-123"})
	require.NoError(t, err)
	_, err = beta.PutDevice(f.ctx, "beta", "mallory", "phone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: tok, Environment: "sandbox"}})
	require.NoError(t, err)

	// Beta's push of the token is refused.
	f.apns.Script(tok, waketest.APNsBadDeviceToken())
	_, err = beta.Send(f.ctx, "beta", api.SendRequest{To: []string{"mallory"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "beta's device.token_invalid", func() bool {
		return wakeEdgeCount(wakeEdgeEvents(t, f.ctx, beta, "beta"), "device.token_invalid", "mallory") == 1
	})

	// Acme's own registration of that token is untouched and must still
	// be pushed.
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.NotNil(t, devs[0].Push, "acme's registration is still listed")
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "y"}, "")
	require.NoError(t, err)
	acmePushes := func() int {
		n := 0
		for _, r := range f.apns.RequestsFor(tok) {
			if r.Header.Get("apns-topic") == "com.acme.app" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for acmePushes() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the fake
	}
	require.Equal(t, 1, acmePushes(), "another app's invalid-token verdict silences acme's device")

	_, err = f.app.PutDevice(f.ctx, "acme", "alice", "ipad", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: tok}})
	require.NoError(t, err, "acme may register a token only another app's provider rejected")
}

// TestWakeExpiresInZeroWithSMSFallback: a message with expires_in 0
// ("deliver only to a device online now") and an sms_fallback, to a user
// with no device online, is not delivered by its expiry: SPEC 4 says the
// fallback fires at expiry with no delivery. Either the combination is
// refused (400) or exactly one SMS goes out; silently expiring it loses
// the fallback.
func TestWakeExpiresInZeroWithSMSFallback(t *testing.T) {
	f := startWake(t)
	f.device(t, "otto", "pixel", "fcm", "fcm-otto")
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"otto"}, Body: "Code 1234", ExpiresIn: wakeEdgeInt(0),
		SMSFallback: &api.SMSFallback{To: "+393330000001"}}, "")
	var ae *api.Error
	if errors.As(err, &ae) && ae.Code == api.CodeInvalidArgument {
		return // refused up front: acceptable
	}
	require.NoError(t, err)
	id := res.Messages[0].ID
	deadline := time.Now().Add(5 * time.Second)
	var st *api.MessageStatus
	for time.Now().Before(deadline) {
		st, err = f.app.GetMessage(f.ctx, "acme", id)
		require.NoError(t, err)
		if len(f.sms.Requests()) > 0 && st.Status == "fallback_sent" {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	require.Len(t, f.sms.Requests(), 1, "no SMS for an expires_in 0 message to an offline user: status %q reason %q fallback %+v",
		st.Status, st.Reason, st.Fallback)
	require.Equal(t, "fallback_sent", st.Status)
}

// TestWakeTokenRejections: APNs 400 BadDeviceToken and FCM
// INVALID_ARGUMENT on message.token remove the registration, emit
// device.token_invalid (feed and webhook, with provider and reason), are
// counted in tether_wakes_total{result="token_invalid"}, and the device is
// not pushed again; an FCM INVALID_ARGUMENT about another field is not the
// token's fault: the registration stays.
func TestWakeTokenRejections(t *testing.T) {
	f := startWakeWith(t, fastWebhooks)
	rcv := newReceiver(t, "whsec-edge")
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: rcv.srv.URL, Secret: "whsec-edge"}})
	require.NoError(t, err)

	bad := waketest.APNsToken(503)
	f.apns.Script(bad, waketest.APNsBadDeviceToken())
	f.device(t, "ana", "iphone", "apns", bad)
	f.fcm.Script("fcm-invalid", waketest.FCMInvalidArgument())
	f.device(t, "ben", "pixel", "fcm", "fcm-invalid")
	ttlBad := waketest.FCMInvalidArgument()
	ttlBad.Field, ttlBad.Message = "message.android.ttl", "Invalid value at 'message.android.ttl'"
	f.fcm.Script("fcm-ttl", ttlBad)
	f.device(t, "cid", "pixel", "fcm", "fcm-ttl")

	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"ana", "ben", "cid"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "two token_invalid events", func() bool {
		return wakeEdgeCount(f.eventTypes(t), "device.token_invalid", "") == 2
	})
	eventually(t, 10*time.Second, "cid's push answered and counted", func() bool { // counted once the answer is taken in
		return strings.Contains(wakeEdgeMetrics(t, f.g), `tether_wakes_total{provider="fcm",result="failed"} 1`)
	})
	evs := f.eventTypes(t)
	for _, e := range evs {
		if e.Type != "device.token_invalid" {
			continue
		}
		switch e.User {
		case "ana":
			require.Equal(t, "apns", e.Provider)
			require.Equal(t, "iphone", e.Device)
			require.Equal(t, "BadDeviceToken", e.Reason)
		case "ben":
			require.Equal(t, "fcm", e.Provider)
			require.Equal(t, "INVALID_ARGUMENT", e.Reason)
		default:
			t.Fatalf("token_invalid for %s: a field other than the token was rejected", e.User)
		}
	}
	for _, u := range []string{"ana", "ben"} {
		devs, err := f.app.ListDevices(f.ctx, "acme", u)
		require.NoError(t, err)
		require.Nil(t, devs[0].Push, "%s: registration removed", u)
	}
	devs, err := f.app.ListDevices(f.ctx, "acme", "cid")
	require.NoError(t, err)
	require.NotNil(t, devs[0].Push, "cid: a non-token INVALID_ARGUMENT keeps the registration")

	// The webhook gets both, signed.
	var hooked int
	eventually(t, 10*time.Second, "token_invalid events on the webhook", func() bool {
		hooked = wakeEdgeCount(rcv.uniqueInOrder(), "device.token_invalid", "")
		return hooked == 2
	})
	m := wakeEdgeMetrics(t, f.g)
	require.Contains(t, m, `tether_wakes_total{provider="apns",result="token_invalid"} 1`)
	require.Contains(t, m, `tether_wakes_total{provider="fcm",result="token_invalid"} 1`)
	require.Contains(t, m, `tether_wakes_total{provider="fcm",result="failed"} 1`)

	// Not pushed again, even for a new message.
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"ana", "ben", "cid"}, Body: "y"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "cid woken again (control)", func() bool { return len(f.fcm.RequestsFor("fcm-ttl")) >= 2 })
	require.Len(t, f.apns.RequestsFor(bad), 1)
	require.Len(t, f.fcm.RequestsFor("fcm-invalid"), 1)
}

// TestWakeCoalescesBurst: 40 messages posted at once to a user with
// an offline APNs device and an offline FCM device (half to the user, half
// to user/device) make one push per device, not a storm.
func TestWakeCoalescesBurst(t *testing.T) {
	f := startWake(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)}})
	require.NoError(t, err)
	ios := waketest.APNsToken(504)
	f.device(t, "dora", "iphone", "apns", ios)
	_, err = f.app.PutDevice(f.ctx, "acme", "dora", "pixel", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "fcm", Token: "fcm-dora"}})
	require.NoError(t, err)

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := "dora"
			if i%2 == 1 {
				to = "dora/iphone"
				if i%4 == 3 {
					to = "dora/pixel"
				}
			}
			_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{to}, Body: fmt.Sprint("m", i)}, "")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	eventually(t, 10*time.Second, "one wake per device", func() bool {
		return len(f.apns.RequestsFor(ios)) >= 1 && len(f.fcm.RequestsFor("fcm-dora")) >= 1
	})
	time.Sleep(1500 * time.Millisecond) // a storm would show by now
	require.Len(t, f.apns.RequestsFor(ios), 1, "APNs pushes for one offline device")
	require.Len(t, f.fcm.RequestsFor("fcm-dora"), 1, "FCM pushes for one offline device")
	eventually(t, 10*time.Second, "dora's two device.wake_sent events", func() bool {
		return wakeEdgeCount(f.eventTypes(t), "device.wake_sent", "dora") >= 2
	})
	require.Equal(t, 2, wakeEdgeCount(f.eventTypes(t), "device.wake_sent", "dora"))
}

// TestWakeRetryAfterAndServerErrors: an FCM 429 with Retry-After: 3
// is retried no sooner than 3 s later; FCM 500 INTERNAL and APNs 500 are
// retried; one device.wake_sent once it goes through, no token_invalid.
func TestWakeRetryAfterAndServerErrors(t *testing.T) {
	f := startWake(t)
	// A long wake interval: after the first success no retry comes in
	// this test's time, so the counts below are exact.
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)}})
	require.NoError(t, err)
	f.fcm.Script("fcm-slow", waketest.FCMQuotaExceeded("3"))
	f.device(t, "emil", "pixel", "fcm", "fcm-slow")
	f.fcm.Script("fcm-500", waketest.FCMReply{Status: 500, ErrorStatus: "INTERNAL", ErrorCode: "INTERNAL", Message: "Internal error"})
	f.device(t, "fay", "pixel", "fcm", "fcm-500")
	tok := waketest.APNsToken(505)
	f.apns.Script(tok, waketest.APNsReply{Status: 500, Reason: "InternalServerError"})
	f.device(t, "gus", "iphone", "apns", tok)

	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"emil", "fay", "gus"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 15*time.Second, "all three through", func() bool {
		ok := func(st []int) bool { return len(st) >= 2 && st[len(st)-1] == 200 }
		var a, b, c []int
		for _, r := range f.fcm.RequestsFor("fcm-slow") {
			a = append(a, r.Status)
		}
		for _, r := range f.fcm.RequestsFor("fcm-500") {
			b = append(b, r.Status)
		}
		for _, r := range f.apns.RequestsFor(tok) {
			c = append(c, r.Status)
		}
		return ok(a) && ok(b) && ok(c)
	})
	slow := f.fcm.RequestsFor("fcm-slow")
	require.Equal(t, 429, slow[0].Status)
	require.GreaterOrEqual(t, slow[1].At.Sub(slow[0].At), 2900*time.Millisecond, "Retry-After: 3 not respected")
	require.Len(t, f.fcm.RequestsFor("fcm-500"), 2, "one retry after a 500")
	require.Len(t, f.apns.RequestsFor(tok), 2)
	eventually(t, 5*time.Second, "three wake_sent", func() bool {
		return wakeEdgeCount(f.eventTypes(t), "device.wake_sent", "") == 3
	})
	require.Zero(t, wakeEdgeCount(f.eventTypes(t), "device.token_invalid", ""))
	for _, u := range []string{"emil", "fay", "gus"} {
		devs, err := f.app.ListDevices(f.ctx, "acme", u)
		require.NoError(t, err)
		require.NotNil(t, devs[0].Push, "%s keeps its registration after a transient error", u)
	}
	m := wakeEdgeMetrics(t, f.g)
	require.Contains(t, m, `tether_wakes_total{provider="fcm",result="retry"} 2`)
	require.Contains(t, m, `tether_wakes_total{provider="apns",result="retry"} 1`)
}

// TestWakeRegistrationChanges: replacing a device's token sends the
// next wake to the new token only; a PUT without push, a DELETE of the
// device, and an XMPP provider='none' each stop its wakes; another app's
// key cannot touch acme's device.
func TestWakeRegistrationChanges(t *testing.T) {
	f := startWake(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)}})
	require.NoError(t, err)
	oldTok, newTok := waketest.APNsToken(506), waketest.APNsToken(507)
	f.device(t, "hugo", "iphone", "apns", oldTok)
	_, err = f.app.PutDevice(f.ctx, "acme", "hugo", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: newTok}})
	require.NoError(t, err)
	f.device(t, "ines", "pixel", "fcm", "fcm-ines")
	_, err = f.app.PutDevice(f.ctx, "acme", "ines", "pixel", api.PutDeviceRequest{}) // registration removed
	require.NoError(t, err)
	f.device(t, "jon", "pixel", "fcm", "fcm-jon")
	require.NoError(t, f.app.DeleteDevice(f.ctx, "acme", "jon", "pixel"))
	f.device(t, "kai", "pixel", "fcm", "fcm-kai")
	kai := f.connect(t, "kai", "pixel", make(chan string, 10))
	require.NoError(t, kai.RegisterPush(f.ctx, "none", "", "", ""))
	require.NoError(t, kai.Close())

	beta := f.g.App(t, "beta")
	_, err = beta.PutDevice(f.ctx, "acme", "hugo", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: waketest.APNsToken(508)}})
	var ae *api.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, api.CodeNotFound, ae.Code)
	require.Error(t, beta.DeleteDevice(f.ctx, "acme", "hugo", "iphone"))

	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"hugo", "ines", "jon", "kai"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "the new token woken", func() bool { return len(f.apns.RequestsFor(newTok)) == 1 })
	time.Sleep(500 * time.Millisecond) // a wrong push would show by now
	require.Empty(t, f.apns.RequestsFor(oldTok), "the replaced token")
	require.Empty(t, f.apns.RequestsFor(waketest.APNsToken(508)), "beta's attempt")
	require.Empty(t, f.fcm.RequestsFor("fcm-ines"), "a removed registration")
	require.Empty(t, f.fcm.RequestsFor("fcm-jon"), "a deleted device")
	require.Empty(t, f.fcm.RequestsFor("fcm-kai"), "a registration removed over XMPP")
}

// TestWakeHeadersFollowMessage: a normal-priority message wakes with
// APNs priority 5 and FCM normal priority; apns-expiration is the
// message's expiry and the FCM TTL its remaining life; the payload carries
// only tether/pending; the app's alert_text is the placeholder.
func TestWakeHeadersFollowMessage(t *testing.T) {
	f := startWake(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{APNS: &api.APNSConfig{KeyID: f.apns.KeyID, TeamID: f.apns.TeamID,
		Topic: "com.acme.app", Endpoint: f.apns.URL, AlertText: "Acme has news"}})
	require.NoError(t, err)
	tok := waketest.APNsToken(509)
	f.device(t, "lou", "iphone", "apns", tok)
	_, err = f.app.PutDevice(f.ctx, "acme", "lou", "pixel", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "fcm", Token: "fcm-lou"}})
	require.NoError(t, err)
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"lou"}, Body: "secret", ExpiresIn: wakeEdgeInt(3600), Priority: "normal"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "both wakes", func() bool {
		return len(f.apns.RequestsFor(tok)) == 1 && len(f.fcm.RequestsFor("fcm-lou")) == 1
	})
	st, err := f.app.GetMessage(f.ctx, "acme", res.Messages[0].ID)
	require.NoError(t, err)
	a := f.apns.RequestsFor(tok)[0]
	require.Equal(t, "5", a.Header.Get("apns-priority"))
	require.Equal(t, "alert", a.Header.Get("apns-push-type"))
	exp, err := strconv.ParseInt(a.Header.Get("apns-expiration"), 10, 64)
	require.NoError(t, err)
	require.InDelta(t, st.ExpiresAt.Unix(), exp, 2, "apns-expiration is the message's expiry")
	aps, _ := a.Payload()["aps"].(map[string]any)
	require.Equal(t, "Acme has news", aps["alert"])
	require.EqualValues(t, 1, aps["mutable-content"])
	require.NotContains(t, string(a.Body), "secret")
	fr := f.fcm.RequestsFor("fcm-lou")[0]
	require.Equal(t, "normal", fr.Message.Android.Priority)
	require.Equal(t, "tether-wake", fr.Message.Android.CollapseKey)
	ttl, err := time.ParseDuration(fr.Message.Android.TTL)
	require.NoError(t, err)
	require.InDelta(t, 3600, ttl.Seconds(), 3, "FCM TTL is the remaining life")
	require.Equal(t, map[string]string{"tether": "wake", "pending": "1"}, fr.Message.Data)
	require.Empty(t, fr.Message.Notification, "data-only")
}

// TestWakeBackgroundCap: in APNs background mode the wake is a
// background push (content-available, priority 5 even for a high
// message) and at most 3 go out per device per hour however long
// messages wait; a fourth once the first is an hour old.
func TestWakeBackgroundCap(t *testing.T) {
	f := startCap(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{APNS: &api.APNSConfig{KeyID: f.apns.KeyID, TeamID: f.apns.TeamID,
		Topic: "com.acme.app", Endpoint: f.apns.URL, Wake: "background"}})
	require.NoError(t, err)
	tok := waketest.APNsToken(510)
	f.device("mia", "iphone", tok)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"mia"}, Body: "x", Priority: "high"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "the first wake", func() bool { return len(f.apns.RequestsFor(tok)) == 1 })
	r := f.apns.RequestsFor(tok)[0]
	require.Equal(t, "background", r.Header.Get("apns-push-type"))
	require.Equal(t, "5", r.Header.Get("apns-priority"))
	aps, _ := r.Payload()["aps"].(map[string]any)
	require.EqualValues(t, 1, aps["content-available"])
	require.Nil(t, aps["alert"])

	// Walk the clock through the hour in steps the retry loop sees; new
	// messages keep coming.
	for step := 0; f.g.Clock.Now().Add(2 * time.Minute).Before(f.start.Add(time.Hour)); step++ {
		f.g.Clock.Advance(2 * time.Minute)
		if step%5 == 0 {
			_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"mia"}, Body: "more"}, "")
			require.NoError(t, err)
		}
		time.Sleep(wakeTickWait) // one retry tick
		require.LessOrEqual(t, len(f.apns.RequestsFor(tok)), 3, "background cap exceeded at %v", f.g.Clock.Now().Sub(f.start))
	}
	require.Len(t, f.apns.RequestsFor(tok), 3)
	f.g.Clock.Set(f.start.Add(time.Hour + time.Second))
	eventually(t, 5*time.Second, "a wake once the first is an hour old", func() bool { return len(f.apns.RequestsFor(tok)) == 4 })
}

// wakeTickWait is a little more than the waker's retry tick (250 ms).
const wakeTickWait = 300 * time.Millisecond

// TestWakeDeliveryAnyStopsOtherDevice: a user with two offline
// devices gets a wake on each; once one device acknowledges a delivery
// "any" message, the other is not woken again for it.
func TestWakeDeliveryAnyStopsOtherDevice(t *testing.T) {
	f := startWake(t) // wake interval 1 s
	ios := waketest.APNsToken(511)
	f.device(t, "nia", "iphone", "apns", ios)
	_, err := f.app.PutDevice(f.ctx, "acme", "nia", "pixel", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "fcm", Token: "fcm-nia"}})
	require.NoError(t, err)
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"nia"}, Body: "x", Delivery: "any"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "both woken", func() bool {
		return len(f.apns.RequestsFor(ios)) == 1 && len(f.fcm.RequestsFor("fcm-nia")) == 1
	})
	got := make(chan string, 10)
	nia := f.connect(t, "nia", "iphone", got)
	select {
	case id := <-got:
		require.NoError(t, nia.Ack(id))
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	wakeEdgeStatus(t, f.ctx, f.app, "acme", res.Messages[0].ID, "delivered", 5*time.Second)
	n := len(f.fcm.RequestsFor("fcm-nia"))
	time.Sleep(3 * time.Second) // past two retry intervals (1 s, 2 s)
	require.Equal(t, n, len(f.fcm.RequestsFor("fcm-nia")), "the other device is woken for a message already delivered (any)")
}

// wakeEdgeSMSFixture is a gateway on a manual clock (queue timers run by
// the test) with an app acme whose SMS provider is a fake.
type wakeEdgeSMSFixture struct {
	g   *gatewaytest.Gateway
	app *api.Client
	sms *waketest.SMS
	ctx context.Context
}

func wakeEdgeStartSMS(t *testing.T) *wakeEdgeSMSFixture {
	sms := waketest.NewSMS(t)
	g := gatewaytest.Start(t, gatewaytest.WithManualClock(time.Now().Truncate(time.Second)))
	f := &wakeEdgeSMSFixture{g: g, app: g.App(t, "acme"), sms: sms, ctx: ctxT(t)}
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{
		SMS: &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"},
	})
	require.NoError(t, err)
	return f
}

// fire advances the clock by d and runs the due timers.
func (f *wakeEdgeSMSFixture) fire(t *testing.T, d time.Duration) {
	t.Helper()
	f.g.Clock.Advance(d)
	_, err := f.g.Queue().RunTimers(f.ctx)
	require.NoError(t, err)
}

func (f *wakeEdgeSMSFixture) user(t *testing.T, c *api.Client, app, user string) {
	t.Helper()
	_, err := c.PutUser(f.ctx, app, user, api.PutUserRequest{Password: "pw-" + user + "-123"})
	require.NoError(t, err)
}

// TestWakeSMSFallbackPaths: at its deadline an undelivered message
// gets exactly one SMS to its number, from the app's sender; one delivered
// in time, or cancelled first, gets none; with no after (or after past
// the expiry) the SMS goes at expiry and the message ends fallback_sent,
// not expired; a provider refusal ends fallback_failed with one attempt.
func TestWakeSMSFallbackPaths(t *testing.T) {
	f := wakeEdgeStartSMS(t)
	for _, u := range []string{"pia", "quin", "ray", "sam", "tom"} {
		f.user(t, f.app, "acme", u)
	}
	send := func(to string, fb *api.SMSFallback, expires int64) string {
		res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{to}, Body: "Code for " + to, ExpiresIn: wakeEdgeInt(expires), SMSFallback: fb}, "")
		require.NoError(t, err)
		return res.Messages[0].ID
	}
	// quin is online and acknowledges at once.
	got := make(chan string, 10)
	quin := wakeEdgeConnect(t, f.ctx, f.g.XMPPSAddr, "acme", "quin", "pw-quin-123", "phone", got)

	late := send("pia", &api.SMSFallback{To: "+391110000001", After: wakeEdgeInt(60)}, 3600)
	inTime := send("quin", &api.SMSFallback{To: "+391110000002", After: wakeEdgeInt(60)}, 3600)
	cancelled := send("ray", &api.SMSFallback{To: "+391110000003", After: wakeEdgeInt(60)}, 3600)
	atExpiry := send("sam", &api.SMSFallback{To: "+391110000004", Text: "expiry text", After: wakeEdgeInt(7200)}, 120)
	select {
	case id := <-got:
		require.NoError(t, quin.Ack(id))
	case <-time.After(10 * time.Second):
		t.Fatal("quin got nothing")
	}
	wakeEdgeStatus(t, f.ctx, f.app, "acme", inTime, "delivered", 5*time.Second)
	_, err := f.app.CancelMessage(f.ctx, "acme", cancelled)
	require.NoError(t, err)

	f.fire(t, 61*time.Second)
	st := wakeEdgeStatus(t, f.ctx, f.app, "acme", late, "fallback_sent", 5*time.Second)
	require.Equal(t, "sent", st.Fallback.Status)
	st, err = f.app.GetMessage(f.ctx, "acme", inTime)
	require.NoError(t, err)
	require.Equal(t, "delivered", st.Status)
	require.NotEqual(t, "sending", st.Fallback.Status)
	require.NotEqual(t, "sent", st.Fallback.Status)
	st, err = f.app.GetMessage(f.ctx, "acme", cancelled)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	st, err = f.app.GetMessage(f.ctx, "acme", atExpiry)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status, "after past the expiry means at expiry")

	f.fire(t, 60*time.Second) // sam's expiry
	st = wakeEdgeStatus(t, f.ctx, f.app, "acme", atExpiry, "fallback_sent", 5*time.Second)

	reqs := f.sms.Requests()
	require.Len(t, reqs, 2, "one SMS each for pia and sam")
	byID := map[string]waketest.SMSRequest{}
	for _, r := range reqs {
		byID[r.MessageID] = r
	}
	require.Equal(t, "+391110000001", byID[late].To)
	require.Equal(t, "Code for pia", byID[late].Text)
	require.Equal(t, "ACME", byID[late].From)
	require.Equal(t, "Bearer "+f.sms.APIKey, byID[late].Header.Get("Authorization"))
	require.Equal(t, "+391110000004", byID[atExpiry].To)
	require.Equal(t, "expiry text", byID[atExpiry].Text)

	// A refusal: fallback_failed, one attempt, its reason in the event.
	f.sms.Script(waketest.SMSReply{Status: 400, Body: `{"error":"number not reachable"}`})
	failed := send("tom", &api.SMSFallback{To: "+391110000005", After: wakeEdgeInt(10)}, 3600)
	f.fire(t, 11*time.Second)
	st = wakeEdgeStatus(t, f.ctx, f.app, "acme", failed, "fallback_failed", 5*time.Second)
	require.Equal(t, "failed", st.Fallback.Status)
	require.Contains(t, st.Fallback.Detail, "400")
	require.Equal(t, 1, st.Fallback.Attempts)
	f.fire(t, 10*time.Minute) // the hand-off's retry timer, were it left behind
	require.Len(t, f.sms.Requests(), 3)

	evs := wakeEdgeEvents(t, f.ctx, f.app, "acme")
	perMsg := map[string][]string{}
	for _, e := range evs {
		if strings.HasPrefix(e.Type, "message.fallback") || e.Type == "message.expired" || e.Type == "message.cancelled" {
			perMsg[e.MessageID] = append(perMsg[e.MessageID], e.Type)
		}
	}
	require.Equal(t, []string{"message.fallback_sent"}, perMsg[late])
	require.Equal(t, []string{"message.fallback_sent"}, perMsg[atExpiry])
	require.Equal(t, []string{"message.cancelled"}, perMsg[cancelled])
	require.Equal(t, []string{"message.fallback_failed"}, perMsg[failed])
	require.Empty(t, perMsg[inTime])
	for _, e := range evs {
		if e.MessageID == failed && e.Type == "message.fallback_failed" {
			require.NotEmpty(t, e.Reason)
			require.NotNil(t, e.Fallback)
		}
	}
}

// TestWakeProvidersStayInTheirApp: an app without APNs or SMS
// settings never borrows another app's: its device is not pushed through
// acme's APNs credentials and its fallback fails ("no SMS provider")
// rather than going out through acme's SMS account; an app with its own
// SMS provider uses its own key and sender.
func TestWakeProvidersStayInTheirApp(t *testing.T) {
	f := startWake(t)
	tok := waketest.APNsToken(512)
	f.device(t, "ulla", "iphone", "apns", tok)

	beta := f.g.App(t, "beta")
	_, err := beta.PutUser(f.ctx, "beta", "ulla", api.PutUserRequest{Password: "pw-ulla-123"})
	require.NoError(t, err)
	betaTok := waketest.APNsToken(513)
	_, err = beta.PutDevice(f.ctx, "beta", "ulla", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: betaTok}})
	require.NoError(t, err)
	one := int64(1)
	betaMsg, err := beta.Send(f.ctx, "beta", api.SendRequest{To: []string{"ulla"}, Body: "beta code",
		SMSFallback: &api.SMSFallback{To: "+392220000001", After: &one}}, "")
	require.NoError(t, err)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"ulla"}, Body: "acme"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "acme's wake (control)", func() bool { return len(f.apns.RequestsFor(tok)) == 1 })
	st := wakeEdgeStatus(t, f.ctx, beta, "beta", betaMsg.Messages[0].ID, "fallback_failed", 10*time.Second)
	require.Contains(t, st.Fallback.Detail, "no SMS provider")
	require.Empty(t, f.apns.RequestsFor(betaTok), "beta's device pushed with acme's credentials")
	require.Empty(t, f.sms.Requests(), "beta's SMS sent through acme's provider")

	// Beta gets its own SMS provider: its SMS go there, with its key.
	betaSMS := waketest.NewSMS(t)
	betaSMS.APIKey = "beta-sms-key"
	_, err = beta.PatchApp(f.ctx, "beta", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: betaSMS.URL + "/send", APIKey: "beta-sms-key", From: "BETA"}})
	require.NoError(t, err)
	betaMsg, err = beta.Send(f.ctx, "beta", api.SendRequest{To: []string{"ulla"}, Body: "beta code 2",
		SMSFallback: &api.SMSFallback{To: "+392220000002", After: &one}}, "")
	require.NoError(t, err)
	wakeEdgeStatus(t, f.ctx, beta, "beta", betaMsg.Messages[0].ID, "fallback_sent", 10*time.Second)
	require.Len(t, betaSMS.Requests(), 1)
	require.Equal(t, "BETA", betaSMS.Requests()[0].From)
	require.Empty(t, f.sms.Requests())
}

// TestWakeAppRecreatedStartsFresh: DELETE /v1/apps/{app} drops all
// its data (SPEC 3). An app created again under the same id, with a
// device of the same user and device ids, must be woken for its first
// message (not held back by the deleted app's wake interval), and may
// register a token the deleted app's provider had rejected.
func TestWakeAppRecreatedStartsFresh(t *testing.T) {
	f := startWake(t)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)}})
	require.NoError(t, err)
	tok, dead := waketest.APNsToken(520), waketest.APNsToken(521)
	f.device(t, "vera", "iphone", "apns", tok)
	f.apns.Script(dead, waketest.APNsUnregistered(time.Now()))
	f.device(t, "walt", "iphone", "apns", dead)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"vera", "walt"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "vera woken, walt's token rejected", func() bool {
		return len(f.apns.RequestsFor(tok)) == 1 && wakeEdgeCount(f.eventTypes(t), "device.token_invalid", "walt") == 1
	})

	admin := f.g.Admin()
	require.NoError(t, admin.DeleteApp(f.ctx, "acme"))
	a, err := admin.CreateApp(f.ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	f.app = api.NewClient(f.g.URL, a.APIKey)
	_, err = f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{
		APNS:     &api.APNSConfig{KeyP8: f.apns.KeyP8, KeyID: f.apns.KeyID, TeamID: f.apns.TeamID, Topic: "com.acme.app", Endpoint: f.apns.URL},
		Defaults: &api.Defaults{WakeInterval: wakeEdgeInt(60)},
	})
	require.NoError(t, err)
	f.device(t, "vera", "iphone", "apns", tok)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"vera"}, Body: "y"}, "")
	require.NoError(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for len(f.apns.RequestsFor(tok)) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling the fake
	}
	assertLen := len(f.apns.RequestsFor(tok))
	_, err = f.app.PutUser(f.ctx, "acme", "walt", api.PutUserRequest{Password: "pw-walt-123"})
	require.NoError(t, err)
	_, regErr := f.app.PutDevice(f.ctx, "acme", "walt", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: dead}})
	if assertLen != 2 {
		t.Errorf("the re-created app's device is not woken for its first message: %d pushes, want 2 (the deleted app's in-memory wake state holds it back)", assertLen)
	}
	if regErr != nil {
		t.Errorf("the re-created app cannot register a token the deleted app's provider rejected: %v", regErr)
	}
}

// TestWakeNotForLongPollingDevice: a device waiting in a long poll
// (GET /v1/device/messages?wait=) gets a new message through it, and no
// wake push: it is live, and stays so for the lost-wake grace after its
// poll returns (a pull client polls again at once). If it neither polls
// again nor acknowledges, it is woken once the grace has passed.
func TestWakeNotForLongPollingDevice(t *testing.T) {
	f := startWakeWith(t, func(c *gateway.Config) { c.SessionLostWakeGrace = 1500 * time.Millisecond })
	tok := waketest.APNsToken(505)
	f.device(t, "lena", "iphone", "apns", tok)
	got := make(chan []byte, 1)
	go func() {
		_, body := pull(t, "GET", f.g.URL+"/v1/device/messages?wait=10", "lena@acme", "pw-lena-123", "iphone", nil)
		got <- body
	}()
	eventually(t, 5*time.Second, "the device's long poll registered", func() bool {
		devs, err := f.app.ListDevices(f.ctx, "acme", "lena")
		return err == nil && len(devs) == 1 && devs[0].Transport == "http"
	})
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"lena"}, Body: "while polling"}, "")
	require.NoError(t, err)
	select {
	case body := <-got:
		require.Contains(t, string(body), res.Messages[0].ID)
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not return the message")
	}
	// The waker runs after the 202: give a wrong push the time to come.
	require.Never(t, func() bool { return len(f.apns.Requests()) > 0 }, time.Second, 10*time.Millisecond,
		"a wake push to a device waiting in a long poll")
	// No new poll, no ack: woken once the grace is over.
	eventually(t, 5*time.Second, "a wake once the device stopped polling", func() bool { return len(f.apns.Requests()) == 1 })
}

// TestWakeNewTokenAfterInvalid: a device's token is rejected
// (BadDeviceToken) while a message waits for it; the app registers the
// device's new token. The device is woken through the new token once the
// lost-wake grace has passed, without waiting for another message.
func TestWakeNewTokenAfterInvalid(t *testing.T) {
	f := startWakeWith(t, func(c *gateway.Config) { c.SessionLostWakeGrace = 500 * time.Millisecond })
	bad, good := waketest.APNsToken(506), waketest.APNsToken(507)
	f.apns.Script(bad, waketest.APNsBadDeviceToken())
	f.device(t, "nina", "iphone", "apns", bad)
	_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"nina"}, Body: "waiting"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "the registration removed", func() bool {
		devs, err := f.app.ListDevices(f.ctx, "acme", "nina")
		return err == nil && len(devs) == 1 && devs[0].Push == nil
	})
	_, err = f.app.PutDevice(f.ctx, "acme", "nina", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: good}})
	require.NoError(t, err)
	eventually(t, 5*time.Second, "a wake through the new token", func() bool {
		for _, r := range f.apns.Requests() {
			if r.Token == good {
				return true
			}
		}
		return false
	})
}

// TestWakeSMSProviderTryLater: an SMS provider that answers 503, then 429
// with a Retry-After, then takes the SMS: the gateway hands it the same
// SMS (same message_id) three times, at 15 s and then after the
// Retry-After; the backend sees "sending" with the attempts and the last
// answer meanwhile, then fallback_sent; tether_sms_total counts two
// retried and one sent.
func TestWakeSMSProviderTryLater(t *testing.T) {
	f := wakeEdgeStartSMS(t)
	f.user(t, f.app, "acme", "una")
	f.sms.Script(waketest.SMSReply{Status: 503, Body: "maintenance"},
		waketest.SMSReply{Status: 429, Body: "slow down", RetryAfter: "90"})
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"una"}, Body: "Code 4711",
		ExpiresIn: wakeEdgeInt(3600), SMSFallback: &api.SMSFallback{To: "+391110000009", After: wakeEdgeInt(30)}}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	f.fire(t, 31*time.Second)
	var st *api.MessageStatus
	require.Eventually(t, func() bool {
		st, err = f.app.GetMessage(f.ctx, "acme", id)
		return err == nil && st.Fallback != nil && st.Fallback.Attempts == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "sending", st.Fallback.Status)
	require.Equal(t, "HTTP 503: maintenance", st.Fallback.Detail)
	require.Equal(t, "enqueued", st.Status)

	f.fire(t, 15*time.Second)
	require.Eventually(t, func() bool {
		st, err = f.app.GetMessage(f.ctx, "acme", id)
		return err == nil && st.Fallback.Attempts == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "HTTP 429: slow down", st.Fallback.Detail)

	f.fire(t, 60*time.Second) // the 30 s backoff, but the provider asked for 90
	require.Len(t, f.sms.Requests(), 2)
	f.fire(t, 30*time.Second)
	st = wakeEdgeStatus(t, f.ctx, f.app, "acme", id, "fallback_sent", 5*time.Second)
	require.Equal(t, "sent", st.Fallback.Status)
	require.Equal(t, 3, st.Fallback.Attempts)

	reqs := f.sms.Requests()
	require.Len(t, reqs, 3)
	for _, r := range reqs {
		require.Equal(t, id, r.MessageID)
		require.Equal(t, "Code 4711", r.Text)
	}
	m := wakeEdgeMetrics(t, f.g)
	require.Contains(t, m, `tether_sms_total{provider="http",result="retried"} 2`)
	require.Contains(t, m, `tether_sms_total{provider="http",result="sent"} 1`)
}

// TestWakeSMSCancelBetweenRetries: the SMS provider answers 503; before
// the retry the backend cancels the message (DELETE answers 200 with
// status cancelled and fallback "cancelled"), and the provider hears
// nothing more.
func TestWakeSMSCancelBetweenRetries(t *testing.T) {
	f := wakeEdgeStartSMS(t)
	f.user(t, f.app, "acme", "vera")
	f.sms.Script(waketest.SMSReply{Status: 503, Body: "maintenance"})
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"vera"}, Body: "Code 4712",
		ExpiresIn: wakeEdgeInt(3600), SMSFallback: &api.SMSFallback{To: "+391110000010", After: wakeEdgeInt(30)}}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	f.fire(t, 31*time.Second)
	require.Eventually(t, func() bool {
		st, err := f.app.GetMessage(f.ctx, "acme", id)
		return err == nil && st.Fallback != nil && st.Fallback.Attempts == 1
	}, 5*time.Second, 10*time.Millisecond)

	st, err := f.app.CancelMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	require.Equal(t, "cancelled", st.Fallback.Status)
	require.Equal(t, 1, st.Fallback.Attempts)

	f.fire(t, 16*time.Second)
	f.fire(t, 10*time.Minute)
	st, err = f.app.GetMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	require.Len(t, f.sms.Requests(), 1, "no attempt after the cancel")
}
