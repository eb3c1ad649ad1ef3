package main

// Operator-surface tests of the gateway binary: the test binary re-executes
// itself as the real main() (flags, env, signals, exit status, logs).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/internal/gatewaytest"
)

const opsMainEnv = "OPSEDGE_GATEWAY_MAIN"

// TestMain runs the gateway's main() instead of the tests when the test
// binary is started as a child by opsRun/opsStart.
func TestMain(m *testing.M) {
	if os.Getenv(opsMainEnv) == "1" {
		os.Args = append([]string{"gateway"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// opsEnv is the child's environment: the test's, without TETHER_*
// variables, plus extra.
func opsEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TETHER_") {
			env = append(env, kv)
		}
	}
	return append(append(env, opsMainEnv+"=1"), extra...)
}

// opsRun runs the gateway to completion (for commands that exit by
// themselves) and returns its exit status, stdout and stderr.
func opsRun(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = opsEnv(env...)
	cmd.Dir = t.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, out.String(), errb.String()
}

// opsProc is a running gateway process.
type opsProc struct {
	cmd    *exec.Cmd
	stderr *gatewaytest.SyncBuffer
	done   chan struct{}
	err    error
	addrs  map[string]string // listener name → address
}

var opsListenRE = regexp.MustCompile(`"listener":\s*"(\w+)",\s*"addr":\s*"([^"]+)"`)

// opsLoopback sets every listener to a free loopback port.
var opsLoopback = []string{"--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--xmpp-addr", "127.0.0.1:0",
	"--xmpps-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}

// opsStart starts the gateway and waits until it logged "ready" and
// /readyz answers 200. The test's cleanup kills it if it still runs.
func opsStart(t *testing.T, env []string, args ...string) *opsProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = opsEnv(env...)
	cmd.Dir = t.TempDir()
	p := &opsProc{cmd: cmd, stderr: &gatewaytest.SyncBuffer{}, done: make(chan struct{}), addrs: map[string]string{}}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	require.NoError(t, cmd.Start())
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !regexp.MustCompile(`(?m)\bready\b`).MatchString(p.stderr.String()) {
		select {
		case <-p.done:
			t.Fatalf("gateway exited before ready: %v\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond): // polling the log for "ready"
		}
		require.True(t, time.Now().Before(deadline), "gateway not ready after 30s:\n%s", p.stderr.String())
	}
	for _, m := range opsListenRE.FindAllStringSubmatch(p.stderr.String(), -1) {
		p.addrs[m[1]] = m[2]
	}
	if a := p.addrs["http"]; a != "" {
		opsWaitStatus(t, "http://"+a+"/readyz", 200)
	}
	return p
}

// stop sends sig and waits for the exit (at most within). It returns the
// exit error and how long the exit took.
func (p *opsProc) stop(t *testing.T, sig os.Signal, within time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(sig))
	select {
	case <-p.done:
		return p.err, time.Since(start)
	case <-time.After(within):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("gateway did not exit within %v of %v; log:\n%s", within, sig, p.stderr.String())
		return p.err, time.Since(start)
	}
}

// opsWaitStatus polls url until it answers want (10 s).
func opsWaitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond) // polling a probe
	}
	t.Fatalf("%s: want %d, last %s", url, want, last)
}

// opsDo makes a request with a bearer token and returns status and body.
func opsDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func opsNoPanic(t *testing.T, stderr string) {
	t.Helper()
	require.NotContains(t, stderr, "panic:")
	require.NotContains(t, stderr, "goroutine ")
}

// TestOpsBadValuesExit2: a bad flag or variable value stops the gateway
// with status 2 and a message naming the setting, never a panic, and binds
// nothing.
func TestOpsBadValuesExit2(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"negative max-sessions flag", nil, []string{"--max-sessions", "-1"}, "max-sessions"},
		{"max-sessions-per-user not a number", nil, []string{"--max-sessions-per-user", "ten"}, "max-sessions-per-user"},
		{"negative rate env", []string{"TETHER_APP_RATE_LIMIT=-5"}, nil, "app-rate-limit"},
		{"rate NaN-ish", nil, []string{"--app-rate-limit", "fast"}, "app-rate-limit"},
		{"dev not a boolean env", []string{"TETHER_DEV=maybe"}, nil, "dev"},
		{"log level", []string{"TETHER_LOG_LEVEL=loud"}, nil, "log-level"},
		{"gc percent", nil, []string{"--gc-percent", "1.5"}, "gc-percent"},
		{"procs not a number env", []string{"TETHER_PROCS=all"}, nil, "procs"},
		{"addr without port", nil, []string{"--http-addr", "localhost"}, "http-addr"},
		{"negative max-sessions env", []string{"TETHER_MAX_SESSIONS=-3"}, nil, "max-sessions"},
		{"cert without key", nil, []string{"--tls-cert", "/nonexistent/cert.pem"}, "tls-key"},
		{"short admin token env", []string{"TETHER_ADMIN_TOKEN=short"}, nil, "admin-token"},
		{"bad domain", nil, []string{"--domain", "Bad_Domain"}, "domain"},
		{"unknown flag", nil, []string{"--no-such-flag"}, "no-such-flag"},
		{"positional argument", nil, []string{"serve"}, "serve"},
		{"missing config file", nil, []string{"--config", "/nonexistent/tether.yaml"}, "config file"},
		{"missing config file via env", []string{"TETHER_CONFIG=/nonexistent/tether.yaml"}, nil, "config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := opsRun(t, tc.env, append(append([]string{}, opsLoopback...), tc.args...)...)
			require.Equal(t, 2, code, "stderr:\n%s", stderr)
			require.Contains(t, stderr, "gateway:")
			require.Contains(t, stderr, tc.want)
			opsNoPanic(t, stderr)
			require.NotContains(t, stderr, `"listening"`, "nothing may be bound on a bad configuration")
		})
	}
}

// TestOpsCheckConfigCatchesBadPorts: --check-config must report an
// address whose port can never be bound (docs: "reports every error at
// once, exit status 2 on any"), and a normal start with it must fail
// cleanly rather than serve.
func TestOpsCheckConfigCatchesBadPorts(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:notaport"} {
		t.Run(addr, func(t *testing.T) {
			code, stdout, stderr := opsRun(t, nil, append(append([]string{}, opsLoopback...), "--check-config", "--http-addr", addr)...)
			require.Equal(t, 2, code, "--check-config accepted http-addr %s; stdout: %s stderr: %s", addr, stdout, stderr)
			require.Contains(t, stderr, "http-addr")
			require.NotContains(t, stdout, "configuration OK")
		})
	}
}

// TestOpsHelp: --help lists every setting of SPEC section 2 and the
// operations guide, with its variable, and is not an error.
func TestOpsHelp(t *testing.T) {
	code, stdout, stderr := opsRun(t, nil, "--help")
	out := stdout + stderr
	for _, s := range []string{"data-dir", "domain", "http-addr", "https-addr", "xmpp-addr", "xmpps-addr", "metrics-addr",
		"tls-cert", "tls-key", "admin-token", "provider-ca-file", "app-rate-limit", "max-sessions-per-user", "max-sessions",
		"gc-percent", "procs", "dev", "log-level", "config", "print-config", "check-config"} {
		require.Regexp(t, `(?m)^\s+-`+regexp.QuoteMeta(s)+`\b`, out, "--help lists --%s", s)
	}
	require.Contains(t, out, "TETHER_METRICS_ADDR")
	opsNoPanic(t, out)
	require.Equal(t, 0, code, "--help asked for help; it is not an error:\n%s", out)
	require.NotContains(t, out, "help requested")
}

// TestOpsPrecedenceThroughProcess: flag > env > file > default through
// the real process environment, TETHER_CONFIG naming the file, and
// --print-config hides a secret that came from the environment.
func TestOpsPrecedenceThroughProcess(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tether.yaml")
	require.NoError(t, os.WriteFile(file, []byte("domain: file.example\nxmpp-addr: 127.0.0.1:7102\nmax-sessions: 7\nlog-level: warn\nmetrics-addr: 127.0.0.1:7103\n"), 0o600))
	secret := "env-secret-admin-token-123"
	code, stdout, stderr := opsRun(t, []string{
		"TETHER_CONFIG=" + file,
		"TETHER_XMPP_ADDR=127.0.0.1:7202",
		"TETHER_MAX_SESSIONS=9",
		"TETHER_HTTPS_ADDR=",
		"TETHER_ADMIN_TOKEN=" + secret,
		"TETHER_DATA_DIR=" + filepath.Join(dir, "d"),
	}, "--print-config", "--max-sessions", "11")
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{
		"domain: file.example   # file",
		"xmpp-addr: 127.0.0.1:7202   # env TETHER_XMPP_ADDR",
		"max-sessions: \"11\"   # flag",
		"https-addr: \"\"   # env TETHER_HTTPS_ADDR",
		"log-level: warn   # file",
		"metrics-addr: 127.0.0.1:7103   # file",
		"xmpps-addr: :5223   # default",
		"data-dir: " + filepath.Join(dir, "d") + "   # env TETHER_DATA_DIR",
		"admin-token: \"<set>\"   # env TETHER_ADMIN_TOKEN",
	} {
		if !strings.Contains(stdout, want) {
			// max-sessions may be printed unquoted: accept both forms.
			alt := strings.Replace(want, `"11"`, "11", 1)
			require.Contains(t, stdout, alt, "print-config:\n%s", stdout)
		}
	}
	require.NotContains(t, stdout+stderr, secret)

	// --check-config on the same environment says OK and exits 0.
	code, stdout, stderr = opsRun(t, []string{"TETHER_CONFIG=" + file}, "--check-config")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "configuration OK")
}

// TestOpsDevTwoStarts: --dev on an empty data dir creates app demo,
// prints its key, the XMPP domain and a curl example that works; the data
// dir holds what the guide lists with the listed modes; a second start on
// the same dir prints a key that still works and the same admin token; each
// SIGTERM exits 0.
func TestOpsDevTwoStarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	args := append([]string{"--dev", "--data-dir", dir}, opsLoopback...)
	keyRE := regexp.MustCompile(`API key:\s+(\S+)`)
	tokRE := regexp.MustCompile(`admin token:\s+(\S+)`)

	var keys, toks []string
	for run := range 2 {
		p := opsStart(t, nil, args...)
		log := p.stderr.String()
		m := keyRE.FindStringSubmatch(log)
		require.NotNil(t, m, "run %d: no API key printed:\n%s", run, log)
		key := m[1]
		tm := tokRE.FindStringSubmatch(log)
		require.NotNil(t, tm, "run %d: no admin token in the dev banner:\n%s", run, log)
		keys, toks = append(keys, key), append(toks, tm[1])
		require.Contains(t, log, "XMPP domain: demo.localhost")
		require.Contains(t, log, "curl")
		base := "http://" + p.addrs["http"]
		require.Contains(t, log, base+"/v1/apps/demo/messages", "the curl example names the real address")

		// The printed example works.
		code, body := opsDo(t, http.MethodPut, base+"/v1/apps/demo/users/alice", key, "")
		require.Contains(t, []int{200, 201}, code, "run %d: PUT user with the printed key: %s", run, body)
		code, body = opsDo(t, http.MethodPost, base+"/v1/apps/demo/messages", key, `{"to":["alice"],"body":"hello"}`)
		require.Equal(t, 202, code, "run %d: send with the printed key: %s", run, body)
		code, body = opsDo(t, http.MethodGet, base+"/v1/stats", tm[1], "")
		require.Equal(t, 200, code, "run %d: the printed admin token works: %s", run, body)

		// Both health endpoints, on the REST and the metrics listener.
		opsWaitStatus(t, base+"/healthz", 200)
		opsWaitStatus(t, "http://"+p.addrs["metrics"]+"/healthz", 200)

		err, took := p.stop(t, syscall.SIGTERM, 20*time.Second)
		require.NoError(t, err, "exit status after SIGTERM; log:\n%s", p.stderr.String())
		require.Less(t, took, 15*time.Second)
		opsNoPanic(t, p.stderr.String())
	}
	require.Equal(t, toks[0], toks[1], "the admin token is generated once")

	// The data dir is what operations.md lists, with its modes.
	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "data dir mode")
	for name, mode := range map[string]os.FileMode{"admin-token": 0o600, "tls-key.pem": 0o600, "demo-api-key": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Equal(t, mode, st.Mode().Perm(), name)
	}
	_, err = os.Stat(filepath.Join(dir, "tls-cert.pem"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, "store"))
	require.NoError(t, err)
}

// TestOpsDevKeyAfterRotation: an operator rotates the demo app's key
// (admin CLI "key rotate demo"), then the key rotates again so the first
// one is gone; on the next --dev start the banner must not print a dead key.
func TestOpsDevKeyAfterRecreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	args := append([]string{"--dev", "--data-dir", dir}, opsLoopback...)
	keyRE := regexp.MustCompile(`API key:\s+(\S+)`)
	p := opsStart(t, nil, args...)
	base := "http://" + p.addrs["http"]
	tok := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(dir, "admin-token")))))
	// The operator deletes the demo app and creates it again (a fresh key).
	code, body := opsDo(t, http.MethodDelete, base+"/v1/apps/demo", tok, "")
	require.Contains(t, []int{200, 204}, code, body)
	code, body = opsDo(t, http.MethodPost, base+"/v1/apps", tok, `{"id":"demo"}`)
	require.Equal(t, 201, code, body)
	err, _ := p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)

	p = opsStart(t, nil, args...)
	m := keyRE.FindStringSubmatch(p.stderr.String())
	require.NotNil(t, m, p.stderr.String())
	base = "http://" + p.addrs["http"]
	code, body = opsDo(t, http.MethodPut, base+"/v1/apps/demo/users/alice", m[1], "")
	require.Contains(t, []int{200, 201}, code, "the key the --dev banner printed does not work: %s", body)
	err, _ = p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestOpsGeneratedTokenPrintedOnce: without --dev the generated admin
// token is printed on the first start only, and the JSON log lines never
// hold it.
func TestOpsGeneratedTokenPrintedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	args := append([]string{"--data-dir", dir}, opsLoopback...)
	p := opsStart(t, nil, args...)
	tok := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(dir, "admin-token")))))
	require.True(t, strings.HasPrefix(tok, "tadm_"), tok)
	log := p.stderr.String()
	require.Contains(t, log, tok, "first start prints the generated token")
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "{") {
			require.NotContains(t, line, tok, "a JSON log line holds the admin token")
		}
	}
	err, _ := p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
	p = opsStart(t, nil, args...)
	err, _ = p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
	require.NotContains(t, p.stderr.String(), tok, "second start printed the token again")
	// Production logs are JSON lines.
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		require.True(t, json.Valid([]byte(line)), "not a JSON log line: %q", line)
	}
}

// TestOpsStartFailures: a port in use, a data dir that is a file and a
// second gateway on the same data dir each stop with a non-zero status and
// a message saying why, not a panic.
func TestOpsStartFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	dir := t.TempDir()
	args := append(append([]string{}, opsLoopback...), "--data-dir", filepath.Join(dir, "a"), "--http-addr", busy.Addr().String())
	code, _, stderr := opsRun(t, nil, args...)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "address already in use")
	require.Contains(t, stderr, busy.Addr().String())
	opsNoPanic(t, stderr)

	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	code, _, stderr = opsRun(t, nil, append(append([]string{}, opsLoopback...), "--data-dir", file)...)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "data dir")
	opsNoPanic(t, stderr)

	shared := filepath.Join(dir, "shared")
	p := opsStart(t, nil, append(append([]string{}, opsLoopback...), "--data-dir", shared)...)
	code, _, stderr = opsRun(t, nil, append(append([]string{}, opsLoopback...), "--data-dir", shared)...)
	require.NotEqual(t, 0, code, "a second gateway on the same data dir must refuse to start")
	require.Regexp(t, `(?i)lock`, stderr)
	opsNoPanic(t, stderr)
	err, _ = p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
}

func opsWriteCert(t *testing.T, certFile, keyFile, cn string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost", "*.localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return serial
}

func opsSerial(t *testing.T, addr string) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	require.NoError(t, err)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestOpsSIGHUPThroughMain: the binary's SIGHUP handler reloads the
// certificate on every TLS listener; files that do not load keep the old
// certificate, log "TLS reload failed", and the process keeps serving.
func TestOpsSIGHUPThroughMain(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := opsWriteCert(t, certFile, keyFile, "first")
	p := opsStart(t, []string{"TETHER_TLS_CERT=" + certFile, "TETHER_TLS_KEY=" + keyFile},
		append(append([]string{}, opsLoopback...), "--data-dir", filepath.Join(dir, "data"))...)
	for _, l := range []string{"https", "xmpps"} {
		require.Equal(t, first, opsSerial(t, p.addrs[l]), l)
	}

	// Broken files: the old certificate stays.
	require.NoError(t, os.WriteFile(certFile, []byte("not a certificate"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "TLS reload failed") {
		require.True(t, time.Now().Before(deadline), "no \"TLS reload failed\" in the log:\n%s", p.stderr.String())
		time.Sleep(20 * time.Millisecond) // polling the log
	}
	for _, l := range []string{"https", "xmpps"} {
		require.Equal(t, first, opsSerial(t, p.addrs[l]), l)
	}

	// Good files again: every TLS listener serves the new one.
	second := opsWriteCert(t, certFile, keyFile, "second")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	for _, l := range []string{"https", "xmpps"} {
		deadline := time.Now().Add(10 * time.Second)
		for opsSerial(t, p.addrs[l]).Cmp(second) != 0 {
			require.True(t, time.Now().Before(deadline), "%s still serves the old certificate", l)
			time.Sleep(20 * time.Millisecond) // waiting for the signal to be handled
		}
	}
	err, _ := p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
}

// TestOpsTLSMinimumVersion: every TLS listener (8443, 5223, STARTTLS
// on 5222) refuses TLS 1.1 and accepts TLS 1.2.
func TestOpsTLSMinimumVersion(t *testing.T) {
	tok := "ops-edge-admin-token-0123456789"
	p := opsStart(t, []string{"TETHER_ADMIN_TOKEN=" + tok}, append(append([]string{}, opsLoopback...), "--data-dir", filepath.Join(t.TempDir(), "data"))...)
	code, body := opsDo(t, http.MethodPost, "http://"+p.addrs["http"]+"/v1/apps", tok, `{"id":"acme"}`)
	require.Equal(t, 201, code, body)
	dial := func(addr string, starttls bool, v uint16) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if starttls {
			fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`)
			if err := opsReadUntil(c, "</stream:features>"); err != nil {
				return fmt.Errorf("features: %w", err)
			}
			fmt.Fprintf(c, `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`)
			if err := opsReadUntil(c, "<proceed"); err != nil {
				return fmt.Errorf("proceed: %w", err)
			}
		}
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", MinVersion: v, MaxVersion: v})
		return tc.Handshake()
	}
	for _, l := range []struct {
		name     string
		starttls bool
	}{{"https", false}, {"xmpps", false}, {"xmpp", true}} {
		require.NoError(t, dial(p.addrs[l.name], l.starttls, tls.VersionTLS12), "%s: TLS 1.2", l.name)
		require.Error(t, dial(p.addrs[l.name], l.starttls, tls.VersionTLS11), "%s accepted TLS 1.1", l.name)
	}
	err, _ := p.stop(t, syscall.SIGTERM, 20*time.Second)
	require.NoError(t, err)
}

func opsReadUntil(c net.Conn, marker string) error {
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(marker)) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return fmt.Errorf("%w (got %q)", err, got)
		}
	}
	return nil
}

// TestOpsSIGTERMWithLongPolls: SIGTERM while a device HTTP pull and an
// events long-poll wait: the gateway answers them and exits promptly (the
// docs promise a drain; a long-poll that is only waiting must not hold
// the process for the whole 15 s bound and starve the webhook drain).
func TestOpsSIGTERMWithLongPolls(t *testing.T) {
	tok := "ops-edge-admin-token-0123456789"
	p := opsStart(t, []string{"TETHER_ADMIN_TOKEN=" + tok},
		append(append([]string{}, opsLoopback...), "--data-dir", filepath.Join(t.TempDir(), "data"))...)
	base := "http://" + p.addrs["http"]
	code, body := opsDo(t, http.MethodPost, base+"/v1/apps", tok, `{"id":"acme"}`)
	require.Equal(t, 201, code, body)
	code, body = opsDo(t, http.MethodPut, base+"/v1/apps/acme/users/alice", tok, `{"password":"alice-password-1"}`)
	require.Contains(t, []int{200, 201}, code, body)

	type answer struct {
		code int
		err  error
	}
	pull := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/device/messages?wait=60", nil)
		req.SetBasicAuth("alice@acme", "alice-password-1")
		req.Header.Set("Tether-Device", "phone")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			pull <- answer{err: err}
			return
		}
		resp.Body.Close()
		pull <- answer{code: resp.StatusCode}
	}()
	events := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/apps/acme/events?wait=60", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			events <- answer{err: err}
			return
		}
		resp.Body.Close()
		events <- answer{code: resp.StatusCode}
	}()
	// The pull is in flight once its device is recorded (touchDevice).
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := opsDo(t, http.MethodGet, base+"/v1/apps/acme/users/alice/devices", tok, "")
		if code == 200 && strings.Contains(body, "phone") {
			break
		}
		require.True(t, time.Now().Before(deadline), "the pull request never reached the gateway: %d %s", code, body)
		time.Sleep(20 * time.Millisecond) // polling for the long-poll to be in flight
	}
	err, took := p.stop(t, syscall.SIGTERM, 30*time.Second)
	require.NoError(t, err, "exit status; log:\n%s", p.stderr.String())
	t.Logf("exit %v after SIGTERM", took)
	for name, ch := range map[string]chan answer{"pull": pull, "events": events} {
		select {
		case a := <-ch:
			t.Logf("%s long-poll: %d %v", name, a.code, a.err)
		case <-time.After(5 * time.Second):
			t.Errorf("%s long-poll got no answer", name)
		}
	}
	require.Less(t, took, 5*time.Second, "SIGTERM with idle long-polls in flight took %v (the whole shutdown bound); log:\n%s", took, p.stderr.String())
	require.NotContains(t, p.stderr.String(), "requests still running at the deadline")
}

// TestOpsProcs: the gateway's process runs the runtime's choice of Ps
// plus a spare one by default, exactly --procs when given, and leaves
// GOMAXPROCS from the environment and --procs -1 alone; the setting shows
// in go_sched_gomaxprocs_threads on /metrics.
func TestOpsProcs(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set for the tests; the children would inherit it")
	}
	procsOf := func(env []string, args ...string) int {
		t.Helper()
		p := opsStart(t, env, append(append([]string{"--data-dir", t.TempDir(), "--log-level", "info"}, opsLoopback...), args...)...)
		code, body := opsDo(t, "GET", "http://"+p.addrs["metrics"]+"/metrics", "", "")
		require.Equal(t, 200, code)
		m := regexp.MustCompile(`(?m)^go_sched_gomaxprocs_threads (\d+)$`).FindStringSubmatch(body)
		require.NotNil(t, m, "/metrics has no go_sched_gomaxprocs_threads")
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		p.stop(t, syscall.SIGTERM, 10*time.Second)
		return n
	}
	own := procsOf(nil, "--procs", "-1") // the runtime's choice
	want := own + 1
	if own < runtime.NumCPU() {
		want = own // a CPU quota chose it: no spare P
	}
	require.Equal(t, want, procsOf(nil), "default")
	require.Equal(t, 5, procsOf([]string{"TETHER_PROCS=5"}), "TETHER_PROCS=5")
	require.Equal(t, 1, procsOf([]string{"GOMAXPROCS=1"}), "GOMAXPROCS=1 in the environment stands")
	require.Equal(t, 7, procsOf([]string{"GOMAXPROCS=1"}, "--procs", "7"), "--procs over GOMAXPROCS")
}
