package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
	"tether/storage"
	"tether/wake/waketest"
)

type wakeFixture struct {
	g    *gatewaytest.Gateway
	app  *api.Client
	apns *waketest.APNs
	fcm  *waketest.FCM
	sms  *waketest.SMS
	ctx  context.Context
}

func startWake(t *testing.T) *wakeFixture { return startWakeWith(t, nil) }

// startWakeWith is startWake with cfg applied to the gateway's config.
func startWakeWith(t *testing.T, cfg func(*gateway.Config)) *wakeFixture {
	apns, fcm, sms := waketest.NewAPNs(t), waketest.NewFCM(t), waketest.NewSMS(t)
	apns.Record(true)
	fcm.Record(true)
	g := gatewaytest.Start(t, gatewaytest.WithConfig(func(c *gateway.Config) {
		c.ProviderHTTPClient = func(p string) *http.Client {
			if p == "apns" {
				return apns.Client()
			}
			return nil
		}
		if cfg != nil {
			cfg(c)
		}
	}))
	f := &wakeFixture{g: g, app: g.App(t, "acme"), apns: apns, fcm: fcm, sms: sms, ctx: ctxT(t)}
	one := int64(1)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{
		APNS:     &api.APNSConfig{KeyP8: apns.KeyP8, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: "com.acme.app", Endpoint: apns.URL},
		FCM:      &api.FCMConfig{ServiceAccountJSON: fcm.ServiceAccountJSON, Endpoint: fcm.Endpoint()},
		SMS:      &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"},
		Defaults: &api.Defaults{WakeInterval: &one},
	})
	require.NoError(t, err)
	return f
}

func (f *wakeFixture) device(t *testing.T, user, device, provider, token string) {
	_, err := f.app.PutUser(f.ctx, "acme", user, api.PutUserRequest{Password: "pw-" + user + "-123"})
	require.NoError(t, err)
	_, err = f.app.PutDevice(f.ctx, "acme", user, device, api.PutDeviceRequest{Push: &api.PushRegistration{Provider: provider, Token: token}})
	require.NoError(t, err)
}

func (f *wakeFixture) connect(t *testing.T, user, device string, got chan string) *sdkproto.Client {
	c, err := sdkproto.Dial(f.ctx, sdkproto.Config{
		Addr: f.g.XMPPSAddr, App: "acme", User: user, Password: "pw-" + user + "-123", Device: device,
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		OnMessage: func(m *sdkproto.Message) { got <- m.ID },
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *wakeFixture) eventTypes(t *testing.T) []api.Event {
	ev, err := f.app.Events(f.ctx, "acme", "", 1000, 0)
	require.NoError(t, err)
	var out []api.Event
	for _, raw := range ev.Events {
		var e api.Event
		require.NoError(t, json.Unmarshal(raw, &e))
		out = append(out, e)
	}
	return out
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // polling an asynchronous outcome
	}
}

// TestWakeOfflineDevicesOnly: an offline APNs device and an offline FCM
// device each get exactly one content-free wake within a second; an online
// device gets none; a woken device that connects gets its messages and no
// further wake.
func TestWakeOfflineDevicesOnly(t *testing.T) {
	f := startWake(t)
	ios, android, online := waketest.APNsToken(1), "fcm-token-android-1", waketest.APNsToken(3)
	f.device(t, "alice", "iphone", "apns", ios)
	f.device(t, "bob", "pixel", "fcm", android)
	f.device(t, "carol", "ipad", "apns", online)
	carolGot := make(chan string, 10)
	f.connect(t, "carol", "ipad", carolGot)

	posted := time.Now()
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice", "bob", "carol"}, Body: "secret body text", Data: []byte(`{"k":"secret data"}`), Priority: "high"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "APNs and FCM wakes", func() bool {
		return len(f.apns.RequestsFor(ios)) == 1 && len(f.fcm.RequestsFor(android)) == 1
	})
	if !raceEnabled { // the first wake builds the providers' clients, signs a JWT and an OAuth assertion, and dials both fakes
		require.Less(t, time.Since(posted), 2*time.Second)
	}
	a := f.apns.RequestsFor(ios)[0]
	require.NotContains(t, string(a.Body), "secret")
	require.Equal(t, "alert", a.Header.Get("apns-push-type"))
	require.Equal(t, "10", a.Header.Get("apns-priority"))
	require.Equal(t, "tether-wake", a.Header.Get("apns-collapse-id"))
	require.NotEmpty(t, a.Header.Get("apns-expiration"))
	require.Equal(t, "wake", a.Payload()["tether"])
	fr := f.fcm.RequestsFor(android)[0]
	require.NotContains(t, string(fr.Body), "secret")
	require.Contains(t, string(fr.Body), `"tether":"wake"`)
	require.Contains(t, string(fr.Body), `"priority":"high"`)
	require.Empty(t, f.apns.RequestsFor(online), "an online device is never pushed")
	require.Equal(t, res.Messages[2].ID, <-carolGot)

	// A second message while the wake is outstanding: no second push.
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "two"}, "")
	require.NoError(t, err)
	// Alice connects and pulls both; with a 1 s wake interval a retry would
	// come within 2 s if the connection did not count.
	got := make(chan string, 10)
	f.connect(t, "alice", "iphone", got)
	for range 2 {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("alice did not get her messages")
		}
	}
	time.Sleep(2500 * time.Millisecond) // long enough for a wrong retry to show
	require.Len(t, f.apns.RequestsFor(ios), 1, "no wake after the device connected")
	sent := map[string]int{}
	for _, e := range f.eventTypes(t) {
		if e.Type == "device.wake_sent" {
			sent[e.User]++
		}
	}
	require.Equal(t, 1, sent["alice"], "one device.wake_sent for alice")
	require.GreaterOrEqual(t, sent["bob"], 1, "bob stays offline: woken again after the interval")
	require.Zero(t, sent["carol"])
}

// TestWakeAfterLostConnection: a device whose connection drops without a
// close keeps its session for resumption (300 s), but a message waiting
// for it gets it woken once it has not resumed within the grace; a device
// that resumes within the grace gets its message and no wake.
func TestWakeAfterLostConnection(t *testing.T) {
	const grace = 2 * time.Second // bob's resume (TLS, SASL, resume) must fit in it under -race
	f := startWakeWith(t, func(c *gateway.Config) { c.SessionLostWakeGrace = grace })
	gone, back := waketest.APNsToken(11), waketest.APNsToken(12)
	f.device(t, "alice", "iphone", "apns", gone)
	f.device(t, "bob", "iphone", "apns", back)
	aliceGot, bobGot := make(chan string, 10), make(chan string, 10)
	alice := f.connect(t, "alice", "iphone", aliceGot)
	bob := f.connect(t, "bob", "iphone", bobGot)
	alice.Drop()
	bob.Drop()
	devs, err := f.app.ListDevices(f.ctx, "acme", "alice")
	require.NoError(t, err)
	require.True(t, devs[0].Online, "the session waits for resumption")

	posted := time.Now()
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"alice", "bob"}, Body: "while away"}, "")
	require.NoError(t, err)
	resumed := make(chan error, 1)
	go func() { _, err := bob.Resume(f.ctx); resumed <- err }()
	time.Sleep(time.Until(posted.Add(grace / 2)))
	require.Empty(t, f.apns.RequestsFor(gone), "no wake within the grace")
	require.NoError(t, <-resumed)
	select {
	case <-bobGot:
	case <-time.After(10 * time.Second):
		t.Fatal("bob's message did not come on the resumed stream")
	}
	eventually(t, 5*time.Second, "a wake for the device that did not come back", func() bool {
		return len(f.apns.RequestsFor(gone)) == 1
	})
	require.GreaterOrEqual(t, time.Since(posted), grace)
	require.Equal(t, "wake", f.apns.RequestsFor(gone)[0].Payload()["tether"])
	time.Sleep(grace) // bob's would have been due with alice's
	require.Empty(t, f.apns.RequestsFor(back), "the device that resumed is not woken")
	select {
	case id := <-aliceGot:
		t.Fatalf("alice's dropped client got %s", id)
	default:
	}
}

// TestWakeRecipientForms: a device named as a recipient is woken, its
// user's other devices are not; a user is woken on every device with a
// registration; a user named both ways gets one push per device; an
// unknown device is skipped.
func TestWakeRecipientForms(t *testing.T) {
	f := startWake(t)
	phone, tablet, pixel := waketest.APNsToken(21), waketest.APNsToken(22), "fcm-token-forms"
	f.device(t, "hana", "phone", "apns", phone)
	f.device(t, "hana", "tablet", "apns", tablet)
	f.device(t, "ivan", "pixel", "fcm", pixel)
	_, err := f.app.PutDevice(f.ctx, "acme", "ivan", "web", api.PutDeviceRequest{}) // no registration
	require.NoError(t, err)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"hana/phone", "hana/nosuch", "ivan", "ivan/pixel"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "wakes for hana/phone and ivan/pixel", func() bool {
		return len(f.apns.RequestsFor(phone)) == 1 && len(f.fcm.RequestsFor(pixel)) == 1
	})
	time.Sleep(200 * time.Millisecond) // a wrong push would show by now
	require.Empty(t, f.apns.RequestsFor(tablet), "a device not named is not woken")
	require.Len(t, f.apns.RequestsFor(phone), 1)
	require.Len(t, f.fcm.RequestsFor(pixel), 1, "one outstanding wake per device")
}

// TestWakeInvalidToken: 410 Unregistered / UNREGISTERED remove the
// registration, emit device.token_invalid, and the token is never pushed
// again.
func TestWakeInvalidToken(t *testing.T) {
	f := startWake(t)
	tok := waketest.APNsToken(7)
	f.apns.Script(tok, waketest.APNsUnregistered(time.Now()))
	f.device(t, "dave", "iphone", "apns", tok)
	f.fcm.Script("fcm-dead", waketest.FCMUnregistered())
	f.device(t, "erin", "pixel", "fcm", "fcm-dead")
	_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"dave", "erin"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "token_invalid events", func() bool {
		n := 0
		for _, e := range f.eventTypes(t) {
			if e.Type == "device.token_invalid" {
				n++
			}
		}
		return n == 2
	})
	for _, u := range []string{"dave", "erin"} {
		devs, err := f.app.ListDevices(f.ctx, "acme", u)
		require.NoError(t, err)
		require.Nil(t, devs[0].Push, "registration removed")
	}
	// Registering the same token again is refused, and nothing is pushed.
	_, err = f.app.PutDevice(f.ctx, "acme", "dave", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: tok}})
	var ae *api.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, api.CodeInvalidArgument, ae.Code)
	_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"dave"}, Body: "y"}, "")
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond) // a wrong push would show by now
	require.Len(t, f.apns.RequestsFor(tok), 1)
	require.Len(t, f.fcm.RequestsFor("fcm-dead"), 1)
}

// TestWakeProviderStorm: 503 and 429 answers are retried with backoff, not
// in a storm, and the wake goes through once the provider recovers.
func TestWakeProviderStorm(t *testing.T) {
	f := startWake(t)
	tok := waketest.APNsToken(9)
	f.apns.Script(tok, waketest.APNsServiceUnavailable(), waketest.APNsTooManyRequests(), waketest.APNsServiceUnavailable())
	f.device(t, "frank", "iphone", "apns", tok)
	f.fcm.Script("fcm-busy", waketest.FCMUnavailable("1"), waketest.FCMQuotaExceeded("1"))
	f.device(t, "gina", "pixel", "fcm", "fcm-busy")
	_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"frank", "gina"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 20*time.Second, "wakes accepted after the storm", func() bool {
		return f.apns.Accepted() >= 1 && f.fcm.Accepted() >= 1
	})
	// Up to the first success: the scripted refusals, each retried after
	// a backoff, never in a burst.
	check := func(name string, at []time.Time, status []int, refusals int) {
		first := slices.Index(status, 200)
		require.Equal(t, refusals, first, "%s: refusals before the first success: %v", name, status)
		for i := 1; i <= first; i++ {
			require.GreaterOrEqual(t, at[i].Sub(at[i-1]), 900*time.Millisecond, "%s: backoff between retries", name)
		}
		if first >= 3 {
			require.Greater(t, at[3].Sub(at[2]), at[2].Sub(at[1])+500*time.Millisecond, "%s: the backoff grows", name)
		}
	}
	var at []time.Time
	var status []int
	for _, r := range f.apns.RequestsFor(tok) {
		at, status = append(at, r.At), append(status, r.Status)
	}
	check("apns", at, status, 3)
	at, status = nil, nil
	for _, r := range f.fcm.RequestsFor("fcm-busy") {
		at, status = append(at, r.At), append(status, r.Status)
	}
	check("fcm", at, status, 2)
}

// TestSMSFallback: the fallback fires once, the device never sees the
// withdrawn message, statuses and events are right.
func TestSMSFallback(t *testing.T) {
	f := startWake(t)
	f.device(t, "hank", "phone", "fcm", "fcm-hank")
	one := int64(1)
	res, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"hank"}, Body: "Your code is 4711",
		SMSFallback: &api.SMSFallback{To: "+393331234567", After: &one}}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID
	eventually(t, 10*time.Second, "fallback_sent", func() bool {
		st, err := f.app.GetMessage(f.ctx, "acme", id)
		return err == nil && st.Status == "fallback_sent"
	})
	reqs := f.sms.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "+393331234567", reqs[0].To)
	require.Equal(t, "Your code is 4711", reqs[0].Text)
	require.Equal(t, id, reqs[0].MessageID)
	st, err := f.app.GetMessage(f.ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "sent", st.Fallback.Status)
	require.Equal(t, "http", st.Fallback.Provider)

	got := make(chan string, 10)
	f.connect(t, "hank", "phone", got)
	later, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"hank"}, Body: "after"}, "")
	require.NoError(t, err)
	select {
	case m := <-got:
		require.Equal(t, later.Messages[0].ID, m, "the withdrawn message never reaches the device")
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	require.Len(t, f.sms.Requests(), 1, "one SMS")
	n := 0
	for _, e := range f.eventTypes(t) {
		if e.MessageID == id && strings.HasPrefix(e.Type, "message.fallback") {
			require.Equal(t, "message.fallback_sent", e.Type)
			n++
		}
	}
	require.Equal(t, 1, n)
}

// capFixture is a gateway on a manual clock whose wakes go to the APNs
// fake, restartable on the same data dir.
type capFixture struct {
	t     *testing.T
	apns  *waketest.APNs
	g     *gatewaytest.Gateway
	app   *api.Client
	key   string
	ctx   context.Context
	start time.Time
}

func (f *capFixture) run(opts ...gatewaytest.Option) {
	apns := f.apns
	opts = append(opts, gatewaytest.WithConfig(func(c *gateway.Config) {
		c.ProviderHTTPClient = func(p string) *http.Client {
			if p == "apns" {
				return apns.Client()
			}
			return nil
		}
	}))
	f.g = gatewaytest.Start(f.t, opts...)
	if f.key == "" {
		a, err := f.g.Admin().CreateApp(f.ctx, api.CreateAppRequest{ID: "acme"})
		require.NoError(f.t, err)
		f.key = a.APIKey
	}
	f.app = api.NewClient(f.g.URL, f.key)
}

// restart stops the gateway and starts it again on the same store, its
// clock going on from where it was.
func (f *capFixture) restart() {
	now, dir := f.g.Clock.Now(), f.g.DataDir
	f.g.Stop()
	f.run(gatewaytest.WithDataDir(dir), gatewaytest.WithManualClock(now))
}

func (f *capFixture) wakesSent() int {
	ev, err := f.app.Events(f.ctx, "acme", "", 1000, 0)
	require.NoError(f.t, err)
	n := 0
	for _, raw := range ev.Events {
		var e api.Event
		require.NoError(f.t, json.Unmarshal(raw, &e))
		if e.Type == "device.wake_sent" {
			n++
		}
	}
	return n
}

func startCap(t *testing.T) *capFixture {
	apns := waketest.NewAPNs(t)
	apns.Record(true)
	f := &capFixture{t: t, apns: apns, ctx: ctxT(t), start: time.Now().Truncate(time.Second)}
	f.run(gatewaytest.WithManualClock(f.start))
	one := int64(1)
	_, err := f.app.PatchApp(f.ctx, "acme", api.PatchAppRequest{
		APNS:     &api.APNSConfig{KeyP8: apns.KeyP8, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: "com.acme.app", Endpoint: apns.URL},
		Defaults: &api.Defaults{WakeInterval: &one},
	})
	require.NoError(t, err)
	return f
}

func (f *capFixture) device(user, device, token string) {
	_, err := f.app.PutUser(f.ctx, "acme", user, api.PutUserRequest{Password: "pw-" + user + "-123"})
	require.NoError(f.t, err)
	_, err = f.app.PutDevice(f.ctx, "acme", user, device, api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: token}})
	require.NoError(f.t, err)
}

// TestWakeCapSurvivesRestart: a device woken up to the hourly cap (10 in
// alert mode) gets no further wake after a restart within that hour, new
// messages notwithstanding; once the first wake is an hour old, one more
// goes out.
func TestWakeCapSurvivesRestart(t *testing.T) {
	f := startCap(t)
	tok := waketest.APNsToken(31)
	f.device("olga", "iphone", tok)
	_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"olga"}, Body: "x"}, "")
	require.NoError(t, err)
	// Retries while the message waits: the interval doubles from 1 s, so
	// the 10th wake is 511 s after the first.
	const capAlert = 10
	for i := 1; i <= capAlert; i++ {
		eventually(t, 5*time.Second, fmt.Sprintf("wake %d", i), func() bool { return len(f.apns.RequestsFor(tok)) >= i })
		eventually(t, 5*time.Second, "its device.wake_sent", func() bool { return f.wakesSent() >= i })
		if i < capAlert {
			f.g.Clock.Advance(time.Duration(1<<(i-1)) * time.Second)
		}
	}
	f.g.Clock.Advance(1024 * time.Second) // the next retry's interval
	time.Sleep(600 * time.Millisecond)    // a few retry ticks: a wrong wake would show
	require.Equal(t, capAlert, len(f.apns.RequestsFor(tok)), "the cap holds before the restart")

	f.restart()
	for range 2 {
		_, err = f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"olga"}, Body: "more"}, "")
		require.NoError(t, err)
	}
	// Up to just short of an hour after the first wake, in steps the
	// retry loop sees.
	for f.g.Clock.Now().Before(f.start.Add(time.Hour - 5*time.Minute)) {
		f.g.Clock.Advance(5 * time.Minute)
		time.Sleep(300 * time.Millisecond) // a retry tick
	}
	require.Equal(t, capAlert, len(f.apns.RequestsFor(tok)), "no wake beyond the cap after the restart")

	// The first wake leaves the hour: one more is allowed.
	f.g.Clock.Set(f.start.Add(time.Hour + 500*time.Millisecond))
	eventually(t, 5*time.Second, "a wake once the first is an hour old", func() bool { return len(f.apns.RequestsFor(tok)) == capAlert+1 })
	time.Sleep(600 * time.Millisecond) // the second wake is still in the hour
	require.Equal(t, capAlert+1, len(f.apns.RequestsFor(tok)))
}

// TestWakeTimesDeletedWithUser: a woken device's stored wake times are in
// the store after a stop, and gone once its user is deleted.
func TestWakeTimesDeletedWithUser(t *testing.T) {
	f := startCap(t)
	tok := waketest.APNsToken(32)
	f.device("pavel", "iphone", tok)
	f.device("pa", "iphone", waketest.APNsToken(33)) // a prefix of pavel: kept
	_, err := f.app.Send(f.ctx, "acme", api.SendRequest{To: []string{"pavel", "pa"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 5*time.Second, "the wakes' events", func() bool { return f.wakesSent() == 2 })

	stored := func(user string) []int64 {
		dir := f.g.DataDir
		f.g.Stop()
		db, err := storage.Open(filepath.Join(dir, "store"), storage.Options{})
		require.NoError(t, err)
		at, err := db.GetWakeTimes("acme", user, "iphone")
		require.NoError(t, err)
		require.NoError(t, db.Close())
		f.run(gatewaytest.WithDataDir(dir), gatewaytest.WithManualClock(f.start))
		return at
	}
	require.Equal(t, []int64{f.start.UnixMilli()}, stored("pavel"))
	require.NoError(t, f.app.DeleteUser(f.ctx, "acme", "pavel"))
	require.Empty(t, stored("pavel"), "deleted with the user")
	require.Equal(t, []int64{f.start.UnixMilli()}, stored("pa"))
}

// TestRestartWakeGrace: after a restart, a device whose session was up
// when the previous process ended reconnects by itself, so it is not woken
// within RestartWakeGrace; if it has not come back by then, it is. A
// device that had closed its session cleanly is woken at once.
func TestRestartWakeGrace(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	dir := t.TempDir()
	withGrace := func(c *gateway.Config) { c.DataDir, c.RestartWakeGrace = dir, grace }
	f := startWakeWith(t, withGrace)
	up, gone := waketest.APNsToken(101), waketest.APNsToken(102)
	f.device(t, "ivy", "phone", "apns", up)
	f.device(t, "jay", "phone", "apns", gone)
	f.connect(t, "ivy", "phone", make(chan string, 10))
	jay := f.connect(t, "jay", "phone", make(chan string, 10))
	require.NoError(t, jay.Close())
	eventually(t, 5*time.Second, "jay's device.offline", func() bool {
		return slices.ContainsFunc(f.eventTypes(t), func(e api.Event) bool { return e.Type == "device.offline" && e.User == "jay" })
	})
	f.g.Stop() // ivy is still connected: as after a crash, it will come back

	before := time.Now()
	g2 := gatewaytest.Start(t, gatewaytest.WithConfig(func(c *gateway.Config) {
		c.ProviderHTTPClient = func(p string) *http.Client {
			if p == "apns" {
				return f.apns.Client()
			}
			return nil
		}
		withGrace(c)
	}))
	_, err := g2.Admin().Send(f.ctx, "acme", api.SendRequest{To: []string{"ivy", "jay"}, Body: "x"}, "")
	require.NoError(t, err)
	eventually(t, 10*time.Second, "jay woken at once", func() bool { return len(f.apns.RequestsFor(gone)) > 0 })
	require.Empty(t, f.apns.RequestsFor(up), "ivy woken within the restart grace")
	eventually(t, grace+5*time.Second, "ivy woken after the grace", func() bool { return len(f.apns.RequestsFor(up)) > 0 })
	require.GreaterOrEqual(t, f.apns.RequestsFor(up)[0].At.Sub(before), grace, "ivy's wake came before the grace ended")
}
