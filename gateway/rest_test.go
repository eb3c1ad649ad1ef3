package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiErr asserts err is an *api.Error with the given status, code and field.
func apiErr(t *testing.T, err error, status int, code, field string) {
	t.Helper()
	var ae *api.Error
	require.True(t, errors.As(err, &ae), "want an API error, got %v", err)
	require.Equal(t, status, ae.Status, "status of %v", ae)
	require.Equal(t, code, ae.Code, "code of %v", ae)
	if field != "" {
		require.Equal(t, field, ae.Field, "field of %v", ae)
	}
	require.NotEmpty(t, ae.Message)
}

// rawPost sends body as-is and decodes the error answer.
func rawDo(t *testing.T, method, url, token string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func TestTour(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	created, err := g.Admin().CreateApp(ctx, api.CreateAppRequest{ID: "acme", Name: "Acme"})
	require.NoError(t, err)
	require.Equal(t, "acme.localhost", created.XMPPDomain)
	require.True(t, strings.HasPrefix(created.APIKey, "tk_"))
	app := api.NewClient(g.URL, created.APIKey)

	u, err := app.PutUser(ctx, "acme", "+393331234567", api.PutUserRequest{})
	require.NoError(t, err)
	require.Equal(t, "+393331234567@acme.localhost", u.JID)
	require.Len(t, u.Password, 26, "a generated password is returned once")
	again, err := app.GetUser(ctx, "acme", "+393331234567")
	require.NoError(t, err)
	require.Empty(t, again.Password, "the password is never shown again")

	_, err = app.PutDevice(ctx, "acme", "+393331234567", "phone1", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "fcm", Token: "tok-ABCDEF123456"}})
	require.NoError(t, err)
	devs, err := app.ListDevices(ctx, "acme", "+393331234567")
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, "phone1", devs[0].Device)
	require.False(t, devs[0].Online)
	require.Equal(t, &api.PushView{Provider: "fcm", TokenSuffix: "123456"}, devs[0].Push)

	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"+393331234567", "bob/tablet"}, Body: "hello", Data: json.RawMessage(`{"n": 1}`), Ref: "crm-4711", Channel: "alerts"}, "")
	require.NoError(t, err)
	require.Len(t, res.Messages, 2)
	require.Equal(t, "+393331234567", res.Messages[0].To)
	require.Equal(t, "bob/tablet", res.Messages[1].To)
	require.NotEqual(t, res.Messages[0].ID, res.Messages[1].ID)
	for _, m := range res.Messages {
		require.Equal(t, "enqueued", m.Status)
	}

	st, err := app.GetMessage(ctx, "acme", res.Messages[0].ID)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status)
	require.Equal(t, "crm-4711", st.Ref)
	require.WithinDuration(t, st.CreatedAt.Add(7*24*time.Hour), st.ExpiresAt, time.Second, "default expiry is 7 days")
	require.Nil(t, st.DeliveredAt)

	cst, err := app.CancelMessage(ctx, "acme", res.Messages[0].ID)
	require.NoError(t, err)
	require.Equal(t, "cancelled", cst.Status)
	_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
	apiErr(t, err, 409, api.CodeConflict, "")

	ev, err := app.Events(ctx, "acme", "", 0, 0)
	require.NoError(t, err)
	require.Len(t, ev.Events, 1)
	var e api.Event
	require.NoError(t, json.Unmarshal(ev.Events[0], &e))
	require.Equal(t, "message.cancelled", e.Type)
	require.Equal(t, res.Messages[0].ID, e.MessageID)
	require.Equal(t, "crm-4711", e.Ref)
	require.Equal(t, e.ID, ev.Next)
	ev2, err := app.Events(ctx, "acme", ev.Next, 0, 0)
	require.NoError(t, err)
	require.Empty(t, ev2.Events)
	require.Equal(t, ev.Next, ev2.Next)

	st2, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, st2.QueueDepth, "bob's message waits")
	require.Equal(t, 1, st2.Apps)
}

func TestAuthAndTenantIsolation(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	acme := g.App(t, "acme")
	other := g.App(t, "other")
	_, err := acme.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "correct horse"})
	require.NoError(t, err)
	res, err := acme.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "secret"}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	// Another app's key sees nothing of acme: 404 everywhere, as if absent.
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/apps/acme"}, {"PATCH", "/v1/apps/acme"}, {"POST", "/v1/apps/acme/keys"},
		{"GET", "/v1/apps/acme/users/alice"}, {"PUT", "/v1/apps/acme/users/alice"}, {"DELETE", "/v1/apps/acme/users/alice"},
		{"GET", "/v1/apps/acme/users/alice/devices"}, {"PUT", "/v1/apps/acme/users/alice/devices/d1"},
		{"POST", "/v1/apps/acme/messages"}, {"GET", "/v1/apps/acme/messages/" + id}, {"DELETE", "/v1/apps/acme/messages/" + id},
		{"GET", "/v1/apps/acme/events"},
	} {
		code, _, body := rawDo(t, c.method, g.URL+c.path, other.Token, []byte(`{}`), nil)
		require.Equal(t, 404, code, "%s %s: %s", c.method, c.path, body)
		require.Contains(t, string(body), `"code":"not_found"`)
	}
	// The message id is not reachable through the other app's own path either.
	_, err = other.GetMessage(ctx, "other", id)
	apiErr(t, err, 404, api.CodeNotFound, "id")

	// Missing and wrong tokens: 401.
	code, _, body := rawDo(t, "GET", g.URL+"/v1/apps/acme", "", nil, nil)
	require.Equal(t, 401, code)
	require.Contains(t, string(body), "unauthenticated")
	code, _, _ = rawDo(t, "GET", g.URL+"/v1/apps/acme", "tk_wrong", nil, nil)
	require.Equal(t, 401, code)
	// App keys cannot use admin endpoints: 403.
	_, err = acme.ListApps(ctx)
	apiErr(t, err, 403, api.CodePermissionDenied, "")
	_, err = acme.CreateApp(ctx, api.CreateAppRequest{ID: "x"})
	apiErr(t, err, 403, api.CodePermissionDenied, "")
	err = acme.DeleteApp(ctx, "acme")
	apiErr(t, err, 403, api.CodePermissionDenied, "")
	// The admin token reaches every app.
	st, err := g.Admin().GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "enqueued", st.Status)

	// Secrets are never returned.
	_, err = acme.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: "http://127.0.0.1:1/hook", Secret: "s3cret"}})
	require.NoError(t, err)
	code, _, body = rawDo(t, "GET", g.URL+"/v1/apps/acme", acme.Token, nil, nil)
	require.Equal(t, 200, code)
	require.NotContains(t, string(body), "s3cret")
	require.Contains(t, string(body), `"secret":{"set":true}`)
	require.NotContains(t, string(body), "api_key")
	// A PATCH that only moves the URL keeps the secret; null removes it.
	a, err := acme.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: "http://127.0.0.1:2/hook"}})
	require.NoError(t, err)
	require.Equal(t, &api.WebhookView{URL: "http://127.0.0.1:2/hook", Secret: api.Secret{Set: true}}, a.Webhook)
	code, _, body = rawDo(t, "PATCH", g.URL+"/v1/apps/acme", acme.Token, []byte(`{"webhook":null}`), nil)
	require.Equal(t, 200, code)
	require.NotContains(t, string(body), "webhook")
}

func TestSendValidation(t *testing.T) {
	g := gatewaytest.Start(t)
	app := g.App(t, "acme")
	url := g.URL + "/v1/apps/acme/messages"
	many := make([]string, 10001)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	manyJSON, _ := json.Marshal(map[string]any{"to": many, "body": "x"})
	cases := []struct {
		name   string
		body   string
		status int
		code   string
		field  string
	}{
		{"unknown field", `{"to":["a"],"body":"x","bogus":1}`, 400, "invalid_argument", "bogus"},
		{"wrong type", `{"to":["a"],"body":5}`, 400, "invalid_argument", "body"},
		{"wrong type in list", `{"to":[1],"body":"x"}`, 400, "invalid_argument", "to"},
		{"malformed", `{"to":["a"],`, 400, "invalid_argument", ""},
		{"not an object", `[1,2]`, 400, "invalid_argument", ""},
		{"trailing data", `{"to":["a"],"body":"x"} {}`, 400, "invalid_argument", ""},
		{"trailing bracket", "{\"to\":[\"a\"],\"body\":\"x\"}\n]", 400, "invalid_argument", ""},
		{"trailing word", `{"to":["a"],"body":"x"} x`, 400, "invalid_argument", ""},
		{"empty body", ``, 400, "invalid_argument", ""},
		{"no recipients", `{"to":[],"body":"x"}`, 400, "invalid_argument", "to"},
		{"too many recipients", string(manyJSON), 400, "invalid_argument", "to"},
		{"bad user", `{"to":["-bad"],"body":"x"}`, 400, "invalid_argument", "to"},
		{"bad device", `{"to":["alice/ph one"],"body":"x"}`, 400, "invalid_argument", "to"},
		{"duplicate recipient", `{"to":["a","a"],"body":"x"}`, 400, "invalid_argument", "to"},
		{"no content", `{"to":["a"]}`, 400, "invalid_argument", "body"},
		{"null data only", `{"to":["a"],"data":null}`, 400, "invalid_argument", "body"},
		{"payload too large", `{"to":["a"],"body":"` + strings.Repeat("x", 16<<10+1) + `"}`, 413, "payload_too_large", "body"},
		{"negative expiry", `{"to":["a"],"body":"x","expires_in":-1}`, 400, "invalid_argument", "expires_in"},
		{"expiry over 28 days", `{"to":["a"],"body":"x","expires_in":2419201}`, 400, "invalid_argument", "expires_in"},
		{"fractional expiry", `{"to":["a"],"body":"x","expires_in":1.5}`, 400, "invalid_argument", "expires_in"},
		{"bad priority", `{"to":["a"],"body":"x","priority":"urgent"}`, 400, "invalid_argument", "priority"},
		{"bad delivery", `{"to":["a"],"body":"x","delivery":"some"}`, 400, "invalid_argument", "delivery"},
		{"bad sms number", `{"to":["a"],"body":"x","sms_fallback":{"to":"call me"}}`, 400, "invalid_argument", "sms_fallback.to"},
		{"unknown sms field", `{"to":["a"],"body":"x","sms_fallback":{"to":"+391234567","when":1}}`, 400, "invalid_argument", "sms_fallback.when"},
		{"ref too long", `{"to":["a"],"body":"x","ref":"` + strings.Repeat("r", 257) + `"}`, 400, "invalid_argument", "ref"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := rawDo(t, "POST", url, app.Token, []byte(tc.body), nil)
			require.Equal(t, tc.status, code, "%s", body)
			var eb api.ErrorBody
			require.NoError(t, json.Unmarshal(body, &eb), "%s", body)
			require.Equal(t, tc.code, eb.Error.Code)
			require.Equal(t, tc.field, eb.Error.Field, "%s", eb.Error.Message)
			require.NotEmpty(t, eb.Error.Message)
		})
	}
	t.Run("body over 1 MiB", func(t *testing.T) {
		code, _, body := rawDo(t, "POST", url, app.Token, []byte(`{"to":["a"],"body":"`+strings.Repeat("x", 1<<20)+`"}`), nil)
		require.Equal(t, 413, code, "%s", body)
		require.Contains(t, string(body), "payload_too_large")
	})
	// Nothing of the refused requests was enqueued.
	st, err := g.Admin().Stats(ctxT(t))
	require.NoError(t, err)
	require.EqualValues(t, 0, st.QueueDepth)
}

func TestOtherValidation(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	admin := g.Admin()
	_, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "Bad_Id"})
	apiErr(t, err, 400, api.CodeInvalidArgument, "id")
	app := g.App(t, "acme")
	_, err = admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	apiErr(t, err, 409, api.CodeConflict, "id")

	_, err = app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "short"})
	apiErr(t, err, 400, api.CodeInvalidArgument, "password")
	_, err = app.GetUser(ctx, "acme", "nobody")
	apiErr(t, err, 404, api.CodeNotFound, "user")
	_, err = app.PutDevice(ctx, "acme", "nobody", "d1", api.PutDeviceRequest{})
	apiErr(t, err, 404, api.CodeNotFound, "user")
	_, err = app.PutUser(ctx, "acme", "alice", api.PutUserRequest{})
	require.NoError(t, err)
	_, err = app.PutDevice(ctx, "acme", "alice", "d1", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "hms", Token: "t"}})
	apiErr(t, err, 400, api.CodeInvalidArgument, "push.provider")
	err = app.DeleteDevice(ctx, "acme", "alice", "nope")
	apiErr(t, err, 404, api.CodeNotFound, "device")

	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{SMS: &api.SMSConfig{Provider: "carrier-pigeon"}})
	apiErr(t, err, 400, api.CodeInvalidArgument, "sms.provider")
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: "ftp://x"}})
	apiErr(t, err, 400, api.CodeInvalidArgument, "webhook.url")
	code, _, body := rawDo(t, "PATCH", g.URL+"/v1/apps/acme", app.Token, []byte(`{"defaults":{"expires_in":"soon"}}`), nil)
	require.Equal(t, 400, code)
	require.Contains(t, string(body), `"field":"defaults.expires_in"`)

	_, err = app.GetMessage(ctx, "acme", "not-an-id")
	apiErr(t, err, 404, api.CodeNotFound, "id")
	_, err = app.Events(ctx, "acme", "zz", 0, 0)
	apiErr(t, err, 400, api.CodeInvalidArgument, "after")
	code, _, _ = rawDo(t, "GET", g.URL+"/v1/apps/acme/events?limit=5000", app.Token, nil, nil)
	require.Equal(t, 400, code)
	code, _, body = rawDo(t, "GET", g.URL+"/v1/nothing", app.Token, nil, nil)
	require.Equal(t, 404, code, "%s", body)
}

func TestIdempotencyKey(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	url := g.URL + "/v1/apps/acme/messages"
	body := []byte(`{"to":["alice","bob"],"body":"once"}`)
	hdr := map[string]string{"Idempotency-Key": "order-1"}

	// Concurrent repeats enqueue once and all get the first answer.
	var wg sync.WaitGroup
	answers := make([][]byte, 8)
	for i := range answers {
		wg.Go(func() {
			code, _, b := rawDo(t, "POST", url, app.Token, body, hdr)
			require.Equal(t, 202, code, "%s", b)
			answers[i] = b
		})
	}
	wg.Wait()
	for _, a := range answers[1:] {
		require.JSONEq(t, string(answers[0]), string(a))
	}
	st, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.QueueDepth, "one message per recipient, once")

	code, h, _ := rawDo(t, "POST", url, app.Token, body, hdr)
	require.Equal(t, 202, code)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))

	code, _, b := rawDo(t, "POST", url, app.Token, []byte(`{"to":["alice"],"body":"different"}`), hdr)
	require.Equal(t, 409, code, "%s", b)
	require.Contains(t, string(b), "Idempotency-Key")

	// A repeat gets the first answer even after the app's settings changed
	// so that the request itself would now be refused.
	yes := true
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{RejectUnknownUsers: &yes}})
	require.NoError(t, err)
	code, h, b = rawDo(t, "POST", url, app.Token, body, hdr)
	require.Equal(t, 202, code, "%s", b)
	require.Equal(t, "true", h.Get("Idempotent-Replayed"))
	require.JSONEq(t, string(answers[0]), string(b))

	// Keys are per app.
	other := g.App(t, "other")
	code, _, b = rawDo(t, "POST", g.URL+"/v1/apps/other/messages", other.Token, body, hdr)
	require.Equal(t, 202, code)
	require.NotEqual(t, string(answers[0]), string(b))
}

func TestExpiryCollapseAndUnknownUsers(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	g := gatewaytest.Start(t, gatewaytest.WithManualClock(start))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	sixty := int64(60)
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "soon gone", ExpiresIn: &sixty}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID
	st, err := app.GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, start.Add(time.Minute), st.ExpiresAt.UTC())

	g.Clock.Advance(59 * time.Second)
	_, err = g.Queue().RunTimers(ctx)
	require.NoError(t, err)
	st, _ = app.GetMessage(ctx, "acme", id)
	require.Equal(t, "enqueued", st.Status)
	g.Clock.Advance(2 * time.Second)
	_, err = g.Queue().RunTimers(ctx)
	require.NoError(t, err)
	st, _ = app.GetMessage(ctx, "acme", id)
	require.Equal(t, "expired", st.Status)
	_, err = app.CancelMessage(ctx, "acme", id)
	apiErr(t, err, 409, api.CodeConflict, "")

	// expires_in 0 to a user with no live session: expired at once.
	zero := int64(0)
	res, err = app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "now or never", ExpiresIn: &zero}, "")
	require.NoError(t, err)
	st, _ = app.GetMessage(ctx, "acme", res.Messages[0].ID)
	require.Equal(t, "expired", st.Status)

	// Collapse: the newer OTP replaces the older one.
	r1, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "otp 1111", CollapseKey: "otp"}, "")
	require.NoError(t, err)
	r2, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "otp 2222", CollapseKey: "otp"}, "")
	require.NoError(t, err)
	st, _ = app.GetMessage(ctx, "acme", r1.Messages[0].ID)
	require.Equal(t, "collapsed", st.Status)
	st, _ = app.GetMessage(ctx, "acme", r2.Messages[0].ID)
	require.Equal(t, "enqueued", st.Status)

	// Status records are dropped 7 days after the message is done.
	g.Clock.Advance(7*24*time.Hour + time.Minute)
	_, err = g.Queue().RunTimers(ctx)
	require.NoError(t, err)
	_, err = app.GetMessage(ctx, "acme", id)
	apiErr(t, err, 404, api.CodeNotFound, "id")

	// reject_unknown_users.
	yes := true
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{Defaults: &api.Defaults{RejectUnknownUsers: &yes}})
	require.NoError(t, err)
	_, err = app.Send(ctx, "acme", api.SendRequest{To: []string{"ghost"}, Body: "hi"}, "")
	apiErr(t, err, 404, api.CodeNotFound, "to")
	_, err = app.PutUser(ctx, "acme", "ghost", api.PutUserRequest{})
	require.NoError(t, err)
	_, err = app.Send(ctx, "acme", api.SendRequest{To: []string{"ghost"}, Body: "hi"}, "")
	require.NoError(t, err)
}

func TestFanout10000(t *testing.T) {
	if testing.Short() && raceEnabled {
		t.Log("running a smaller fan-out under -race -short is not needed: 10,000 still fits")
	}
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	to := make([]string, 10000)
	for i := range to {
		to[i] = fmt.Sprintf("user%05d", i)
	}
	res, err := app.Send(ctx, "acme", api.SendRequest{To: to, Body: "to everyone", Data: json.RawMessage(`{"campaign":7}`)}, "")
	require.NoError(t, err)
	require.Len(t, res.Messages, 10000)
	ids := map[string]bool{}
	for i, m := range res.Messages {
		require.Equal(t, to[i], m.To)
		require.False(t, ids[m.ID], "duplicate id")
		ids[m.ID] = true
	}
	for _, i := range []int{0, 4999, 9999} {
		st, err := app.GetMessage(ctx, "acme", res.Messages[i].ID)
		require.NoError(t, err)
		require.Equal(t, to[i], st.To)
	}
	st, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 10000, st.QueueDepth)
}

func TestEventsLongPoll(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	got := make(chan *api.EventsResponse, 1)
	errc := make(chan error, 1)
	go func() {
		ev, err := app.Events(ctx, "acme", "", 0, 30)
		errc <- err
		got <- ev
	}()
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "x"}, "")
	require.NoError(t, err)
	_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
	require.NoError(t, err)
	select {
	case err := <-errc:
		require.NoError(t, err)
		ev := <-got
		require.Len(t, ev.Events, 1)
		require.Contains(t, string(ev.Events[0]), "message.cancelled")
	case <-time.After(20 * time.Second):
		t.Fatal("long poll did not return after an event")
	}
	// With nothing new, wait=1 returns an empty page after about a second.
	startWait := time.Now()
	ev, err := app.Events(ctx, "acme", "ffffffffffffff00", 0, 1)
	require.NoError(t, err)
	require.Empty(t, ev.Events)
	require.GreaterOrEqual(t, time.Since(startWait), 900*time.Millisecond)
}

func TestKeyRotationAndAppDeletion(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	g := gatewaytest.Start(t, gatewaytest.WithManualClock(start))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	kr, err := app.RotateKey(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, start.Add(24*time.Hour), kr.PreviousValidUntil.UTC())
	fresh := api.NewClient(g.URL, kr.APIKey)
	_, err = app.GetApp(ctx, "acme")
	require.NoError(t, err, "the old key works for 24 h")
	_, err = fresh.GetApp(ctx, "acme")
	require.NoError(t, err)
	g.Clock.Advance(24*time.Hour + time.Second)
	_, err = app.GetApp(ctx, "acme")
	apiErr(t, err, 401, api.CodeUnauthenticated, "")
	_, err = fresh.GetApp(ctx, "acme")
	require.NoError(t, err)

	_, err = fresh.PutUser(ctx, "acme", "alice", api.PutUserRequest{})
	require.NoError(t, err)
	_, err = fresh.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "x"}, "")
	require.NoError(t, err)
	require.NoError(t, g.Admin().DeleteApp(ctx, "acme"))
	stats, err := g.Admin().Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 0, stats.QueueDepth, "the deleted app's queue is gone")
	_, err = fresh.GetApp(ctx, "acme")
	apiErr(t, err, 401, api.CodeUnauthenticated, "")
	again, err := g.Admin().CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	c := api.NewClient(g.URL, again.APIKey)
	_, err = c.GetUser(ctx, "acme", "alice")
	apiErr(t, err, 404, api.CodeNotFound, "user")
	ev, err := c.Events(ctx, "acme", "", 0, 0)
	require.NoError(t, err)
	require.Empty(t, ev.Events)
}

func TestMetricsAfterFlow(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"a", "b", "c"}, Body: "x"}, "")
	require.NoError(t, err)
	_, err = app.CancelMessage(ctx, "acme", res.Messages[0].ID)
	require.NoError(t, err)
	_, err = app.Send(ctx, "acme", api.SendRequest{To: []string{"a"}}, "")
	require.Error(t, err)

	resp, err := http.Get("http://" + g.Addr("metrics") + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(b)
	for _, want := range []string{
		`tether_messages_total{status="enqueued"} 3`,
		`tether_messages_total{status="cancelled"} 1`,
		`tether_queue_depth 2`,
		`tether_events_total{type="message.cancelled"} 1`,
		`tether_http_requests_total{code="202",route="POST /v1/apps/{app}/messages"} 1`,
		`tether_http_requests_total{code="400",route="POST /v1/apps/{app}/messages"} 1`,
		`tether_store_commit_seconds_count{sync="true"}`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		require.Contains(t, m, want)
	}
	require.NotContains(t, m, res.Messages[0].ID, "no ids in labels")
}

// TestUnknownRoutes: a path no route has is 404; a known path under a
// method it does not take is 405 with Allow; both in the error shape.
func TestUnknownRoutes(t *testing.T) {
	g := gatewaytest.Start(t)
	acme := g.App(t, "acme")
	for _, c := range []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/v1/nothing", 404, ""},
		{"POST", "/v2/apps", 404, ""},
		{"DELETE", "/v1/apps/acme/messages", 405, "POST"},
		{"PUT", "/v1/apps/acme/messages/m1", 405, "GET, HEAD, DELETE"},
		{"POST", "/v1/apps/acme/users/alice", 405, "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/v1/device/acks", 405, "POST"},
	} {
		code, h, body := rawDo(t, c.method, g.URL+c.path, acme.Token, []byte(`{}`), nil)
		require.Equal(t, c.code, code, "%s %s: %s", c.method, c.path, body)
		require.Equal(t, c.allow, h.Get("Allow"), "%s %s", c.method, c.path)
		require.Equal(t, "application/json", h.Get("Content-Type"))
		want := `"code":"not_found"`
		if c.code == 405 {
			want = `"code":"method_not_allowed"`
		}
		require.Contains(t, string(body), want, "%s %s", c.method, c.path)
	}
}
