package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
)

// TestMain fails the package when a test leaves goroutines behind. Idle
// keep-alive connections of the default transport are closed first: they
// are the HTTP client's cache, not a leak.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction("tether/session.(*poller).loop")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireAPIError checks that err is an *api.Error with the given code,
// HTTP status and field.
func requireAPIError(t *testing.T, err error, code string, status int, field string) *api.Error {
	t.Helper()
	var ae *api.Error
	require.Error(t, err)
	require.True(t, errors.As(err, &ae), "want *api.Error, got %T: %v", err, err)
	require.Equal(t, code, ae.Code, "code of %v", ae)
	require.Equal(t, status, ae.Status, "status of %v", ae)
	if field != "" {
		require.Equal(t, field, ae.Field, "field of %v", ae)
	}
	require.NotEmpty(t, ae.Message)
	return ae
}

func TestPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		segs []string
		want string
	}{
		{[]string{"v1", "apps"}, "/v1/apps"},
		{[]string{"v1", "apps", "acme", "users", "+393331234567"}, "/v1/apps/acme/users/%2B393331234567"},
		{[]string{"v1", "apps", "acme", "users", "a=b.c_d-e~"}, "/v1/apps/acme/users/a%3Db.c_d-e~"},
		{[]string{"x", "a/b c?d#e%"}, "/x/a%2Fb%20c%3Fd%23e%25"},
	} {
		require.Equal(t, tc.want, api.Path(tc.segs...))
	}
}

// TestClient drives every method against a real gateway on loopback.
func TestClient(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := api.NewClient(g.URL, g.AdminToken)

	// Health.
	require.NoError(t, admin.Healthz(ctx))
	require.NoError(t, admin.Readyz(ctx))

	// Apps.
	app, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme", Name: "Acme"})
	require.NoError(t, err)
	require.Equal(t, "acme", app.ID)
	require.Equal(t, "Acme", app.Name)
	require.Equal(t, "acme.localhost", app.XMPPDomain)
	require.NotEmpty(t, app.APIKey)
	other, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "other"})
	require.NoError(t, err)

	_, err = admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	requireAPIError(t, err, api.CodeConflict, http.StatusConflict, "")
	_, err = admin.CreateApp(ctx, api.CreateAppRequest{ID: "Bad_ID"})
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "id")

	apps, err := admin.ListApps(ctx)
	require.NoError(t, err)
	var ids []string
	for _, a := range apps {
		ids = append(ids, a.ID)
		require.Empty(t, a.APIKey, "list must not show API keys")
	}
	require.ElementsMatch(t, []string{"acme", "other"}, ids)

	key := api.NewClient(g.URL, app.APIKey)
	got, err := key.GetApp(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, "Acme", got.Name)
	require.Empty(t, got.APIKey)
	// An app key reaches only its own app: another app answers 404.
	_, err = key.GetApp(ctx, "other")
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")
	_, err = admin.GetApp(ctx, "nope")
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")

	expires := int64(3600)
	patched, err := key.PatchApp(ctx, "acme", api.PatchAppRequest{
		Webhook:      &api.WebhookConfig{URL: "http://127.0.0.1:9/hook", Secret: "s3cret"},
		Defaults:     &api.Defaults{ExpiresIn: &expires},
		ClientConfig: json.RawMessage(`{"theme":"dark"}`),
	})
	require.NoError(t, err)
	require.NotNil(t, patched)
	require.NotNil(t, patched.Webhook)
	require.Equal(t, "http://127.0.0.1:9/hook", patched.Webhook.URL)
	require.True(t, patched.Webhook.Secret.Set)
	got, err = admin.GetApp(ctx, "acme")
	require.NoError(t, err)
	require.NotNil(t, got.Webhook)
	require.True(t, got.Webhook.Secret.Set)
	require.NotNil(t, got.Defaults.ExpiresIn)
	require.Equal(t, expires, *got.Defaults.ExpiresIn)
	require.JSONEq(t, `{"theme":"dark"}`, string(got.ClientConfig))
	_, err = key.PatchApp(ctx, "acme", api.PatchAppRequest{Webhook: &api.WebhookConfig{URL: "ftp://x"}})
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "webhook.url")

	// Users, with ids that need escaping in the path.
	// SPEC section 1 says phone numbers like +393331234567 fit the user id
	// grammar, but its regexp needs an alphanumeric first character, so the
	// test uses ids with "+" and "=" inside.
	const phone, eq = "tel+393331234567", "a=b"
	u, err := key.PutUser(ctx, "acme", phone, api.PutUserRequest{})
	require.NoError(t, err)
	require.Equal(t, phone, u.User)
	require.Equal(t, phone+"@acme.localhost", u.JID)
	require.NotEmpty(t, u.Password, "a generated password is returned once")
	u, err = key.PutUser(ctx, "acme", eq, api.PutUserRequest{Password: "correct-horse"})
	require.NoError(t, err)
	require.Equal(t, eq, u.User)
	require.Empty(t, u.Password, "a chosen password is not echoed")
	u, err = key.GetUser(ctx, "acme", phone)
	require.NoError(t, err)
	require.Equal(t, phone, u.User)
	require.Empty(t, u.Password)
	require.False(t, u.CreatedAt.IsZero())
	_, err = key.PutUser(ctx, "acme", "carol", api.PutUserRequest{Password: "short"})
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "password")

	// Devices.
	d, err := key.PutDevice(ctx, "acme", phone, "phone1", api.PutDeviceRequest{
		Push: &api.PushRegistration{Provider: "fcm", Token: "fcm-token-0123456789"},
	})
	require.NoError(t, err)
	require.NotNil(t, d)
	require.Equal(t, "phone1", d.Device)
	require.NotNil(t, d.Push)
	require.Equal(t, "fcm", d.Push.Provider)
	require.Equal(t, "456789", d.Push.TokenSuffix)
	devs, err := key.ListDevices(ctx, "acme", phone)
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, "phone1", devs[0].Device)
	require.False(t, devs[0].Online)
	_, err = key.PutDevice(ctx, "acme", phone, "phone2", api.PutDeviceRequest{
		Push: &api.PushRegistration{Provider: "carrier-pigeon", Token: "x"},
	})
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "push.provider")

	// Messages, with an idempotency key.
	sreq := api.SendRequest{To: []string{phone, eq}, Body: "hello", Data: json.RawMessage(`{"n":1}`), Ref: "crm-1"}
	sent, err := key.Send(ctx, "acme", sreq, "idem-1")
	require.NoError(t, err)
	require.Len(t, sent.Messages, 2)
	require.Equal(t, phone, sent.Messages[0].To)
	require.Equal(t, eq, sent.Messages[1].To)
	for _, m := range sent.Messages {
		require.NotEmpty(t, m.ID)
		require.Equal(t, "enqueued", m.Status)
	}
	again, err := key.Send(ctx, "acme", sreq, "idem-1")
	require.NoError(t, err)
	require.Equal(t, sent, again, "a repeated Idempotency-Key returns the first answer")

	id := sent.Messages[0].ID
	st, err := key.GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, id, st.ID)
	require.Equal(t, phone, st.To)
	require.Equal(t, "enqueued", st.Status)
	require.Equal(t, "crm-1", st.Ref)
	require.WithinDuration(t, st.CreatedAt.Add(time.Hour), st.ExpiresAt, time.Second, "the app's default expires_in applies")
	_, err = key.GetMessage(ctx, "acme", "no-such-message")
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")

	cst, err := key.CancelMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.NotNil(t, cst)
	require.Equal(t, "cancelled", cst.Status)
	_, err = key.CancelMessage(ctx, "acme", id)
	requireAPIError(t, err, api.CodeConflict, http.StatusConflict, "")

	// 400 with a field.
	tooLong := int64(2419201)
	_, err = key.Send(ctx, "acme", api.SendRequest{To: []string{phone}, Body: "x", ExpiresIn: &tooLong}, "")
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "expires_in")
	_, err = key.Send(ctx, "acme", api.SendRequest{To: []string{phone}}, "")
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "body")

	// Events: the cancellation shows up in the feed.
	var cancelled *api.Event
	cursor := ""
	for deadline := time.Now().Add(10 * time.Second); cancelled == nil && time.Now().Before(deadline); {
		page, err := key.Events(ctx, "acme", cursor, 100, 2)
		require.NoError(t, err)
		for _, raw := range page.Events {
			var e api.Event
			require.NoError(t, json.Unmarshal(raw, &e))
			require.Equal(t, "acme", e.App)
			if e.Type == "message.cancelled" && e.MessageID == id {
				cancelled = &e
			}
		}
		require.NotEmpty(t, page.Next)
		cursor = page.Next
	}
	require.NotNil(t, cancelled, "no message.cancelled event for %s", id)
	require.Equal(t, phone, cancelled.User)
	require.Equal(t, "crm-1", cancelled.Ref)
	// A short long-poll after the last cursor: when nothing is newer it
	// returns no events and the same cursor.
	page, err := key.Events(ctx, "acme", cursor, 0, 1)
	require.NoError(t, err)
	if len(page.Events) == 0 {
		require.Equal(t, cursor, page.Next)
	}
	_, err = key.Events(ctx, "acme", "not-a-cursor", 0, 0)
	requireAPIError(t, err, api.CodeInvalidArgument, http.StatusBadRequest, "after")

	// Stats: admin only.
	stats, err := admin.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, stats.Apps)
	require.NotEmpty(t, stats.Version)
	_, err = key.Stats(ctx)
	requireAPIError(t, err, api.CodePermissionDenied, http.StatusForbidden, "")

	// 401.
	_, err = api.NewClient(g.URL, "wrong-token").GetApp(ctx, "acme")
	requireAPIError(t, err, api.CodeUnauthenticated, http.StatusUnauthorized, "")
	_, err = api.NewClient(g.URL, "").ListApps(ctx)
	requireAPIError(t, err, api.CodeUnauthenticated, http.StatusUnauthorized, "")

	// Key rotation: the new key works, the old one for 24 h more.
	rk, err := key.RotateKey(ctx, "acme")
	require.NoError(t, err)
	require.NotEmpty(t, rk.APIKey)
	require.NotEqual(t, app.APIKey, rk.APIKey)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), rk.PreviousValidUntil, time.Minute)
	_, err = api.NewClient(g.URL, rk.APIKey).GetApp(ctx, "acme")
	require.NoError(t, err)
	_, err = key.GetApp(ctx, "acme")
	require.NoError(t, err, "the previous key keeps working during the grace period")

	// Deletes.
	require.NoError(t, key.DeleteDevice(ctx, "acme", phone, "phone1"))
	devs, err = key.ListDevices(ctx, "acme", phone)
	require.NoError(t, err)
	require.Empty(t, devs)
	err = key.DeleteDevice(ctx, "acme", phone, "phone1")
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")
	require.NoError(t, key.DeleteUser(ctx, "acme", phone))
	_, err = key.GetUser(ctx, "acme", phone)
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "user")
	err = key.DeleteApp(ctx, "acme")
	requireAPIError(t, err, api.CodePermissionDenied, http.StatusForbidden, "")
	require.NoError(t, admin.DeleteApp(ctx, other.ID))
	_, err = admin.GetApp(ctx, other.ID)
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")
	require.NoError(t, admin.DeleteApp(ctx, "acme"))
	_, err = api.NewClient(g.URL, rk.APIKey).GetApp(ctx, "acme")
	requireAPIError(t, err, api.CodeUnauthenticated, http.StatusUnauthorized, "")
	apps, err = admin.ListApps(ctx)
	require.NoError(t, err)
	require.Empty(t, apps)
}

// TestClientErrorFallback checks that an error answer that is not the
// {"error": {...}} shape still becomes an *api.Error named after the
// status: the real gateway answers a path outside its API with net/http's
// plain-text 404.
func TestClientErrorFallback(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := api.NewClient(g.URL, g.AdminToken)
	err := c.Do(ctx, http.MethodGet, "/no-such-page", nil, nil, nil, nil)
	requireAPIError(t, err, api.CodeNotFound, http.StatusNotFound, "")

	// Do with a raw answer.
	var raw json.RawMessage
	require.NoError(t, c.Do(ctx, http.MethodGet, "/healthz", nil, nil, nil, &raw))
	require.True(t, json.Valid(raw))
}
