package main

// Operator-surface tests of the admin CLI: errors from things in front of
// the gateway, bad URLs, wrong credentials and usage mistakes.

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/internal/gatewaytest"
)

func opsNoPanic(t *testing.T, r result) {
	t.Helper()
	require.NotContains(t, r.stderr, "panic")
	require.NotContains(t, r.stderr, "goroutine ")
}

// TestOpsAdminTransportErrors: a proxy's HTML error page, a URL without
// a scheme and a self-signed HTTPS listener each give exit status 1, a
// message on stderr and nothing on stdout.
func TestOpsAdminTransportErrors(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
	}))
	defer proxy.Close()
	for _, args := range [][]string{{"app", "list"}, {"-o", "json", "stats"}, {"app", "create", "x"}} {
		r := fails(t, map[string]string{"TETHER_URL": proxy.URL, "TETHER_ADMIN_TOKEN": "tok-0123456789abcdef"}, 1, args...)
		require.Contains(t, r.stderr, "502", "%q", args)
		require.Empty(t, r.stdout)
		opsNoPanic(t, r)
	}

	r := fails(t, map[string]string{"TETHER_URL": "127.0.0.1:1", "TETHER_ADMIN_TOKEN": "tok-0123456789abcdef"}, 1, "app", "list")
	require.NotEmpty(t, r.stderr)
	require.Empty(t, r.stdout)
	opsNoPanic(t, r)

	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	r = fails(t, map[string]string{"TETHER_URL": tlsSrv.URL, "TETHER_ADMIN_TOKEN": "tok-0123456789abcdef"}, 1, "stats")
	require.Contains(t, r.stderr, "certificate")
	opsNoPanic(t, r)
}

// TestOpsAdminAgainstGateway: every mistake an operator makes against a
// running gateway gives the documented exit status (1 error, 2 usage),
// and a base URL with a trailing slash works.
func TestOpsAdminAgainstGateway(t *testing.T) {
	g := gatewaytest.Start(t)
	env := map[string]string{"TETHER_URL": g.URL + "/", "TETHER_ADMIN_TOKEN": g.AdminToken}
	ok(t, env, "app", "create", "demo")
	ok(t, env, "user", "create", "demo", "alice", "--password", "alice-password-1")
	out := ok(t, env, "stats")
	require.Contains(t, out, "version")

	// A token file holding another node's token: 401, exit 1.
	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "admin-token"), []byte("tadm_not-this-node\n"), 0o600))
	r := fails(t, map[string]string{"TETHER_URL": g.URL}, 1, "--data-dir", other, "app", "list")
	require.Contains(t, r.stderr, "[HTTP 401]")
	// TETHER_DATA_DIR is read the same way.
	r = fails(t, map[string]string{"TETHER_URL": g.URL, "TETHER_DATA_DIR": other}, 1, "stats")
	require.Contains(t, r.stderr, "[HTTP 401]")
	// An empty token file.
	empty := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(empty, "admin-token"), []byte("\n"), 0o600))
	r = fails(t, map[string]string{"TETHER_URL": g.URL}, 1, "--data-dir", empty, "stats")
	require.Contains(t, r.stderr, "empty")

	// Things that do not exist: exit 1 with the server's not_found.
	for _, args := range [][]string{
		{"app", "delete", "nope"},
		{"key", "rotate", "nope"},
		{"app", "set", "nope", "--name", "x"},
		{"status", "demo", "01NOSUCHMESSAGE"},
		{"cancel", "demo", "01NOSUCHMESSAGE"},
		{"device", "list", "demo", "ghost"},
	} {
		r := fails(t, env, 1, args...)
		require.Contains(t, r.stderr, "not_found", "%q", args)
		require.Empty(t, r.stdout, "%q", args)
		opsNoPanic(t, r)
	}

	// Usage mistakes: exit 2, no request needed.
	for _, args := range [][]string{
		{"stats", "extra"},
		{"key", "rotate"},
		{"user", "create", "demo"},
		{"events", "demo", "--limit", "abc"},
		{"send", "demo", "alice", "--expires-in", "soon"},
		{"device", "register", "demo", "alice", "phone", "--provider"},
		{"app", "set", "demo", "--reject-unknown-users=maybe"},
		{"--output"},
		{"-o", "xml", "stats"},
	} {
		r := admin(t, env, args...)
		require.Equal(t, 2, r.code, "admin %q\nstderr: %s", args, r.stderr)
		require.NotEmpty(t, strings.TrimSpace(r.stderr), "%q", args)
		opsNoPanic(t, r)
	}

	// A server-side validation error is exit 1 and names the field.
	r = fails(t, env, 1, "send", "demo", "alice", "--body", "x", "--priority", "urgent")
	require.Contains(t, r.stderr, "priority")

	// After the gateway stops: exit 1, a connection error.
	g.Stop()
	r = fails(t, env, 1, "app", "list")
	require.Contains(t, r.stderr, "connect")
}
