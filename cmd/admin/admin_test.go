package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
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

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// admin runs the CLI in-process with env as its whole environment.
func admin(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// ok runs the CLI and requires success.
func ok(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	r := admin(t, env, args...)
	require.Equal(t, 0, r.code, "admin %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	return r.stdout
}

// okJSON runs the CLI with -o json and decodes its output into v.
func okJSON(t *testing.T, env map[string]string, v any, args ...string) {
	t.Helper()
	out := ok(t, env, append([]string{"-o", "json"}, args...)...)
	require.NoError(t, json.Unmarshal([]byte(out), v), "output of admin -o json %s:\n%s", strings.Join(args, " "), out)
}

// fails runs the CLI and requires exit status code.
func fails(t *testing.T, env map[string]string, code int, args ...string) result {
	t.Helper()
	r := admin(t, env, args...)
	require.Equal(t, code, r.code, "admin %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	return r
}

// field returns the value of a "key   value" line of key/value output.
func field(t *testing.T, out, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `\s+(\S.*?)\s*$`).FindStringSubmatch(out)
	require.NotNil(t, m, "no %q line in:\n%s", key, out)
	return m[1]
}

func writeAPNsKey(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "AuthKey_ABC123DEFG.p8")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return p
}

func writeServiceAccount(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	require.NoError(t, err)
	sa, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "demo-proj",
		"private_key_id": "abc",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "tether@demo-proj.iam.gserviceaccount.com",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "service-account.json")
	require.NoError(t, os.WriteFile(p, sa, 0o600))
	return p
}

// TestTour walks the whole admin workflow against a real gateway.
func TestTour(t *testing.T) {
	g := gatewaytest.Start(t)
	env := map[string]string{"TETHER_URL": g.URL, "TETHER_ADMIN_TOKEN": g.AdminToken}

	// app create, human and JSON.
	out := ok(t, env, "app", "create", "demo", "--name", "Demo")
	require.Equal(t, "demo", field(t, out, "id"))
	require.Equal(t, "Demo", field(t, out, "name"))
	require.Equal(t, "demo.localhost", field(t, out, "xmpp_domain"))
	demoKey := field(t, out, "api_key")
	require.NotEmpty(t, demoKey)
	require.Contains(t, out, "shown only once")
	var other api.App
	okJSON(t, env, &other, "app", "create", "other")
	require.Equal(t, "other", other.ID)
	require.NotEmpty(t, other.APIKey)

	// app list.
	out = ok(t, env, "app", "list")
	require.Regexp(t, `(?m)^ID\s+NAME\s+XMPP DOMAIN`, out)
	require.Regexp(t, `(?m)^demo\s+Demo\s+demo\.localhost\s`, out)
	require.Regexp(t, `(?m)^other\s+other\s+other\.localhost\s`, out)
	var apps []api.App
	okJSON(t, env, &apps, "app", "list")
	require.Len(t, apps, 2)

	// app set with every kind of setting; flags after the positional APP.
	keyFile, saFile := writeAPNsKey(t), writeServiceAccount(t)
	out = ok(t, env, "app", "set", "demo",
		"--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret", "s3cret",
		"--apns-key-file", keyFile, "--apns-key-id", "ABC123DEFG", "--apns-team-id", "TEAM123456",
		"--apns-topic", "com.example.demo", "--apns-environment", "sandbox", "--apns-wake", "background",
		"--fcm-service-account-file", saFile,
		"--sms-provider", "http", "--sms-url", "http://127.0.0.1:9/sms", "--sms-api-key", "k", "--sms-from", "Demo",
		"--expires-in", "3600", "--wake-interval", "30", "--fallback-after-high", "60",
		"--reject-unknown-users", "--client-config", `{"theme":"dark"}`)
	require.Contains(t, field(t, out, "webhook"), "url=http://127.0.0.1:9/hook")
	require.Contains(t, field(t, out, "webhook"), "secret=set")
	require.Contains(t, field(t, out, "apns"), "key_p8=set")
	require.Contains(t, field(t, out, "apns"), "environment=sandbox")
	require.Contains(t, field(t, out, "fcm"), "project_id=demo-proj")
	require.Contains(t, field(t, out, "sms"), "provider=http")
	require.Equal(t, "3600", field(t, out, "defaults.expires_in"))
	require.Equal(t, "high=60", field(t, out, "defaults.fallback_after"))
	require.Equal(t, "true", field(t, out, "defaults.reject_unknown_users"))
	require.Equal(t, `{"theme":"dark"}`, field(t, out, "client_config"))
	require.NotContains(t, out, "s3cret")
	require.NotContains(t, out, "PRIVATE KEY")

	// app show.
	var shown api.App
	okJSON(t, env, &shown, "app", "show", "demo")
	require.NotNil(t, shown.APNS)
	require.True(t, shown.APNS.KeyP8.Set)
	require.Equal(t, "ABC123DEFG", shown.APNS.KeyID)
	require.Equal(t, "background", shown.APNS.Wake)
	require.NotNil(t, shown.FCM)
	require.True(t, shown.FCM.ServiceAccountJSON.Set)
	require.NotNil(t, shown.SMS)
	require.True(t, shown.SMS.APIKey.Set)
	require.NotNil(t, shown.Defaults.WakeInterval)
	require.EqualValues(t, 30, *shown.Defaults.WakeInterval)
	require.JSONEq(t, `{"theme":"dark"}`, string(shown.ClientConfig))
	out = ok(t, env, "app", "show", "demo")
	require.Equal(t, "Demo", field(t, out, "name"))

	// user create (generated and chosen password), user show.
	out = ok(t, env, "user", "create", "demo", "alice")
	require.Equal(t, "alice@demo.localhost", field(t, out, "jid"))
	require.NotEmpty(t, field(t, out, "password"))
	var bob api.User
	okJSON(t, env, &bob, "user", "create", "demo", "bob+1=x", "--password", "correct-horse")
	require.Equal(t, "bob+1=x", bob.User)
	require.Equal(t, "bob+1=x@demo.localhost", bob.JID)
	out = ok(t, env, "user", "show", "demo", "alice")
	require.Equal(t, "alice", field(t, out, "user"))
	require.NotContains(t, out, "password")

	// device register, device list.
	out = ok(t, env, "device", "register", "demo", "alice", "phone1",
		"--provider", "apns", "--token", "abcdef0123456789", "--topic", "com.example.demo", "--environment", "sandbox")
	require.Regexp(t, `(?m)^phone1\s+no\s+-\s+\S+\s+apns …456789\s*$`, out)
	var devs []api.Device
	okJSON(t, env, &devs, "device", "list", "demo", "alice")
	require.Len(t, devs, 1)
	require.Equal(t, "phone1", devs[0].Device)
	require.Equal(t, "apns", devs[0].Push.Provider)
	out = ok(t, env, "device", "list", "demo", "alice")
	require.Regexp(t, `(?m)^DEVICE\s+ONLINE\s+TRANSPORT\s+LAST SEEN\s+PUSH\s*$`, out)
	require.Contains(t, out, "phone1")

	// send: flags interleaved with recipients; idempotent repeat.
	sendArgs := []string{"send", "demo", "alice", "--body", "hello", "bob+1=x/tablet",
		"--data", `{"order":4711}`, "--priority", "high", "--expires-in", "600",
		"--sms-to", "+393331234567", "--ref", "crm-4711", "--channel", "alerts",
		"--collapse-key", "otp", "--delivery", "any", "--idempotency-key", "idem-1"}
	out = ok(t, env, sendArgs...)
	rows := regexp.MustCompile(`(?m)^(\S+)\s+(alice|bob\+1=x/tablet)\s+enqueued\s*$`).FindAllStringSubmatch(out, -1)
	require.Len(t, rows, 2, "send output:\n%s", out)
	aliceMsg := rows[0][1]
	var again api.SendResponse
	okJSON(t, env, &again, sendArgs...)
	require.Len(t, again.Messages, 2)
	require.Equal(t, aliceMsg, again.Messages[0].ID, "the same Idempotency-Key returns the first answer")
	require.Equal(t, rows[1][1], again.Messages[1].ID)

	// reject_unknown_users is on: an unknown user is refused with the server's message.
	r := fails(t, env, 1, "send", "demo", "ghost", "--body", "boo")
	require.Contains(t, r.stderr, "not_found")
	require.Contains(t, r.stderr, "ghost")

	// status.
	out = ok(t, env, "status", "demo", aliceMsg)
	require.Equal(t, aliceMsg, field(t, out, "id"))
	require.Equal(t, "alice", field(t, out, "to"))
	require.Equal(t, "enqueued", field(t, out, "status"))
	require.Equal(t, "crm-4711", field(t, out, "ref"))
	require.Contains(t, field(t, out, "fallback"), "to=+393331234567")
	var st api.MessageStatus
	okJSON(t, env, &st, "status", "demo", aliceMsg)
	require.Equal(t, "enqueued", st.Status)
	require.WithinDuration(t, st.CreatedAt.Add(600*time.Second), st.ExpiresAt, time.Second)

	// events before anything happened: a table and a cursor.
	out = ok(t, env, "events", "demo")
	require.Regexp(t, `(?m)^AT\s+TYPE\s+USER\s+DEVICE\s+MESSAGE\s+DETAIL\s*$`, out)
	require.Regexp(t, `(?m)^next: \S+$`, out)

	// events --follow in the background, as JSON lines.
	followCtx, stopFollow := context.WithCancel(context.Background())
	defer stopFollow()
	var follow gatewaytest.SyncBuffer
	var followErr bytes.Buffer
	followDone := make(chan int, 1)
	go func() {
		followDone <- run(followCtx, []string{"events", "demo", "--follow", "-o", "json"}, &follow, &followErr,
			func(k string) string { return env[k] })
	}()

	// cancel, then cancel again: 409.
	out = ok(t, env, "cancel", "demo", aliceMsg)
	require.Equal(t, "message "+aliceMsg+": cancelled\n", out)
	r = fails(t, env, 1, "cancel", "demo", aliceMsg)
	require.Contains(t, r.stderr, "conflict")
	require.Contains(t, r.stderr, "[HTTP 409]")
	okJSON(t, env, &st, "status", "demo", aliceMsg)
	require.Equal(t, "cancelled", st.Status)

	// events: the cancellation is in the feed (long-poll until it is).
	var cancelled *api.Event
	cursor := ""
	for deadline := time.Now().Add(10 * time.Second); cancelled == nil && time.Now().Before(deadline); {
		var page api.EventsResponse
		args := []string{"events", "demo", "--wait", "2"}
		if cursor != "" {
			args = append(args, "--after", cursor)
		}
		okJSON(t, env, &page, args...)
		for _, raw := range page.Events {
			var e api.Event
			require.NoError(t, json.Unmarshal(raw, &e))
			if e.Type == "message.cancelled" && e.MessageID == aliceMsg {
				cancelled = &e
			}
		}
		cursor = page.Next
	}
	require.NotNil(t, cancelled, "no message.cancelled event")
	require.Equal(t, "crm-4711", cancelled.Ref)
	out = ok(t, env, "events", "demo", "--limit", "1000")
	require.Regexp(t, `(?m)^\S+\s+message\.cancelled\s+alice\s+\S+\s+`+regexp.QuoteMeta(aliceMsg)+`\s`, out)

	// The follower printed the same event as one JSON line, and stops
	// cleanly when interrupted.
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(follow.String(), "\n") {
			var e api.Event
			if json.Unmarshal([]byte(line), &e) == nil && e.Type == "message.cancelled" && e.MessageID == aliceMsg {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "events --follow output:\n%s", follow.String())
	stopFollow()
	select {
	case code := <-followDone:
		require.Equal(t, 0, code, "events --follow stderr: %s", followErr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("events --follow did not stop when interrupted")
	}

	// key rotate; then the app key alone (no admin token) reaches the app.
	out = ok(t, env, "key", "rotate", "demo")
	newKey := field(t, out, "api_key")
	require.NotEqual(t, demoKey, newKey)
	require.NotEqual(t, "-", field(t, out, "previous_valid_until"))
	keyEnv := map[string]string{"TETHER_URL": g.URL, "TETHER_API_KEY": newKey}
	out = ok(t, keyEnv, "app", "show", "demo")
	require.Equal(t, "demo", field(t, out, "id"))
	out = ok(t, map[string]string{"TETHER_URL": g.URL}, "--api-key", demoKey, "user", "show", "demo", "alice")
	require.Equal(t, "alice", field(t, out, "user"), "the previous key works during the grace period")
	r = fails(t, keyEnv, 1, "app", "show", "other")
	require.Contains(t, r.stderr, "not_found")
	r = fails(t, keyEnv, 1, "stats")
	require.Contains(t, r.stderr, "permission_denied")

	// stats, with the token read from --data-dir.
	dirEnv := map[string]string{"TETHER_URL": g.URL}
	out = ok(t, dirEnv, "--data-dir", g.DataDir, "stats")
	require.Equal(t, "2", field(t, out, "apps"))
	var stats api.Stats
	okJSON(t, dirEnv, &stats, "stats", "--data-dir", g.DataDir)
	require.Equal(t, 2, stats.Apps)
	require.NotEmpty(t, stats.Version)

	// deletes.
	out = ok(t, env, "device", "delete", "demo", "alice", "phone1")
	require.Contains(t, out, "deleted device phone1")
	okJSON(t, env, &devs, "device", "list", "demo", "alice")
	require.Empty(t, devs)
	out = ok(t, env, "user", "delete", "demo", "bob+1=x")
	require.Contains(t, out, "deleted user bob+1=x")
	r = fails(t, env, 1, "user", "show", "demo", "bob+1=x")
	require.Contains(t, r.stderr, "not_found")
	out = ok(t, env, "app", "delete", "demo")
	require.Equal(t, "deleted app demo\n", out)
	r = fails(t, env, 1, "app", "show", "demo")
	require.Contains(t, r.stderr, "not_found")
	require.Empty(t, r.stdout)
	okJSON(t, env, &apps, "app", "list")
	require.Len(t, apps, 1)
}

func TestErrors(t *testing.T) {
	g := gatewaytest.Start(t)
	env := map[string]string{"TETHER_URL": g.URL, "TETHER_ADMIN_TOKEN": g.AdminToken}
	ok(t, env, "app", "create", "demo")

	t.Run("wrong token", func(t *testing.T) {
		// The CLI prints what the server said.
		_, err := api.NewClient(g.URL, "wrong").ListApps(context.Background())
		var ae *api.Error
		require.True(t, errors.As(err, &ae), "%v", err)
		for _, args := range [][]string{{"app", "list"}, {"-o", "json", "app", "list"}} {
			r := fails(t, map[string]string{"TETHER_URL": g.URL, "TETHER_ADMIN_TOKEN": "wrong"}, 1, args...)
			require.Contains(t, r.stderr, "unauthenticated: "+ae.Message)
			require.Contains(t, r.stderr, "[HTTP 401]")
			require.Empty(t, r.stdout)
		}
	})
	t.Run("unknown app", func(t *testing.T) {
		r := fails(t, env, 1, "app", "show", "nope")
		require.Regexp(t, `^admin: not_found: .*nope.*\[HTTP 404\]\n$`, r.stderr)
		r = fails(t, env, 1, "send", "nope", "alice", "--body", "hi")
		require.Contains(t, r.stderr, "not_found")
	})
	t.Run("field", func(t *testing.T) {
		r := fails(t, env, 1, "send", "demo", "alice", "--body", "hi", "--expires-in", "99999999")
		require.Contains(t, r.stderr, "invalid_argument")
		require.Contains(t, r.stderr, "(field expires_in)")
		r = fails(t, env, 1, "app", "set", "demo", "--webhook-url", "ftp://example.com")
		require.Contains(t, r.stderr, "(field webhook.url)")
	})
	t.Run("bad data JSON makes no request", func(t *testing.T) {
		var hits atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
		defer srv.Close()
		badEnv := map[string]string{"TETHER_URL": srv.URL, "TETHER_ADMIN_TOKEN": g.AdminToken}
		r := admin(t, badEnv, "send", "demo", "alice", "--data", `{"broken":`)
		require.NotEqual(t, 0, r.code)
		require.Contains(t, r.stderr, "--data: invalid JSON")
		r = admin(t, badEnv, "app", "set", "demo", "--client-config", `nope`)
		require.NotEqual(t, 0, r.code)
		require.Contains(t, r.stderr, "--client-config: invalid JSON")
		require.Zero(t, hits.Load(), "no request may be made")
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{},
			{"bogus"},
			{"app"},
			{"app", "frobnicate"},
			{"app", "show"},
			{"app", "show", "a", "b"},
			{"app", "set", "demo"},
			{"send", "demo"},
			{"send", "demo", "alice", "--no-such-flag"},
			{"send", "demo", "alice", "--sms-text", "x"},
			{"device", "register", "demo", "alice", "phone1", "--token", "t"},
			{"-o", "yaml", "app", "list"},
		} {
			r := admin(t, env, args...)
			require.Equal(t, 2, r.code, "admin %q: %s", args, r.stderr)
			require.NotEmpty(t, r.stderr)
		}
		out := ok(t, env, "help")
		for name := range commands {
			require.Regexp(t, `(?m)^  `+regexp.QuoteMeta(name)+`( |$)`, out, "usage lists %q", name)
		}
		require.Equal(t, 0, admin(t, env, "send", "-h").code)
	})
	t.Run("no credentials", func(t *testing.T) {
		r := fails(t, map[string]string{"TETHER_URL": g.URL}, 1, "app", "list")
		require.Contains(t, r.stderr, "no credentials")
		r = fails(t, map[string]string{"TETHER_URL": g.URL}, 1, "--data-dir", t.TempDir(), "app", "list")
		require.Contains(t, r.stderr, "admin-token")
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		r := fails(t, map[string]string{"TETHER_URL": url, "TETHER_ADMIN_TOKEN": "x"}, 1, "app", "list")
		require.Contains(t, r.stderr, "connect")
	})
}

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantBody string
		wantF    bool
	}{
		{[]string{"demo", "alice", "--body", "hi"}, []string{"demo", "alice"}, "hi", false},
		{[]string{"--body=hi", "demo", "-f", "alice"}, []string{"demo", "alice"}, "hi", true},
		{[]string{"demo", "--body", "-x-", "alice", "--f=false"}, []string{"demo", "alice"}, "-x-", false},
		{[]string{"demo", "--", "--body", "-"}, []string{"demo", "--body", "-"}, "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		body := fs.String("body", "", "")
		f := fs.Bool("f", false, "")
		pos, err := parseInterleaved(fs, tc.args)
		require.NoError(t, err, "%q", tc.args)
		require.Equal(t, tc.wantPos, pos, "%q", tc.args)
		require.Equal(t, tc.wantBody, *body, "%q", tc.args)
		require.Equal(t, tc.wantF, *f, "%q", tc.args)
	}
}
