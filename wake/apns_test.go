package wake_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/wake"
	"tether/wake/waketest"
)

// newAPNs returns a fake and an adapter pointed at it.
func newAPNs(t *testing.T, adjust func(*wake.APNsConfig)) (*waketest.APNs, *wake.APNs) {
	t.Helper()
	fake := waketest.NewAPNs(t)
	return fake, newAdapter(t, wake.NewAPNs, fake.Config(), adjust)
}

func TestAPNsWakeRequests(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, nil)
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	cases := []struct {
		name     string
		p        wake.Payload
		pushType string
		priority string
		body     string
	}{
		{"alert high", wake.Payload{Pending: 3, Priority: wake.PriorityHigh}, "alert", "10",
			`{"aps":{"alert":"New message","mutable-content":1},"tether":"wake","pending":3}`},
		{"alert normal", wake.Payload{Pending: 1, Priority: wake.PriorityNormal, Mode: wake.ModeAlert}, "alert", "5",
			`{"aps":{"alert":"New message","mutable-content":1},"tether":"wake","pending":1}`},
		{"alert default priority", wake.Payload{Pending: 2}, "alert", "5",
			`{"aps":{"alert":"New message","mutable-content":1},"tether":"wake","pending":2}`},
		{"alert custom text", wake.Payload{Pending: 7, Priority: wake.PriorityHigh, AlertText: `Nuovo "messaggio"`}, "alert", "10",
			`{"aps":{"alert":"Nuovo \"messaggio\"","mutable-content":1},"tether":"wake","pending":7}`},
		{"background high", wake.Payload{Pending: 4, Priority: wake.PriorityHigh, Mode: wake.ModeBackground}, "background", "5",
			`{"aps":{"content-available":1},"tether":"wake","pending":4}`},
		{"background normal", wake.Payload{Pending: 5, Mode: wake.ModeBackground}, "background", "5",
			`{"aps":{"content-available":1},"tether":"wake","pending":5}`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := waketest.APNsToken(i)
			tc.p.Expiration = exp
			res, err := a.Send(context.Background(), wake.Target{Token: tok}, tc.p)
			require.NoError(t, err)
			require.Equal(t, wake.Delivered, res.Outcome)
			require.Equal(t, http.StatusOK, res.Status)
			require.NotEmpty(t, res.ID)
			require.Empty(t, res.Reason)

			reqs := fake.RequestsFor(tok)
			require.Len(t, reqs, 1)
			r := reqs[0]
			require.Equal(t, "HTTP/2.0", r.Proto)
			require.Equal(t, tc.pushType, r.Header.Get("apns-push-type"))
			require.Equal(t, tc.priority, r.Header.Get("apns-priority"))
			require.Equal(t, strconv.FormatInt(exp.Unix(), 10), r.Header.Get("apns-expiration"))
			require.Equal(t, "tether-wake", r.Header.Get("apns-collapse-id"))
			require.Equal(t, fake.Topic, r.Header.Get("apns-topic"))
			require.Regexp(t, `^bearer [\w-]+\.[\w-]+\.[\w-]+$`, r.Header.Get("Authorization"))
			// The whole body: aps and our two keys, no message content.
			require.JSONEq(t, tc.body, string(r.Body))
		})
	}
}

func TestAPNsTargetTopicAndEnvironment(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, func(c *wake.APNsConfig) { c.Environment = "sandbox" })
	p := wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Minute)}
	tok := waketest.APNsToken(1)
	res, err := a.Send(context.Background(), wake.Target{Token: tok, Topic: "com.other.app", Environment: "production"}, p)
	require.NoError(t, err)
	require.Equal(t, wake.Delivered, res.Outcome)
	require.Equal(t, "com.other.app", fake.RequestsFor(tok)[0].Header.Get("apns-topic"))

	res, err = a.Send(context.Background(), wake.Target{Token: tok, Environment: "staging"}, p)
	require.ErrorIs(t, err, wake.ErrInvalidTarget)
	require.Equal(t, wake.Failed, res.Outcome)
	require.Len(t, fake.RequestsFor(tok), 1)
}

func TestAPNsClassification(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, nil)
	gone := time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		reply   waketest.APNsReply
		outcome wake.Outcome
		status  int
		reason  string
	}{
		{"410 Unregistered", waketest.APNsUnregistered(gone), wake.TokenInvalid, 410, "Unregistered"},
		{"400 BadDeviceToken", waketest.APNsBadDeviceToken(), wake.TokenInvalid, 400, "BadDeviceToken"},
		{"400 DeviceTokenNotForTopic", waketest.APNsDeviceTokenNotForTopic(), wake.Failed, 400, "DeviceTokenNotForTopic"},
		{"429 TooManyRequests", waketest.APNsTooManyRequests(), wake.RetryAfter, 429, "TooManyRequests"},
		{"503 ServiceUnavailable", waketest.APNsServiceUnavailable(), wake.RetryAfter, 503, "ServiceUnavailable"},
		{"500 InternalServerError", waketest.APNsReply{Status: 500, Reason: "InternalServerError"}, wake.RetryAfter, 500, "InternalServerError"},
		{"403 InvalidProviderToken", waketest.APNsReply{Status: 403, Reason: "InvalidProviderToken"}, wake.Failed, 403, "InvalidProviderToken"},
		{"413 PayloadTooLarge", waketest.APNsReply{Status: 413, Reason: "PayloadTooLarge"}, wake.Failed, 413, "PayloadTooLarge"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := waketest.APNsToken(100 + i)
			fake.Script(tok, tc.reply)
			res, err := a.Send(context.Background(), wake.Target{Token: tok}, wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)})
			require.NoError(t, err, "a rejection is an answer, not an error")
			requireAnswer(t, res, tc.outcome, tc.status, tc.reason)
			require.Zero(t, res.RetryAfter, "APNs sends no Retry-After")
			if tc.status == 410 {
				require.True(t, res.InvalidSince.Equal(gone), "InvalidSince %v", res.InvalidSince)
			}
		})
	}
}

func TestAPNsExpiredProviderTokenSignsAnew(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, nil)
	tok := waketest.APNsToken(7)
	fake.Script(tok, waketest.APNsReply{Status: 403, Reason: "ExpiredProviderToken"})
	p := wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)}
	res, err := a.Send(context.Background(), wake.Target{Token: tok}, p)
	require.NoError(t, err)
	require.Equal(t, wake.RetryAfter, res.Outcome)
	res, err = a.Send(context.Background(), wake.Target{Token: tok}, p)
	require.NoError(t, err)
	require.Equal(t, wake.Delivered, res.Outcome)
	reqs := fake.RequestsFor(tok)
	require.Len(t, reqs, 2)
	require.NotEqual(t, reqs[0].Header.Get("Authorization"), reqs[1].Header.Get("Authorization"), "a new provider token")
}

func TestAPNsWrongKeyIsRejected(t *testing.T) {
	t.Parallel()
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	fake, a := newAPNs(t, func(c *wake.APNsConfig) { c.KeyP8 = pemPKCS8(t, other) })
	tok := waketest.APNsToken(8)
	res, err := a.Send(context.Background(), wake.Target{Token: tok}, wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	requireAnswer(t, res, wake.Failed, 403, "InvalidProviderToken")
	require.Equal(t, int64(0), fake.Accepted())
}

func TestAPNsNotSent(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, func(c *wake.APNsConfig) { c.Topic = "" })
	ctx := context.Background()
	later := wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)}
	topic := wake.Target{Token: waketest.APNsToken(1), Topic: "com.example.tether"}

	res, err := a.Send(ctx, wake.Target{Token: "not/hex?x=1"}, later)
	require.NoError(t, err)
	require.Equal(t, wake.TokenInvalid, res.Outcome)
	require.Equal(t, "BadDeviceToken", res.Reason)

	res, err = a.Send(ctx, wake.Target{Token: ""}, later)
	require.ErrorIs(t, err, wake.ErrInvalidTarget)
	require.Equal(t, wake.Failed, res.Outcome)

	res, err = a.Send(ctx, wake.Target{Token: waketest.APNsToken(1)}, later)
	require.ErrorIs(t, err, wake.ErrInvalidTarget, "no topic anywhere")
	require.Equal(t, wake.Failed, res.Outcome)

	res, err = a.Send(ctx, topic, wake.Payload{Pending: 1, Expiration: time.Now().Add(-time.Second)})
	require.ErrorIs(t, err, wake.ErrExpired)
	require.Equal(t, wake.Failed, res.Outcome)
	require.Equal(t, "expired", res.Reason)

	res, err = a.Send(ctx, topic, wake.Payload{Pending: 1})
	require.ErrorIs(t, err, wake.ErrExpired, "a zero expiration would send no apns-expiration header")
	require.Equal(t, wake.Failed, res.Outcome)

	res, err = a.Send(ctx, topic, wake.Payload{Pending: 1, Expiration: later.Expiration, Mode: "loud"})
	require.ErrorIs(t, err, wake.ErrInvalidTarget)
	require.Equal(t, wake.Failed, res.Outcome)

	require.Zero(t, fake.Count())
}

func TestAPNsTimeoutAndUnreachable(t *testing.T) {
	t.Parallel()
	fake, a := newAPNs(t, func(c *wake.APNsConfig) { c.Timeout = 100 * time.Millisecond })
	tok := waketest.APNsToken(9)
	fake.Script(tok, waketest.APNsReply{Delay: 5 * time.Second})
	p := wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)}
	start := time.Now()
	res, err := a.Send(context.Background(), wake.Target{Token: tok}, p)
	require.Less(t, time.Since(start), 3*time.Second)
	require.ErrorIs(t, err, wake.ErrUnreachable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, wake.RetryAfter, res.Outcome)
	require.Equal(t, "timeout", res.Reason)
	require.Zero(t, res.Status)

	// Nothing listening.
	addr := deadAddr(t)
	b := newAdapter(t, wake.NewAPNs, fake.Config(), func(c *wake.APNsConfig) { c.Endpoint = "https://" + addr })
	res, err = b.Send(context.Background(), wake.Target{Token: tok}, p)
	require.ErrorIs(t, err, wake.ErrUnreachable)
	require.Equal(t, wake.RetryAfter, res.Outcome)
	require.Equal(t, "unreachable", res.Reason)
}

func TestAPNsBadConfig(t *testing.T) {
	t.Parallel()
	fake := waketest.NewAPNs(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	cases := []struct {
		name   string
		adjust func(*wake.APNsConfig)
	}{
		{"empty key", func(c *wake.APNsConfig) { c.KeyP8 = "" }},
		{"not PEM", func(c *wake.APNsConfig) { c.KeyP8 = "MIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg" }},
		{"garbage PEM", func(c *wake.APNsConfig) {
			c.KeyP8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage")}))
		}},
		{"RSA key", func(c *wake.APNsConfig) {
			c.KeyP8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}))
		}},
		{"P-384 key", func(c *wake.APNsConfig) { c.KeyP8 = pemPKCS8(t, p384) }},
		{"no key id", func(c *wake.APNsConfig) { c.KeyID = "" }},
		{"no team id", func(c *wake.APNsConfig) { c.TeamID = "" }},
		{"bad environment", func(c *wake.APNsConfig) { c.Environment = "prod" }},
		{"relative endpoint", func(c *wake.APNsConfig) { c.Endpoint = "127.0.0.1:443" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fake.Config()
			tc.adjust(&cfg)
			a, err := wake.NewAPNs(cfg)
			require.ErrorIs(t, err, wake.ErrConfig)
			require.Nil(t, a)
		})
	}
}

func pemPKCS8(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
