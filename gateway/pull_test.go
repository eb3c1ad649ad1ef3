package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
)

func pull(t *testing.T, method, url, login, pass, device string, body any) (int, []byte) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	req.SetBasicAuth(login, pass)
	if device != "" {
		req.Header.Set("Tether-Device", device)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func TestDeviceHTTPPull(t *testing.T) {
	g := gatewaytest.Start(t)
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "correct horse"})
	require.NoError(t, err)
	msgs := g.URL + "/v1/device/messages"
	acks := g.URL + "/v1/device/acks"

	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "pull me", Data: []byte(`{"k":"v"}`), Channel: "alerts", Priority: "high"}, "")
	require.NoError(t, err)
	id := res.Messages[0].ID

	code, body := pull(t, "GET", msgs, "alice@acme", "correct horse", "web1", nil)
	require.Equal(t, 200, code, "%s", body)
	var pr api.PullResponse
	require.NoError(t, json.Unmarshal(body, &pr))
	require.Len(t, pr.Messages, 1)
	m := pr.Messages[0]
	require.Equal(t, id, m.ID)
	require.Equal(t, "pull me", m.Body)
	require.JSONEq(t, `{"k":"v"}`, string(m.Data))
	require.Equal(t, "alerts", m.Channel)
	require.Equal(t, "high", m.Priority)
	st, err := app.GetMessage(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, "sent", st.Status)

	// Not acknowledged: returned again, same id.
	code, body = pull(t, "GET", msgs, "alice@acme", "correct horse", "web1", nil)
	require.Equal(t, 200, code)
	require.Contains(t, string(body), id)

	code, body = pull(t, "POST", acks, "alice@acme", "correct horse", "web1", api.AcksRequest{Delivered: []string{id}})
	require.Equal(t, 204, code, "%s", body)
	st, _ = app.GetMessage(ctx, "acme", id)
	require.Equal(t, "delivered", st.Status)
	code, _ = pull(t, "POST", acks, "alice@acme", "correct horse", "web1", api.AcksRequest{Read: []string{id}})
	require.Equal(t, 204, code)
	st, _ = app.GetMessage(ctx, "acme", id)
	require.Equal(t, "read", st.Status)
	require.Equal(t, "web1", st.Devices[0].Device)

	code, body = pull(t, "GET", msgs, "alice@acme", "correct horse", "web1", nil)
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"messages":[]}`, string(body))

	// Long poll: returns when a message arrives.
	done := make(chan []byte, 1)
	go func() {
		_, b := pull(t, "GET", msgs+"?wait=20", "alice@acme", "correct horse", "web1", nil)
		done <- b
	}()
	// Wait until the poller is subscribed (the device shows as seen), then send.
	time.Sleep(100 * time.Millisecond) // let the long poll start; the assertion below does not depend on it
	res2, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "second"}, "")
	require.NoError(t, err)
	select {
	case b := <-done:
		require.Contains(t, string(b), res2.Messages[0].ID)
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not return")
	}

	// Bad credentials and input.
	code, body = pull(t, "GET", msgs, "alice@acme", "wrong", "web1", nil)
	require.Equal(t, 401, code, "%s", body)
	code, _ = pull(t, "GET", msgs, "alice@other", "correct horse", "web1", nil)
	require.Equal(t, 401, code)
	code, body = pull(t, "GET", msgs, "alice@acme", "correct horse", "", nil)
	require.Equal(t, 400, code, "%s", body)
	require.Contains(t, string(body), "Tether-Device")
	code, _ = pull(t, "POST", acks, "alice@acme", "correct horse", "web1", map[string]any{"delivered": "x"})
	require.Equal(t, 400, code)

	// Failed logins are throttled like XMPP logins: after 5, even the
	// right password waits (429), while another user is not held back.
	_, err = app.PutUser(ctx, "acme", "bob", api.PutUserRequest{Password: "bob-password"})
	require.NoError(t, err)
	for range 5 {
		code, _ = pull(t, "GET", msgs, "alice@acme", "wrong", "web1", nil)
		require.Equal(t, 401, code)
	}
	code, _ = pull(t, "GET", msgs, "alice@acme", "correct horse", "web1", nil)
	require.Equal(t, 429, code)
	code, _ = pull(t, "GET", msgs, "bob@acme", "bob-password", "web1", nil)
	require.Equal(t, 200, code)
}
