package gateway_test

import (
	"crypto/tls"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

func TestAppRateLimit(t *testing.T) {
	// The manual clock stands still: the bucket refills only when the
	// test moves it, however slowly the requests go.
	g := gatewaytest.Start(t, gatewaytest.WithManualClock(time.Now()), gatewaytest.WithConfig(func(c *gateway.Config) { c.AppRateLimit = 5 }))
	app := g.App(t, "acme")
	other := g.App(t, "other")
	limited := 0
	for range 30 {
		code, h, body := rawDo(t, "GET", g.URL+"/v1/apps/acme", app.Token, nil, nil)
		if code == http.StatusTooManyRequests {
			limited++
			require.Contains(t, string(body), `"code":"rate_limited"`)
			s, err := strconv.Atoi(h.Get("Retry-After"))
			require.NoError(t, err)
			require.GreaterOrEqual(t, s, 1)
		} else {
			require.Equal(t, 200, code)
		}
	}
	require.Equal(t, 20, limited, "a burst of 10, then 429s")
	g.Clock.Advance(time.Second) // 5 more at 5/s
	for i := range 6 {
		code, _, _ := rawDo(t, "GET", g.URL+"/v1/apps/acme", app.Token, nil, nil)
		if i < 5 {
			require.Equal(t, 200, code, "request %d a second later", i)
		} else {
			require.Equal(t, http.StatusTooManyRequests, code, "the sixth a second later")
		}
	}
	// Another app and the admin token are not held back by acme's limit.
	code, _, _ := rawDo(t, "GET", g.URL+"/v1/apps/other", other.Token, nil, nil)
	require.Equal(t, 200, code)
	code, _, _ = rawDo(t, "GET", g.URL+"/v1/apps/acme", g.AdminToken, nil, nil)
	require.Equal(t, 200, code)
}

func TestSessionCaps(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.WithConfig(func(c *gateway.Config) { c.MaxSessionsPerUser = 2 }))
	ctx := ctxT(t)
	app := g.App(t, "acme")
	_, err := app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "alice-password"})
	require.NoError(t, err)
	dial := func(device string) (*sdkproto.Client, error) {
		return sdkproto.Dial(ctx, sdkproto.Config{Addr: g.XMPPSAddr, App: "acme", User: "alice", Password: "alice-password",
			Device: device, TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	}
	c1, err := dial("d1")
	require.NoError(t, err)
	defer c1.Close()
	c2, err := dial("d2")
	require.NoError(t, err)
	defer c2.Close()
	_, err = dial("d3")
	require.Error(t, err)
	require.Contains(t, err.Error(), "resource-constraint")
	// Binding an already online device replaces it and is not refused.
	c2b, err := dial("d2")
	require.NoError(t, err)
	defer c2b.Close()
}
