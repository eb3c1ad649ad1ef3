package wake_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/wake"
	"tether/wake/waketest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newFCM returns a fake and an adapter pointed at it without OAuth2 (see
// TestFCMAuthenticates for the authenticated path), on a fixed clock.
func newFCM(t *testing.T, adjust func(*wake.FCMConfig)) (*waketest.FCM, *wake.FCM) {
	t.Helper()
	fake := waketest.NewFCM(t)
	cfg := wake.FCMConfig{
		ServiceAccountJSON: fake.ServiceAccountJSON,
		Endpoint:           fake.Endpoint(),
		NoAuth:             true,
		Now:                func() time.Time { return t0 },
	}
	return fake, newAdapter(t, wake.NewFCM, cfg, adjust)
}

// newFCMAuth returns a fake, set up by prepare, and an adapter pointed at
// it with full authentication (the fake's Config), on the real clock.
func newFCMAuth(t *testing.T, prepare func(*waketest.FCM)) (*waketest.FCM, *wake.FCM) {
	t.Helper()
	fake := waketest.NewFCM(t)
	prepare(fake)
	return fake, newAdapter(t, wake.NewFCM, fake.Config(), nil)
}

func TestFCMWakeRequests(t *testing.T) {
	t.Parallel()
	fake, f := newFCM(t, nil)
	require.Equal(t, "fcm", f.Name())
	require.Equal(t, fake.ProjectID, f.ProjectID())
	cases := []struct {
		name     string
		p        wake.Payload
		priority string
		ttl      string
	}{
		{"high", wake.Payload{Pending: 3, Priority: wake.PriorityHigh, Expiration: t0.Add(time.Hour)}, "high", "3600s"},
		{"normal", wake.Payload{Pending: 1, Priority: wake.PriorityNormal, Expiration: t0.Add(90 * time.Second)}, "normal", "90s"},
		{"default priority, TTL rounded up", wake.Payload{Pending: 2, Expiration: t0.Add(1500 * time.Millisecond)}, "normal", "2s"},
		{"TTL capped at 4 weeks", wake.Payload{Pending: 9, Priority: wake.PriorityHigh, Expiration: t0.Add(60 * 24 * time.Hour)}, "high", "2419200s"},
		{"APNs fields ignored", wake.Payload{Pending: 4, Expiration: t0.Add(time.Minute), Mode: wake.ModeBackground, AlertText: "hi"}, "normal", "60s"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := "fcm-token:" + strings.Repeat("x", i+1)
			res, err := f.Send(context.Background(), wake.Target{Token: tok, Topic: "ignored"}, tc.p)
			require.NoError(t, err)
			require.Equal(t, wake.Delivered, res.Outcome)
			require.Regexp(t, `^projects/tether-test/messages/\d+$`, res.ID)

			reqs := fake.RequestsFor(tok)
			require.Len(t, reqs, 1)
			m := reqs[0].Message
			require.Equal(t, map[string]string{"tether": "wake", "pending": stringsItoa(tc.p.Pending)}, m.Data)
			require.NotNil(t, m.Android)
			require.Equal(t, tc.priority, m.Android.Priority)
			require.Equal(t, tc.ttl, m.Android.TTL)
			require.Equal(t, "tether-wake", m.Android.CollapseKey)
			require.Empty(t, m.Android.Notification)
			require.Empty(t, m.Android.Data)
			require.Empty(t, m.Notification, "data-only")
			require.Empty(t, m.APNS)
			require.Empty(t, m.Webpush)

			// Nothing else in the request: no message content anywhere.
			var raw map[string]map[string]any
			require.NoError(t, json.Unmarshal(reqs[0].Body, &raw))
			require.Len(t, raw, 1)
			keys := make([]string, 0, len(raw["message"]))
			for k := range raw["message"] {
				keys = append(keys, k)
			}
			require.ElementsMatch(t, []string{"token", "data", "android"}, keys)
			require.Empty(t, reqs[0].Header.Get("Authorization"), "NoAuth")
		})
	}
}

func stringsItoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestFCMClassification(t *testing.T) {
	t.Parallel()
	fake, f := newFCM(t, nil)
	cases := []struct {
		name       string
		reply      waketest.FCMReply
		outcome    wake.Outcome
		status     int
		reason     string
		retryAfter time.Duration
	}{
		{"UNREGISTERED", waketest.FCMUnregistered(), wake.TokenInvalid, 404, "UNREGISTERED", 0},
		{"INVALID_ARGUMENT on the token", waketest.FCMInvalidArgument(), wake.TokenInvalid, 400, "INVALID_ARGUMENT", 0},
		{"INVALID_ARGUMENT without details", waketest.FCMReply{Status: 400, ErrorStatus: "INVALID_ARGUMENT", ErrorCode: "INVALID_ARGUMENT", Message: "bad"},
			wake.TokenInvalid, 400, "INVALID_ARGUMENT", 0},
		{"INVALID_ARGUMENT on another field", waketest.FCMReply{Status: 400, ErrorStatus: "INVALID_ARGUMENT", ErrorCode: "INVALID_ARGUMENT",
			Message: "Invalid value at 'message.android.ttl'", Field: "message.android.ttl"}, wake.Failed, 400, "INVALID_ARGUMENT", 0},
		{"429 QUOTA_EXCEEDED with Retry-After", waketest.FCMQuotaExceeded("30"), wake.RetryAfter, 429, "QUOTA_EXCEEDED", 30 * time.Second},
		{"429 without Retry-After", waketest.FCMQuotaExceeded(""), wake.RetryAfter, 429, "QUOTA_EXCEEDED", 0},
		{"429 with an HTTP-date Retry-After", waketest.FCMQuotaExceeded(t0.Add(2 * time.Minute).Format(http.TimeFormat)),
			wake.RetryAfter, 429, "QUOTA_EXCEEDED", 2 * time.Minute},
		{"503 UNAVAILABLE with Retry-After", waketest.FCMUnavailable("7"), wake.RetryAfter, 503, "UNAVAILABLE", 7 * time.Second},
		{"503 UNAVAILABLE long Retry-After", waketest.FCMUnavailable("600"), wake.RetryAfter, 503, "UNAVAILABLE", 10 * time.Minute},
		{"503 without Retry-After", waketest.FCMUnavailable(""), wake.RetryAfter, 503, "UNAVAILABLE", 0},
		{"500 INTERNAL", waketest.FCMReply{Status: 500, ErrorStatus: "INTERNAL", ErrorCode: "INTERNAL", Message: "oops"}, wake.RetryAfter, 500, "INTERNAL", 0},
		{"502 not JSON", waketest.FCMReply{Status: 502}, wake.RetryAfter, 502, "Bad Gateway", 0},
		{"SENDER_ID_MISMATCH", waketest.FCMSenderIDMismatch(), wake.Failed, 403, "SENDER_ID_MISMATCH", 0},
		{"THIRD_PARTY_AUTH_ERROR", waketest.FCMReply{Status: 401, ErrorStatus: "UNAUTHENTICATED", ErrorCode: "THIRD_PARTY_AUTH_ERROR", Message: "APNs auth"},
			wake.Failed, 401, "THIRD_PARTY_AUTH_ERROR", 0},
		{"404 NOT_FOUND without UNREGISTERED", waketest.FCMReply{Status: 404, ErrorStatus: "NOT_FOUND", Message: "Requested entity was not found."},
			wake.Failed, 404, "NOT_FOUND", 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := "tok-class-" + stringsItoa(i)
			fake.Script(tok, tc.reply)
			start := time.Now()
			res, err := f.Send(context.Background(), wake.Target{Token: tok}, wake.Payload{Pending: 1, Expiration: t0.Add(time.Hour)})
			require.NoError(t, err, "an answer is not an error")
			require.Less(t, time.Since(start), 2*time.Second, "no retry wait inside the firebase client")
			requireAnswer(t, res, tc.outcome, tc.status, tc.reason)
			require.Equal(t, tc.retryAfter, res.RetryAfter)
			require.Len(t, fake.RequestsFor(tok), 1, "exactly one attempt: the firebase client's own retries are off")
		})
	}
}

func TestFCMWrongProjectIsNotTokenInvalid(t *testing.T) {
	t.Parallel()
	_, f := newFCM(t, func(c *wake.FCMConfig) { c.ProjectID = "someone-else" })
	res, err := f.Send(context.Background(), wake.Target{Token: "tok"}, wake.Payload{Pending: 1, Expiration: t0.Add(time.Hour)})
	require.NoError(t, err)
	requireAnswer(t, res, wake.Failed, 404, "NOT_FOUND")
}

func TestFCMAuthenticates(t *testing.T) {
	t.Parallel()
	fake, f := newFCMAuth(t, func(fake *waketest.FCM) { fake.RequireAuth(true) })
	p := wake.Payload{Pending: 2, Priority: wake.PriorityHigh, Expiration: time.Now().Add(time.Hour)}
	for i := range 3 {
		res, err := f.Send(context.Background(), wake.Target{Token: "tok-auth-" + stringsItoa(i)}, p)
		require.NoError(t, err)
		require.Equal(t, wake.Delivered, res.Outcome, "%+v", res)
	}
	require.Equal(t, 1, fake.TokenRequests(), "one OAuth2 token, reused")
	for _, r := range fake.Requests() {
		require.Equal(t, "Bearer ya29.fake-1", r.Header.Get("Authorization"))
	}

	// Without credentials the fake refuses: 401 is Failed.
	noAuth := newAdapter(t, wake.NewFCM, wake.FCMConfig{ServiceAccountJSON: fake.ServiceAccountJSON, Endpoint: fake.Endpoint(), NoAuth: true}, nil)
	res, err := noAuth.Send(context.Background(), wake.Target{Token: "tok-noauth"}, p)
	require.NoError(t, err)
	requireAnswer(t, res, wake.Failed, 401, "UNAUTHENTICATED")
}

func TestFCMTokenEndpointRefuses(t *testing.T) {
	t.Parallel()
	fake, f := newFCMAuth(t, func(fake *waketest.FCM) { fake.RejectTokenRequests(true) })
	start := time.Now()
	res, err := f.Send(context.Background(), wake.Target{Token: "tok"}, wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)})
	require.Less(t, time.Since(start), 2*time.Second, "no retry wait inside the firebase client")
	require.Error(t, err)
	requireAnswer(t, res, wake.Failed, 400, "auth")
	require.Zero(t, fake.Count(), "no send without a token")
}

func TestFCMUnreachableAndTimeout(t *testing.T) {
	t.Parallel()
	fake := waketest.NewFCM(t)
	f := newAdapter(t, wake.NewFCM, wake.FCMConfig{ServiceAccountJSON: fake.ServiceAccountJSON, Endpoint: "http://" + deadAddr(t) + "/v1", NoAuth: true}, nil)
	p := wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)}
	start := time.Now()
	res, err := f.Send(context.Background(), wake.Target{Token: "tok"}, p)
	require.Less(t, time.Since(start), 2*time.Second, "no retry wait inside the firebase client")
	require.ErrorIs(t, err, wake.ErrUnreachable)
	require.Equal(t, wake.RetryAfter, res.Outcome)
	require.Equal(t, "unreachable", res.Reason)

	fake2, g := newFCM(t, func(c *wake.FCMConfig) { c.Timeout = 100 * time.Millisecond; c.Now = nil })
	fake2.Script("slow", waketest.FCMReply{Delay: 5 * time.Second})
	start = time.Now()
	res, err = g.Send(context.Background(), wake.Target{Token: "slow"}, p)
	require.Less(t, time.Since(start), 3*time.Second)
	require.ErrorIs(t, err, wake.ErrUnreachable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, wake.RetryAfter, res.Outcome)
	require.Equal(t, "timeout", res.Reason)
}

func TestFCMNotSent(t *testing.T) {
	t.Parallel()
	fake, f := newFCM(t, nil)
	res, err := f.Send(context.Background(), wake.Target{}, wake.Payload{Pending: 1, Expiration: t0.Add(time.Hour)})
	require.ErrorIs(t, err, wake.ErrInvalidTarget)
	require.Equal(t, wake.Failed, res.Outcome)
	res, err = f.Send(context.Background(), wake.Target{Token: "t"}, wake.Payload{Pending: 1, Expiration: t0})
	require.ErrorIs(t, err, wake.ErrExpired)
	require.Equal(t, wake.Failed, res.Outcome)
	res, err = f.Send(context.Background(), wake.Target{Token: "t"}, wake.Payload{Pending: 1})
	require.ErrorIs(t, err, wake.ErrExpired)
	require.Equal(t, wake.Failed, res.Outcome)
	require.Zero(t, fake.Count())
}

func TestFCMBadConfig(t *testing.T) {
	t.Parallel()
	fake := waketest.NewFCM(t)
	var sa map[string]string
	require.NoError(t, json.Unmarshal([]byte(fake.ServiceAccountJSON), &sa))
	with := func(k, v string) string {
		m := map[string]string{}
		for kk, vv := range sa {
			m[kk] = vv
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct {
		name string
		cfg  wake.FCMConfig
	}{
		{"empty", wake.FCMConfig{}},
		{"not JSON", wake.FCMConfig{ServiceAccountJSON: "{not json"}},
		{"no project", wake.FCMConfig{ServiceAccountJSON: with("project_id", "")}},
		{"not a service account", wake.FCMConfig{ServiceAccountJSON: with("type", "authorized_user")}},
		{"no client_email", wake.FCMConfig{ServiceAccountJSON: with("client_email", "")}},
		{"private key not PEM", wake.FCMConfig{ServiceAccountJSON: with("private_key", "MIIEvQIBADANBg")}},
		{"private key garbage", wake.FCMConfig{ServiceAccountJSON: with("private_key", "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n")}},
		{"private key not RSA", wake.FCMConfig{ServiceAccountJSON: with("private_key", waketest.NewAPNs(t).KeyP8)}},
		{"relative endpoint", wake.FCMConfig{ServiceAccountJSON: fake.ServiceAccountJSON, Endpoint: "fcm.googleapis.com/v1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := wake.NewFCM(tc.cfg)
			require.ErrorIs(t, err, wake.ErrConfig)
			require.Nil(t, f)
		})
	}
	// NoAuth needs only the project.
	f, err := wake.NewFCM(wake.FCMConfig{ServiceAccountJSON: `{"project_id":"p"}`, NoAuth: true})
	require.NoError(t, err)
	f.Close()
}
