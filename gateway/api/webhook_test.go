package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
)

const hookBody = `{"events":[{"id":"0000000000000001","type":"message.delivered","at":"2026-12-05T10:00:00Z","app":"acme","message_id":"m1","user":"alice","device":"phone"}]}`

// TestVerifyWebhook: what a backend's receiver accepts and refuses.
func TestVerifyWebhook(t *testing.T) {
	now := time.Unix(1_780_000_000, 0)
	body := []byte(hookBody)
	sig := api.SignWebhook("whsec", now, body)
	require.Regexp(t, `^t=1780000000,v1=[0-9a-f]{64}$`, sig)

	b, err := api.VerifyWebhook("whsec", sig, body, time.Minute, now.Add(30*time.Second))
	require.NoError(t, err)
	require.Len(t, b.Events, 1)
	require.Equal(t, "message.delivered", b.Events[0].Type)
	require.Equal(t, "phone", b.Events[0].Device)

	for name, tc := range map[string]struct {
		secret, header string
		body           string
		want           error
	}{
		"wrong secret":      {"other", sig, hookBody, api.ErrSignature},
		"body changed":      {"whsec", sig, strings.Replace(hookBody, "alice", "mallory", 1), api.ErrSignature},
		"time changed":      {"whsec", strings.Replace(sig, "t=1780000000", "t=1780000001", 1), hookBody, api.ErrSignature},
		"no header":         {"whsec", "", hookBody, api.ErrSignature},
		"no v1":             {"whsec", "t=1780000000", hookBody, api.ErrSignature},
		"no t":              {"whsec", sig[strings.Index(sig, "v1="):], hookBody, api.ErrSignature},
		"v1 not hex":        {"whsec", "t=1780000000,v1=zz", hookBody, api.ErrSignature},
		"another scheme":    {"whsec", strings.Replace(sig, "v1=", "v0=", 1), hookBody, api.ErrSignature},
		"signature too old": {"whsec", api.SignWebhook("whsec", now.Add(-2*time.Minute), body), hookBody, api.ErrSignatureExpired},
		"from the future":   {"whsec", api.SignWebhook("whsec", now.Add(2*time.Minute), body), hookBody, api.ErrSignatureExpired},
	} {
		_, err := api.VerifyWebhook(tc.secret, tc.header, []byte(tc.body), time.Minute, now)
		require.ErrorIs(t, err, tc.want, name)
	}

	// Without a tolerance the time is not checked; several v1 values
	// (a secret being changed) pass when one matches.
	_, err = api.VerifyWebhook("whsec", sig, body, 0, now.Add(24*time.Hour))
	require.NoError(t, err)
	two := sig + ",v1=" + strings.Repeat("ab", 32)
	_, err = api.VerifyWebhook("whsec", two, body, 0, now)
	require.NoError(t, err)
	_, err = api.VerifyWebhook("whsec", "t=1780000000, v1="+strings.Repeat("ab", 32)+", "+sig[strings.Index(sig, "v1="):], body, 0, now)
	require.NoError(t, err, "order and spaces do not matter")

	// Signed but not a batch: not ErrSignature.
	junk := []byte("not json")
	_, err = api.VerifyWebhook("whsec", api.SignWebhook("whsec", now, junk), junk, 0, now)
	require.Error(t, err)
	require.NotErrorIs(t, err, api.ErrSignature)
}

// TestWebhookHandler: the answers the gateway acts on: 204 acknowledges,
// 500 (the handler failed) and 401 (bad signature) make it post again.
func TestWebhookHandler(t *testing.T) {
	var got []api.Event
	fail := true
	srv := httptest.NewServer(api.WebhookHandler("whsec", func(ctx context.Context, evs []api.Event) error {
		if fail {
			return errors.New("database down")
		}
		got = append(got, evs...)
		return nil
	}))
	t.Cleanup(srv.Close)
	post := func(sig, body string) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set(api.SignatureHeader, sig)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	good := api.SignWebhook("whsec", time.Now(), []byte(hookBody))
	require.Equal(t, http.StatusInternalServerError, post(good, hookBody))
	fail = false
	require.Equal(t, http.StatusNoContent, post(good, hookBody))
	require.Len(t, got, 1)
	require.Equal(t, http.StatusUnauthorized, post(api.SignWebhook("other", time.Now(), []byte(hookBody)), hookBody))
	require.Equal(t, http.StatusUnauthorized, post(api.SignWebhook("whsec", time.Now().Add(-time.Hour), []byte(hookBody)), hookBody), "a replayed post")
	require.Equal(t, http.StatusBadRequest, post(api.SignWebhook("whsec", time.Now(), []byte("{")), "{"))
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Len(t, got, 1)
}
