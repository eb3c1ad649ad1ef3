package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"tether/gateway/api"
	"tether/sdkproto"
)

// newAPIClient returns a REST client for the admin token with conns
// keep-alive connections. An https URL is verified with the roots in
// caPEM (-ca-file), or not at all without one, as the XMPP side does.
func newAPIClient(baseURL, token string, conns int, caPEM string) *api.Client {
	c := api.NewClient(baseURL, token)
	c.UserAgent = "tether-loadtest/1"
	tc := caTLSConfig(caPEM)
	c.HTTP = &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 30 * time.Second, DisableCompression: true, TLSClientConfig: tc,
	}}
	return c
}

// newPostClient returns the message generator's REST client: as
// newAPIClient, over a postTransport with conns connections.
func newPostClient(baseURL, token string, conns int, caPEM string) (*api.Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("gateway URL %q: %w", baseURL, err)
	}
	var tc *tls.Config
	port := "80"
	switch u.Scheme {
	case "http":
	case "https":
		tc, port = caTLSConfig(caPEM), "443"
		tc.ServerName = u.Hostname()
	default:
		return nil, fmt.Errorf("gateway URL %q: not http or https", baseURL)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	c := api.NewClient(baseURL, token)
	c.UserAgent = "tether-loadtest/1"
	c.HTTP = &http.Client{Transport: newPostTransport(net.JoinHostPort(u.Hostname(), port), tc, conns)}
	return c, nil
}

// setupApp creates the app and points its push settings at the fakes.
// created reports whether the app exists now (to be deleted), even when
// configuring it failed.
func setupApp(ctx context.Context, cl *api.Client, app string, fk *fakes, wakeInterval int, webhook *api.WebhookConfig) (created bool, err error) {
	if _, err := cl.CreateApp(ctx, api.CreateAppRequest{ID: app, Name: "Tether soak " + app}); err != nil {
		return false, fmt.Errorf("create app %s: %w", app, err)
	}
	wi := int64(wakeInterval)
	_, err = cl.PatchApp(ctx, app, api.PatchAppRequest{
		APNS: &api.APNSConfig{KeyP8: fk.apns.KeyP8, KeyID: fk.apns.KeyID, TeamID: fk.apns.TeamID,
			Topic: fk.apns.Topic, Endpoint: fk.apns.URL},
		FCM:      &api.FCMConfig{ServiceAccountJSON: fk.fcm.ServiceAccountJSON, Endpoint: fk.fcm.Endpoint()},
		Defaults: &api.Defaults{WakeInterval: &wi},
		Webhook:  webhook,
	})
	if err != nil {
		return true, fmt.Errorf("configure app %s: %w", app, err)
	}
	return true, nil
}

// setupFleet creates every user and device, so each device is known (a
// target of its user's messages) before the first message: offline-share
// devices with their push registration, the others without (they register
// over XMPP when they log in).
func setupFleet(ctx context.Context, cl *api.Client, app, password string, f *fleet, topic string, report func(string)) error {
	do := func(n int, what string, one func(ctx context.Context, i int) error) error {
		var next, done atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		start := time.Now()
		stopTick := make(chan struct{})
		go func() {
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					report(fmt.Sprintf("setup: %d of %d %s", done.Load(), n, what))
				case <-stopTick:
					return
				}
			}
		}()
		for range 32 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n || ctx.Err() != nil {
						return
					}
					var err error
					for attempt := range 4 {
						cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
						err = one(cctx, i)
						cancel()
						var ae *api.Error
						if err == nil || (errors.As(err, &ae) && ae.Status < 500 && ae.Status != 429) {
							break
						}
						time.Sleep(time.Duration(200<<attempt) * time.Millisecond) // transient: retry
					}
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		close(stopTick)
		if firstErr != nil {
			return firstErr
		}
		report(fmt.Sprintf("setup: %d %s in %.1fs", n, what, time.Since(start).Seconds()))
		return ctx.Err()
	}
	err := do(f.Users, "users", func(ctx context.Context, u int) error {
		_, err := cl.PutUser(ctx, app, userName(u), api.PutUserRequest{Password: password})
		return err
	})
	if err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	err = do(f.N, "devices", func(ctx context.Context, k int) error {
		var req api.PutDeviceRequest
		if f.isOffline(k) {
			p := &api.PushRegistration{Provider: f.pushProvider(k), Token: f.pushToken(k)}
			if p.Provider == "apns" {
				p.Topic = topic
			}
			req.Push = p
		}
		_, err := cl.PutDevice(ctx, app, userName(f.user(k)), deviceName(k), req)
		return err
	})
	if err != nil {
		return fmt.Errorf("create devices: %w", err)
	}
	return nil
}

// checkXMPP checks that a remote gateway's direct-TLS address completes a
// TLS handshake the workers would accept (caPEM: -ca-file; none: not
// verified), and that its STARTTLS address accepts a connection: a wrong
// port or certificate is a setup error, not thousands of failed logins
// reported as lost messages.
//
// The name checked is an app domain under the SDK's default base domain
// ("check.localhost"), as the workers' clients check "<app>.localhost".
func checkXMPP(ctx context.Context, addr, startTLSAddr, caPEM string) error {
	if addr != "" {
		tc := caTLSConfig(caPEM)
		if !tc.InsecureSkipVerify {
			tc.ServerName = "check." + sdkproto.DefaultDomain
		}
		d := tls.Dialer{Config: tc}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("-addr %s (direct TLS): %w", addr, err)
		}
		c.Close()
	}
	if startTLSAddr != "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", startTLSAddr)
		if err != nil {
			return fmt.Errorf("-starttls-addr %s: %w", startTLSAddr, err)
		}
		c.Close()
	}
	return nil
}

// caTLSConfig verifies with the roots in caPEM (-ca-file, checked in
// startTarget), or not at all without one: loopback only.
func caTLSConfig(caPEM string) *tls.Config {
	if caPEM == "" {
		return &tls.Config{InsecureSkipVerify: true}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	return &tls.Config{RootCAs: pool}
}
