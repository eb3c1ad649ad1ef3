package wake_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/wake"
	"tether/wake/waketest"
)

func newSMS(t *testing.T, cfg wake.SMSConfig) *wake.SMSSender {
	t.Helper()
	return newAdapter(t, wake.NewSMSSender, cfg, nil)
}

// sendCode makes a sender for cfg, requires that it is for provider,
// and sends it a code with message id m1, which must succeed. It returns
// the sender and the provider's detail.
func sendCode(t *testing.T, cfg wake.SMSConfig, provider string) (*wake.SMSSender, string) {
	t.Helper()
	s := newSMS(t, cfg)
	require.Equal(t, provider, s.Provider())
	got, detail, err := s.Send(context.Background(), wake.SMS{To: "+393331234567", Text: "Your code is 1234", MessageID: "m1"})
	require.NoError(t, err)
	require.Equal(t, provider, got)
	return s, detail
}

// requireRejected sends m with s and requires the provider's refusal,
// with detail.
func requireRejected(t *testing.T, s *wake.SMSSender, m wake.SMS, detail string) {
	t.Helper()
	_, got, err := s.Send(context.Background(), m)
	require.ErrorIs(t, err, wake.ErrSMSRejected)
	require.Equal(t, detail, got)
}

func TestSMSHTTP(t *testing.T) {
	t.Parallel()
	fake := waketest.NewSMS(t)
	ctx := context.Background()
	s, detail := sendCode(t, fake.HTTPConfig(), "http")
	require.JSONEq(t, `{"id":"sms-1"}`, detail)
	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "Bearer "+fake.APIKey, reqs[0].Header.Get("Authorization"))
	require.Equal(t, "application/json", reqs[0].Header.Get("Content-Type"))
	var body map[string]string
	require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
	require.Equal(t, map[string]string{"to": "+393331234567", "from": "Tether", "text": "Your code is 1234", "message_id": "m1"}, body)

	// The provider refuses: its status and answer are the detail.
	fake.Script(waketest.SMSReply{Status: 500, Body: `{"error":"carrier down"}`})
	requireRejected(t, s, wake.SMS{To: "+393331234567", From: "Acme", Text: "x", MessageID: "m2"}, `HTTP 500: {"error":"carrier down"}`)
	require.Equal(t, "Acme", fake.Requests()[1].From)

	// Any 2xx is success, whatever the body.
	fake.Script(waketest.SMSReply{Status: 200})
	_, detail, err := s.Send(ctx, wake.SMS{To: "+1555", Text: "x", MessageID: "m3"})
	require.NoError(t, err)
	require.Equal(t, "HTTP 200", detail)

	// A wrong key is a rejection.
	bad := newAdapter(t, wake.NewSMSSender, fake.HTTPConfig(), func(c *wake.SMSConfig) { c.APIKey = "wrong" })
	requireRejected(t, bad, wake.SMS{To: "+1555", Text: "x"}, `HTTP 401: {"error":"invalid api key"}`)

	_, _, err = s.Send(ctx, wake.SMS{Text: "x"})
	require.ErrorIs(t, err, wake.ErrInvalidTarget)
}

func TestSMSVonage(t *testing.T) {
	t.Parallel()
	fake := waketest.NewSMS(t)
	ctx := context.Background()
	s, detail := sendCode(t, fake.VonageConfig(), "vonage")
	require.Equal(t, "0A00000000000001", detail, "the Vonage message-id")
	r := fake.Requests()[0]
	require.Equal(t, "vonage", r.Provider)
	require.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	require.Equal(t, fake.APIKey, r.Form.Get("api_key"))
	require.Equal(t, fake.APISecret, r.Form.Get("api_secret"))
	require.Equal(t, "393331234567", r.Form.Get("to"), "digits only")
	require.Equal(t, "Tether", r.Form.Get("from"))
	require.Equal(t, "Your code is 1234", r.Form.Get("text"))
	require.Equal(t, "m1", r.Form.Get("client-ref"))
	require.Empty(t, r.Form.Get("type"))

	// Non-ASCII text goes as unicode.
	_, _, err := s.Send(ctx, wake.SMS{To: "+393331234567", Text: "Il tuo codice è 1234 ✓"})
	require.NoError(t, err)
	r = fake.Requests()[1]
	require.Equal(t, "unicode", r.Form.Get("type"))
	require.Equal(t, "Il tuo codice è 1234 ✓", r.Form.Get("text"))

	// A non-zero status fails with Vonage's error-text (HTTP is still 200).
	fake.Script(waketest.SMSReply{VonageStatus: "9", ErrorText: "Partner quota exceeded"})
	requireRejected(t, s, wake.SMS{To: "+393331234567", Text: "x"}, "Partner quota exceeded (status 9)")

	// An HTTP error is a rejection too.
	fake.Script(waketest.SMSReply{Status: 502, Body: "bad gateway"})
	requireRejected(t, s, wake.SMS{To: "+393331234567", Text: "x"}, "HTTP 502: bad gateway")

	// Wrong credentials: Vonage's own answer.
	bad := newAdapter(t, wake.NewSMSSender, fake.VonageConfig(), func(c *wake.SMSConfig) { c.APISecret = "wrong" })
	requireRejected(t, bad, wake.SMS{To: "+393331234567", Text: "x"}, "Bad Credentials (status 4)")
}

func TestSMSUnreachable(t *testing.T) {
	t.Parallel()
	addr := deadAddr(t)
	for _, cfg := range []wake.SMSConfig{
		{Provider: "http", URL: "http://" + addr + "/send", APIKey: "k"},
		{Provider: "vonage", URL: "http://" + addr, APIKey: "k", APISecret: "s"},
	} {
		s := newSMS(t, cfg)
		provider, detail, err := s.Send(context.Background(), wake.SMS{To: "+1555", Text: "x"})
		require.ErrorIs(t, err, wake.ErrUnreachable)
		require.Equal(t, cfg.Provider, provider)
		require.Equal(t, "unreachable", detail)
		retry, _ := wake.SMSRetryable(err)
		require.True(t, retry, "no answer: worth another try")
	}
}

func TestSMSBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []wake.SMSConfig{
		{},
		{Provider: "twilio", URL: "https://example.com"},
		{Provider: "http"},
		{Provider: "http", URL: "example.com/send"},
		{Provider: "vonage", APIKey: "k"},
		{Provider: "vonage", APISecret: "s"},
		{Provider: "vonage", APIKey: "k", APISecret: "s", URL: "rest.nexmo.com"},
	} {
		s, err := wake.NewSMSSender(cfg)
		require.ErrorIs(t, err, wake.ErrConfig, "%+v", cfg)
		require.Nil(t, s)
	}
	s, err := wake.NewSMSSender(wake.SMSConfig{Provider: "vonage", APIKey: "k", APISecret: "s"})
	require.NoError(t, err, "the default Vonage URL")
	s.Close()
}

// TestSMSRetryable: the answers after which the gateway sends the same SMS
// again (the provider is down, overloaded or throttling, with its
// Retry-After) and those after which it must not (a refusal of this
// message, or a Vonage text of which some part already went out).
func TestSMSRetryable(t *testing.T) {
	t.Parallel()
	fake := waketest.NewSMS(t)
	ctx := context.Background()
	cases := []struct {
		name      string
		cfg       wake.SMSConfig
		reply     waketest.SMSReply
		retry     bool
		after     time.Duration
		wantInErr error
	}{
		{"http 503 with Retry-After", fake.HTTPConfig(), waketest.SMSReply{Status: 503, Body: "busy", RetryAfter: "120"}, true, 2 * time.Minute, wake.ErrSMSTryLater},
		{"http 429", fake.HTTPConfig(), waketest.SMSReply{Status: 429, Body: "slow down"}, true, 0, wake.ErrSMSTryLater},
		{"http 500", fake.HTTPConfig(), waketest.SMSReply{Status: 500}, true, 0, wake.ErrSMSTryLater},
		{"http 408", fake.HTTPConfig(), waketest.SMSReply{Status: 408}, true, 0, wake.ErrSMSTryLater},
		{"http 400", fake.HTTPConfig(), waketest.SMSReply{Status: 400, Body: "bad number"}, false, 0, wake.ErrSMSRejected},
		{"http 402", fake.HTTPConfig(), waketest.SMSReply{Status: 402}, false, 0, wake.ErrSMSRejected},
		{"vonage throttled", fake.VonageConfig(), waketest.SMSReply{VonageStatus: "1", ErrorText: "Throttled"}, true, 0, wake.ErrSMSTryLater},
		{"vonage internal error", fake.VonageConfig(), waketest.SMSReply{VonageStatus: "5", ErrorText: "Internal Error"}, true, 0, wake.ErrSMSTryLater},
		{"vonage 503", fake.VonageConfig(), waketest.SMSReply{Status: 503, Body: "down", RetryAfter: "7"}, true, 7 * time.Second, wake.ErrSMSTryLater},
		{"vonage invalid number", fake.VonageConfig(), waketest.SMSReply{VonageStatus: "3", ErrorText: "Invalid to"}, false, 0, wake.ErrSMSRejected},
	}
	for _, tc := range cases {
		s := newSMS(t, tc.cfg)
		fake.Script(tc.reply)
		_, _, err := s.Send(ctx, wake.SMS{To: "+393331234567", Text: "x", MessageID: "m1"})
		require.ErrorIs(t, err, tc.wantInErr, tc.name)
		require.ErrorIs(t, err, wake.ErrSMSRejected, tc.name)
		retry, after := wake.SMSRetryable(err)
		require.Equal(t, tc.retry, retry, tc.name)
		require.Equal(t, tc.after, after, tc.name)
	}
	retry, _ := wake.SMSRetryable(nil)
	require.False(t, retry)
}

// TestSMSVonagePartlySent: a long text of which Vonage took one part and
// throttled the next fails without a retry, which would send the first
// part twice.
func TestSMSVonagePartlySent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"message-count":"2","messages":[{"status":"0","message-id":"A1"},{"status":"1","error-text":"Throttled"}]}`)
	}))
	t.Cleanup(srv.Close)
	s := newSMS(t, wake.SMSConfig{Provider: "vonage", URL: srv.URL, APIKey: "k", APISecret: "s", From: "T"})
	_, detail, err := s.Send(context.Background(), wake.SMS{To: "+393331234567", Text: "long"})
	require.ErrorIs(t, err, wake.ErrSMSRejected)
	require.Equal(t, "Throttled (status 1)", detail)
	retry, _ := wake.SMSRetryable(err)
	require.False(t, retry)
}
