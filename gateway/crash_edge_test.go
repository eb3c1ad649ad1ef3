package gateway_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/sdkproto"
	"tether/wake/waketest"
)

// Crash tests of durability paths beyond TestCrashKeepsAcceptedMessages:
// each kills a child gateway (startChild) with SIGKILL right after an
// answer and checks, after a restart on the same data dir, that the
// answer's promise held (SPEC sections 3, 4, 7, 8).

const crashAdmin = "crash-test-admin-token"

// crashGW is a running child with an app "acme" and its key.
type crashGW struct {
	c   *child
	key string
	app *api.Client
}

func crashStart(t *testing.T, dir, key string, env ...string) *crashGW {
	t.Helper()
	c := startChild(t, dir, env...)
	if key == "" {
		created, err := api.NewClient(c.url, crashAdmin).CreateApp(ctxT(t), api.CreateAppRequest{ID: "acme"})
		require.NoError(t, err)
		key = created.APIKey
	}
	app := api.NewClient(c.url, key)
	app.HTTP.Timeout = 10 * time.Second
	return &crashGW{c: c, key: key, app: app}
}

// crashKill kills the child with SIGKILL and waits until it is gone.
func crashKill(t *testing.T, g *crashGW) {
	t.Helper()
	require.NoError(t, g.c.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-g.c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the child did not die")
	}
}

// crashRestart starts a new child on dir with the same app key.
func crashRestart(t *testing.T, dir string, g *crashGW, env ...string) *crashGW {
	t.Helper()
	return crashStart(t, dir, g.key, env...)
}

func crashSend(t *testing.T, g *crashGW, req api.SendRequest) []string {
	t.Helper()
	res, err := g.app.Send(ctxT(t), "acme", req, "")
	require.NoError(t, err)
	ids := make([]string, len(res.Messages))
	for i, m := range res.Messages {
		ids[i] = m.ID
	}
	return ids
}

func crashStatus(t *testing.T, g *crashGW, id string) *api.MessageStatus {
	t.Helper()
	st, err := g.app.GetMessage(ctxT(t), "acme", id)
	require.NoError(t, err)
	return st
}

func crashUser(t *testing.T, g *crashGW, user string) {
	t.Helper()
	_, err := g.app.PutUser(ctxT(t), "acme", user, api.PutUserRequest{Password: "pw-" + user + "-123"})
	require.NoError(t, err)
}

// crashDevice does the device HTTP API (pull and acks) as user's device.
func crashDevice(t *testing.T, g *crashGW, method, path, user, device string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		require.NoError(t, err)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, g.c.url+path, body)
	require.NoError(t, err)
	req.SetBasicAuth(user+"@acme", "pw-"+user+"-123")
	req.Header.Set("Tether-Device", device)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

// crashPull returns the ids the device's pull gets now (marking them sent).
func crashPull(t *testing.T, g *crashGW, user, device string) []string {
	t.Helper()
	var res api.PullResponse
	require.Equal(t, http.StatusOK, crashDevice(t, g, http.MethodGet, "/v1/device/messages?limit=1000", user, device, nil, &res))
	ids := make([]string, 0, len(res.Messages))
	for _, m := range res.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func crashAck(t *testing.T, g *crashGW, user, device string, ids ...string) {
	t.Helper()
	require.Equal(t, http.StatusNoContent, crashDevice(t, g, http.MethodPost, "/v1/device/acks", user, device, api.AcksRequest{Delivered: ids}, nil))
}

// crashEvents reads the whole event feed of acme.
func crashEvents(t *testing.T, g *crashGW) []api.Event {
	t.Helper()
	var out []api.Event
	after := ""
	for {
		res, err := g.app.Events(ctxT(t), "acme", after, 1000, 0)
		require.NoError(t, err)
		for _, raw := range res.Events {
			var e api.Event
			require.NoError(t, json.Unmarshal(raw, &e))
			out = append(out, e)
		}
		if len(res.Events) == 0 {
			return out
		}
		after = res.Next
	}
}

func crashInt(v int64) *int64 { return &v }

// TestCrashFanOut: kill -9 right after the 202 of fan-out POSTs to many
// users. After the restart every recipient's message exists, enqueued, and
// a pull of a sample of recipients gets exactly their message.
func TestCrashFanOut(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	const users, posts = 1000, 3
	type want struct{ id, user, body string }
	var wants []want
	for p := range posts {
		to := make([]string, users)
		for i := range to {
			to[i] = fmt.Sprintf("f%04d", i)
		}
		body := fmt.Sprintf("fan-out %d", p)
		ids := crashSend(t, g, api.SendRequest{To: to, Body: body})
		require.Len(t, ids, users)
		for i, id := range ids {
			wants = append(wants, want{id, to[i], body})
		}
	}
	crashKill(t, g) // right after the last 202

	g = crashRestart(t, dir, g)
	for i, w := range wants {
		if i%7 != 0 && i < len(wants)-users { // every 7th, and all of the last POST
			continue
		}
		st := crashStatus(t, g, w.id)
		require.Equal(t, "enqueued", st.Status, "message %s to %s", w.id, w.user)
		require.Equal(t, w.user, st.To)
	}
	for _, u := range []string{"f0000", "f0499", "f0999"} {
		crashUser(t, g, u)
		var mine []string
		for _, w := range wants {
			if w.user == u {
				mine = append(mine, w.id)
			}
		}
		got := crashPull(t, g, u, "phone")
		require.Equal(t, mine, got, "%s's pull after the restart", u)
		crashAck(t, g, u, "phone", got...)
		require.Equal(t, "delivered", crashStatus(t, g, got[0]).Status)
	}
}

// TestCrashCancel: kill -9 right after a cancel's 200. After the restart
// the message is still cancelled, is never handed to a device (pull or
// XMPP), and cannot be cancelled again (409).
func TestCrashCancel(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "carl")
	cancelled := crashSend(t, g, api.SendRequest{To: []string{"carl"}, Body: "cancel me"})[0]
	kept := crashSend(t, g, api.SendRequest{To: []string{"carl"}, Body: "keep me"})[0]
	// The pull device has it "sent" before the cancel.
	require.Equal(t, []string{cancelled, kept}, crashPull(t, g, "carl", "web"))
	st, err := g.app.CancelMessage(ctxT(t), "acme", cancelled)
	require.NoError(t, err)
	require.Equal(t, "cancelled", st.Status)
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	require.Equal(t, "cancelled", crashStatus(t, g, cancelled).Status)
	_, err = g.app.CancelMessage(ctxT(t), "acme", cancelled)
	apiErr(t, err, http.StatusConflict, "conflict", "id")
	require.Equal(t, []string{kept}, crashPull(t, g, "carl", "web"), "the pull after the restart")
	// A late ack of the cancelled message does not move it.
	crashAck(t, g, "carl", "web", cancelled)
	require.Equal(t, "cancelled", crashStatus(t, g, cancelled).Status)

	// Over XMPP: only the kept message arrives.
	got := make(chan string, 16)
	cl, err := sdkproto.Dial(ctxT(t), sdkproto.Config{
		Addr: g.c.xmpps, App: "acme", User: "carl", Password: "pw-carl-123", Device: "phone",
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
		OnMessage: func(m *sdkproto.Message) { got <- m.ID },
	})
	require.NoError(t, err)
	defer cl.Close()
	select {
	case id := <-got:
		require.Equal(t, kept, id, "a cancelled message was delivered after the restart")
	case <-time.After(10 * time.Second):
		t.Fatal("the kept message was not delivered over XMPP")
	}
	eventually(t, 10*time.Second, "the kept message delivered", func() bool {
		return crashStatus(t, g, kept).Status == "delivered"
	})
	select {
	case id := <-got:
		t.Fatalf("a second message %s was delivered (cancelled %s)", id, cancelled)
	default:
	}
	n := 0
	for _, e := range crashEvents(t, g) {
		if e.MessageID == cancelled && e.Type == "message.cancelled" {
			n++
		}
	}
	require.Equal(t, 1, n, "message.cancelled events of the cancelled message")
}

// TestCrashAckThenSyncedWrite: a device acknowledges a message (an
// unsynced commit), then a later POST's 202 (a synced commit, after it in
// the WAL) is answered, then kill -9. The ack must survive: the message
// stays delivered and is not handed to the device again, over pull and
// over XMPP.
func TestCrashAckThenSyncedWrite(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "dora")
	acked := crashSend(t, g, api.SendRequest{To: []string{"dora/web"}, Body: "acked over pull"})[0]
	require.Equal(t, []string{acked}, crashPull(t, g, "dora", "web"))
	crashAck(t, g, "dora", "web", acked)

	// Over XMPP: a second device receives and acknowledges a message.
	got := make(chan string, 16)
	cfg := sdkproto.Config{
		Addr: g.c.xmpps, App: "acme", User: "dora", Password: "pw-dora-123", Device: "phone",
		TLSConfig:   &tls.Config{InsecureSkipVerify: true},
		AckInterval: 10 * time.Millisecond,
		OnMessage:   func(m *sdkproto.Message) { got <- m.ID },
	}
	cl, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	xacked := crashSend(t, g, api.SendRequest{To: []string{"dora/phone"}, Body: "acked over xmpp"})[0]
	select {
	case id := <-got:
		require.Equal(t, xacked, id)
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered over XMPP")
	}
	eventually(t, 10*time.Second, "the XMPP ack recorded", func() bool {
		return crashStatus(t, g, xacked).Status == "delivered"
	})
	cl.Drop()
	later := crashSend(t, g, api.SendRequest{To: []string{"dora/web"}, Body: "synced after the acks"})[0]
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	require.Equal(t, "delivered", crashStatus(t, g, acked).Status)
	require.Equal(t, "delivered", crashStatus(t, g, xacked).Status)
	require.Equal(t, []string{later}, crashPull(t, g, "dora", "web"), "an acknowledged message came back")

	cfg.Addr = g.c.xmpps
	got2 := make(chan string, 16)
	cfg.OnMessage = func(m *sdkproto.Message) { got2 <- m.ID }
	cl2, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	defer cl2.Close()
	probe := crashSend(t, g, api.SendRequest{To: []string{"dora/phone"}, Body: "probe"})[0]
	select {
	case id := <-got2:
		require.Equal(t, probe, id, "the acknowledged XMPP message was delivered again after the restart")
	case <-time.After(10 * time.Second):
		t.Fatal("the probe was not delivered")
	}
}

// TestCrashIdempotency: kill -9 right after a 202 with an
// Idempotency-Key. After the restart the same key and body replay the same
// answer (marked replayed) and enqueue nothing; the key with another body
// is a 409.
func TestCrashIdempotency(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	post := func(g *crashGW, body string) (int, http.Header, api.SendResponse) {
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, g.c.url+"/v1/apps/acme/messages", bytes.NewBufferString(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+g.key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-4711")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out api.SendResponse
		if resp.StatusCode == http.StatusAccepted {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		}
		return resp.StatusCode, resp.Header, out
	}
	body := `{"to":["ivy","jon","kim/tab"],"body":"your order shipped"}`
	code, _, first := post(g, body)
	require.Equal(t, http.StatusAccepted, code)
	require.Len(t, first.Messages, 3)
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	code, h, again := post(g, body)
	require.Equal(t, http.StatusAccepted, code)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.Equal(t, first, again, "the replay after the restart")
	code, _, _ = post(g, `{"to":["ivy"],"body":"something else"}`)
	require.Equal(t, http.StatusConflict, code)
	for i, u := range []string{"ivy", "jon", "kim"} {
		crashUser(t, g, u)
		require.Equal(t, []string{first.Messages[i].ID}, crashPull(t, g, u, "tab"), "%s's messages: one per key", u)
	}
}

// TestCrashCollapse: collapse keys across a kill -9. A message
// collapsed before the crash stays collapsed; one enqueued before the
// crash is collapsed by a newer one after it; the device only ever gets
// the newest.
func TestCrashCollapse(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "otto")
	a := crashSend(t, g, api.SendRequest{To: []string{"otto"}, Body: "code 1111", CollapseKey: "otp"})[0]
	require.Equal(t, []string{a}, crashPull(t, g, "otto", "web")) // sent, not acknowledged
	b := crashSend(t, g, api.SendRequest{To: []string{"otto"}, Body: "code 2222", CollapseKey: "otp"})[0]
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	require.Equal(t, "collapsed", crashStatus(t, g, a).Status)
	st := crashStatus(t, g, b)
	require.Contains(t, []string{"enqueued", "sent"}, st.Status)
	c := crashSend(t, g, api.SendRequest{To: []string{"otto"}, Body: "code 3333", CollapseKey: "otp"})[0]
	require.Equal(t, "collapsed", crashStatus(t, g, b).Status, "the collapse key of a message enqueued before the crash")
	require.Equal(t, []string{c}, crashPull(t, g, "otto", "web"))
	crashAck(t, g, "otto", "web", a, b)
	require.Equal(t, "collapsed", crashStatus(t, g, a).Status)
	require.Equal(t, "collapsed", crashStatus(t, g, b).Status)
}

// TestCrashDeleteUser: kill -9 right after a user's DELETE (204). After
// the restart the user is gone, its pending messages are cancelled, and a
// user re-created with the same id gets none of them.
func TestCrashDeleteUser(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "vera")
	ids := crashSend(t, g, api.SendRequest{To: []string{"vera"}, Body: "one"})
	ids = append(ids, crashSend(t, g, api.SendRequest{To: []string{"vera/web"}, Body: "two"})...)
	require.Equal(t, ids, crashPull(t, g, "vera", "web"))
	require.NoError(t, g.app.DeleteUser(ctxT(t), "acme", "vera"))
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	_, err := g.app.GetUser(ctxT(t), "acme", "vera")
	apiErr(t, err, http.StatusNotFound, "not_found", "")
	require.Equal(t, http.StatusUnauthorized, crashDevice(t, g, http.MethodGet, "/v1/device/messages", "vera", "web", nil, nil))
	for _, id := range ids {
		require.Equal(t, "cancelled", crashStatus(t, g, id).Status)
	}
	crashUser(t, g, "vera")
	require.Empty(t, crashPull(t, g, "vera", "web"), "a re-created user got the deleted user's messages")
}

// crashHook is a webhook receiver that records every event it got.
type crashHook struct {
	srv *httptest.Server
	mu  sync.Mutex
	evs []api.Event
}

func crashNewHook(t *testing.T) *crashHook {
	h := &crashHook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Events []api.Event `json:"events"`
		}
		if json.NewDecoder(r.Body).Decode(&b) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.evs = append(h.evs, b.Events...)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *crashHook) events() []api.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.evs)
}

// TestCrashEventFeed: the event feed and the webhook outbox across a
// kill -9. Event ids stay strictly increasing and unique (never reused
// after the restart); every event the webhook got before the crash is
// still in the feed, unchanged; the webhook gets every event of the feed
// (repeats allowed, with the same id and content), and no event id means
// two different events.
func TestCrashEventFeed(t *testing.T) {
	dir := t.TempDir()
	hook := crashNewHook(t)
	g := crashStart(t, dir, "")
	_, err := g.app.PatchApp(ctxT(t), "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: hook.srv.URL, Secret: "s3cret"}})
	require.NoError(t, err)
	crashUser(t, g, "eve")
	activity := func(g *crashGW, n int) []string {
		var ids []string
		for i := range n {
			ids = append(ids, crashSend(t, g, api.SendRequest{To: []string{"eve"}, Body: fmt.Sprint("m", i)})...)
		}
		got := crashPull(t, g, "eve", "web")
		crashAck(t, g, "eve", "web", got...)
		_, err := g.app.CancelMessage(ctxT(t), "acme", crashSend(t, g, api.SendRequest{To: []string{"eve"}, Body: "x"})[0])
		require.NoError(t, err)
		return ids
	}
	activity(g, 20)
	before := crashEvents(t, g)
	require.NotEmpty(t, before)
	eventually(t, 10*time.Second, "the webhook caught up before the crash", func() bool { return len(hook.events()) >= len(before) })
	crashKill(t, g)
	hooked := hook.events()

	g = crashRestart(t, dir, g)
	activity(g, 10)
	after := crashEvents(t, g)
	byID := map[string]api.Event{}
	for i, e := range after {
		if i > 0 {
			require.Greater(t, e.ID, after[i-1].ID, "feed ids strictly increasing")
		}
		byID[e.ID] = e
	}
	for _, e := range before {
		require.Contains(t, byID, e.ID, "an event of the feed read before the crash is gone: %+v", e)
		require.Equal(t, e.Type+e.MessageID+e.Device, byID[e.ID].Type+byID[e.ID].MessageID+byID[e.ID].Device, "event %s changed", e.ID)
	}
	maxBefore := before[len(before)-1].ID
	for _, e := range hooked {
		require.Contains(t, byID, e.ID, "an event the webhook got before the crash is not in the feed")
	}
	for _, e := range after[len(before):] {
		require.Greater(t, e.ID, maxBefore, "an event id after the restart is not above those before it")
	}
	// One final event per message.
	finals := map[string]int{}
	for _, e := range after {
		switch e.Type {
		case "message.cancelled", "message.expired", "message.collapsed", "message.fallback_sent", "message.fallback_failed":
			finals[e.MessageID]++
		}
	}
	for id, n := range finals {
		require.Equal(t, 1, n, "final events of %s", id)
	}
	eventually(t, 15*time.Second, "the webhook caught up after the restart", func() bool {
		seen := map[string]bool{}
		for _, e := range hook.events() {
			seen[e.ID] = true
		}
		for _, e := range after {
			if !seen[e.ID] {
				return false
			}
		}
		return true
	})
	for _, e := range hook.events() {
		f, ok := byID[e.ID]
		require.True(t, ok, "the webhook got event %s that is not in the feed", e.ID)
		require.Equal(t, f.Type+f.MessageID+f.Device, e.Type+e.MessageID+e.Device, "event id %s names two different events", e.ID)
	}
}

// TestCrashExpiryWhileDown: messages whose expiry (and SMS fallback
// deadline) pass while the gateway is down. After the restart the one
// without a fallback is expired, never delivered; each one with a
// fallback gets exactly one SMS and is fallback_sent: one whose fallback
// fires at expiry, and one with sms_fallback.after shorter than its
// expiry (two timers, both due at the restart).
func TestCrashExpiryWhileDown(t *testing.T) {
	dir := t.TempDir()
	sms := waketest.NewSMS(t)
	g := crashStart(t, dir, "")
	_, err := g.app.PatchApp(ctxT(t), "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: sms.URL + "/send", APIKey: sms.APIKey, From: "ACME"}})
	require.NoError(t, err)
	crashUser(t, g, "pia")
	plain := crashSend(t, g, api.SendRequest{To: []string{"pia"}, Body: "plain", ExpiresIn: crashInt(2)})[0]
	atExpiry := crashSend(t, g, api.SendRequest{To: []string{"pia"}, Body: "at expiry", ExpiresIn: crashInt(2),
		SMSFallback: &api.SMSFallback{To: "+393331234567", Text: "sms at expiry"}})[0]
	early := crashSend(t, g, api.SendRequest{To: []string{"pia"}, Body: "early", ExpiresIn: crashInt(3),
		SMSFallback: &api.SMSFallback{To: "+393331234568", Text: "sms early", After: crashInt(1)}})[0]
	downFrom := time.Now()
	crashKill(t, g)
	require.Empty(t, sms.Requests(), "an SMS before any deadline")

	// Down past every deadline (the longest is 3 s after the POST).
	time.Sleep(time.Until(downFrom.Add(3500 * time.Millisecond))) // the outage, not an assertion
	g = crashRestart(t, dir, g)
	final := func(id string) string {
		st := crashStatus(t, g, id)
		return st.Status
	}
	eventually(t, 10*time.Second, "every message final after the restart", func() bool {
		return final(plain) == "expired" && final(atExpiry) != "enqueued" && final(early) != "enqueued" &&
			crashStatus(t, g, atExpiry).Fallback.Status != "sending" && crashStatus(t, g, early).Fallback.Status != "sending"
	})
	require.Equal(t, "expired", final(plain))
	require.Equal(t, "fallback_sent", final(atExpiry))
	require.Equal(t, "fallback_sent", final(early))
	require.Empty(t, crashPull(t, g, "pia", "web"), "an expired or fallen-back message was handed to a device")
	// A second SMS of the same message would be in flight now: give it a
	// moment to reach the fake.
	time.Sleep(time.Second) // bounded wait for something that must not happen
	count := map[string]int{}
	for _, r := range sms.Requests() {
		count[r.MessageID]++
	}
	require.Equal(t, 0, count[plain])
	require.Equal(t, 1, count[atExpiry], "SMS for the message whose fallback fires at expiry")
	require.Equal(t, 1, count[early], "SMS for the message with sms_fallback.after (fallback and expiry timers both due at the restart)")
	n := 0
	for _, e := range crashEvents(t, g) {
		if e.Type == "message.fallback_sent" && e.MessageID == early {
			n++
		}
	}
	require.Equal(t, 1, n)
}

// TestCrashSequenceLease: message and event ids are never reused after
// a kill -9, across several restarts, and sort after every id handed out
// before the crash.
func TestCrashSequenceLease(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	seen := map[string]bool{}
	var maxID, maxEvent string
	for round := range 3 {
		var ids []string
		for i := range 20 {
			ids = append(ids, crashSend(t, g, api.SendRequest{To: []string{"lea", "max"}, Body: fmt.Sprint(round, i)})...)
		}
		_, err := g.app.CancelMessage(ctxT(t), "acme", ids[0]) // an event
		require.NoError(t, err)
		sorted := slices.Clone(ids)
		sort.Strings(sorted)
		require.Equal(t, ids, sorted, "ids in enqueue order")
		for _, id := range ids {
			require.False(t, seen[id], "message id %s reused", id)
			seen[id] = true
			require.Greater(t, id, maxID, "an id after the restart sorts before one handed out before it")
		}
		maxID = ids[len(ids)-1]
		evs := crashEvents(t, g)
		require.NotEmpty(t, evs)
		for _, e := range evs {
			if e.ID > maxEvent {
				require.Equal(t, ids[0], e.MessageID, "an event id of an earlier round came back")
			}
		}
		maxEvent = evs[len(evs)-1].ID
		crashKill(t, g)
		g = crashRestart(t, dir, g)
	}
}

// TestCrashInbound: a device message confirmed by the gateway's receipt
// survives a kill -9 (its message.inbound event is in the feed after the
// restart), and the SDK's resend of the same id after the restart is
// answered without a second event.
func TestCrashInbound(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "ian")
	cfg := sdkproto.Config{
		Addr: g.c.xmpps, App: "acme", User: "ian", Password: "pw-ian-123", Device: "phone",
		TLSConfig: &tls.Config{InsecureSkipVerify: true},
	}
	cl, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	_, err = cl.Send(ctxT(t), sdkproto.Outbound{ID: "in-4711", Body: "hello backend"})
	require.NoError(t, err)
	crashKill(t, g)
	cl.Drop()

	g = crashRestart(t, dir, g)
	cfg.Addr = g.c.xmpps
	cl2, err := sdkproto.Dial(ctxT(t), cfg)
	require.NoError(t, err)
	defer cl2.Close()
	_, err = cl2.Send(ctxT(t), sdkproto.Outbound{ID: "in-4711", Body: "hello backend"})
	require.NoError(t, err)
	_, err = cl2.Send(ctxT(t), sdkproto.Outbound{ID: "in-4712", Body: "after"})
	require.NoError(t, err)
	n := map[string]int{}
	for _, e := range crashEvents(t, g) {
		if e.Type == "message.inbound" {
			n[e.MessageID]++
		}
	}
	require.Equal(t, map[string]int{"in-4711": 1, "in-4712": 1}, n, "message.inbound events by device message id")
}

// TestCrashDeliveryAny: a delivery "any" message acknowledged by one
// device (unsynced), then a synced write, then kill -9: after the restart
// it is delivered and the user's other device does not get it.
func TestCrashDeliveryAny(t *testing.T) {
	dir := t.TempDir()
	g := crashStart(t, dir, "")
	crashUser(t, g, "ana")
	require.Empty(t, crashPull(t, g, "ana", "tablet")) // a known device
	id := crashSend(t, g, api.SendRequest{To: []string{"ana"}, Body: "any", Delivery: "any"})[0]
	require.Equal(t, []string{id}, crashPull(t, g, "ana", "web"))
	require.Equal(t, []string{id}, crashPull(t, g, "ana", "tablet"))
	crashAck(t, g, "ana", "web", id)
	later := crashSend(t, g, api.SendRequest{To: []string{"ana"}, Body: "synced"})[0]
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	require.Equal(t, "delivered", crashStatus(t, g, id).Status)
	require.Equal(t, []string{later}, crashPull(t, g, "ana", "tablet"), "a delivery any message taken by another device came back")
}

// TestCrashKillDuringSMS: kill -9 while the SMS provider holds the
// fallback's request. The message was withdrawn from the device queues
// durably before the SMS went out (SPEC section 8), so after the restart
// no device gets it and it cannot be cancelled any more (the SMS may have
// gone out); the retry, 5 minutes later, is not waited for here.
func TestCrashKillDuringSMS(t *testing.T) {
	dir := t.TempDir()
	got := make(chan string, 4)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			MessageID string `json:"message_id"`
		}
		json.NewDecoder(r.Body).Decode(&b)
		got <- b.MessageID
		<-release
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	g := crashStart(t, dir, "")
	_, err := g.app.PatchApp(ctxT(t), "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "http", URL: srv.URL + "/send", APIKey: "k"}})
	require.NoError(t, err)
	crashUser(t, g, "sam")
	id := crashSend(t, g, api.SendRequest{To: []string{"sam"}, Body: "otp", ExpiresIn: crashInt(1),
		SMSFallback: &api.SMSFallback{To: "+393331234567"}})[0]
	select {
	case m := <-got:
		require.Equal(t, id, m)
	case <-time.After(10 * time.Second):
		t.Fatal("no SMS request")
	}
	crashKill(t, g)

	g = crashRestart(t, dir, g)
	st := crashStatus(t, g, id)
	require.NotEqual(t, "delivered", st.Status)
	require.Equal(t, "sending", st.Fallback.Status)
	require.Empty(t, crashPull(t, g, "sam", "web"), "a message whose SMS was handed over came back to a device")
	_, err = g.app.CancelMessage(ctxT(t), "acme", id)
	apiErr(t, err, http.StatusConflict, "conflict", "id")
}
