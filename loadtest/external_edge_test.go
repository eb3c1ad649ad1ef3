package main

// Edge cases of a run against a gateway the harness did not start
// (-url/-addr/-admin-token), seen as a load tester pointing the harness at
// their own deployment. The "gateway" here is a small fake REST server on
// loopback (httptest), so each test runs in a few seconds without a
// gateway binary; the harness runs in process (parseFlags + run).

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
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/internal/gatewaytest"
)

// fakeRemote is a minimal Tether REST API: /readyz answers ready, app
// creation and every other call succeed unless told otherwise, and every
// request is recorded.
type fakeRemote struct {
	mu           sync.Mutex
	reqs         []string // "METHOD /path"
	createStatus int      // POST /v1/apps answers this error status (0: 201)
	patchStatus  int      // PATCH /v1/apps/{app} answers this error status (0: 200)
}

func (f *fakeRemote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
	createStatus, patchStatus := f.createStatus, f.patchStatus
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fail := func(code int) {
		w.WriteHeader(code)
		io.WriteString(w, `{"error":{"code":"internal","message":"fake gateway says no"}}`)
	}
	switch {
	case r.URL.Path == "/readyz" || r.URL.Path == "/healthz":
		io.WriteString(w, `{"status":"ready"}`)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/apps":
		if createStatus != 0 {
			fail(createStatus)
			return
		}
		var req struct {
			ID string `json:"id"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]string{"id": req.ID, "name": req.ID})
	case r.Method == http.MethodPatch && patchStatus != 0:
		fail(patchStatus)
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		io.WriteString(w, `{}`)
	}
}

func (f *fakeRemote) saw(req string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reqs {
		if r == req {
			return true
		}
	}
	return false
}

// quietTLSServer is httptest.NewTLSServer without logging the handshakes
// the harness refuses.
func quietTLSServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	return srv
}

// closedLoopbackAddr returns a loopback address nothing listens on.
func closedLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writePEMCert writes cert as a PEM file and returns its path.
func writePEMCert(t *testing.T, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// unrelatedCert returns a fresh self-signed certificate for 127.0.0.1
// that no server here uses.
func unrelatedCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "not the gateway"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// runExternal parses args as the command line and runs the harness in
// process; it fails the test if the run has not returned within limit.
func runExternal(t *testing.T, limit time.Duration, args ...string) (code int, out string, took time.Duration) {
	t.Helper()
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags %v: %v", args, err)
	}
	var buf gatewaytest.SyncBuffer
	done := make(chan int, 1)
	start := time.Now()
	go func() { done <- run(context.Background(), cfg, &buf, &buf) }()
	select {
	case code = <-done:
		return code, buf.String(), time.Since(start)
	case <-time.After(limit):
		t.Fatalf("the run had not ended after %v (a hang?); output so far:\n%s", limit, buf.String())
		return 0, "", 0
	}
}

const extToken = "ext-admin-token-SECRET-0123456789"

// TestExternalHTTPSURLHonoursCAFile: README and -url accept an https://
// REST URL, and -ca-file is "PEM to verify its TLS certificate". A gateway
// serving REST over TLS with a certificate -ca-file names must pass the
// readiness check and get the app created; the harness's REST client must
// not refuse it as signed by an unknown authority.
func TestExternalHTTPSURLHonoursCAFile(t *testing.T) {
	fk := &fakeRemote{createStatus: http.StatusUnauthorized} // stop right after the first admin call
	srv := quietTLSServer(fk)
	defer srv.Close()
	ca := writePEMCert(t, srv.Certificate().Raw)
	xaddr, xcert := xmppStub(t)
	b, _ := os.ReadFile(ca)
	os.WriteFile(ca, append(b, xcert...), 0o600) // the REST and the XMPP certificates
	code, out, _ := runExternal(t, 20*time.Second,
		"-url", srv.URL, "-addr", xaddr, "-admin-token", extToken, "-ca-file", ca,
		"-sessions", "2", "-users", "1", "-fanout-share", "0", "-d", "1s", "-rate", "1", "-out", t.TempDir())
	if !fk.saw("POST /v1/apps") || strings.Contains(out, "x509") {
		t.Errorf("https -url with the server's certificate in -ca-file: the harness never reached POST /v1/apps (exit %d); output:\n%s", code, out)
	}
}

// TestExternalPartialSetupCleansUp: the app is created, then configuring
// it fails (a 500 from a loaded deployment). The harness must delete the
// app it created, or at least say it left it behind; it must not leave
// data in the user's deployment silently.
func TestExternalPartialSetupCleansUp(t *testing.T) {
	fk := &fakeRemote{patchStatus: http.StatusInternalServerError}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	const app = "ext-partial-setup"
	code, out, _ := runExternal(t, 20*time.Second,
		"-url", srv.URL, "-addr", xmppStubAddr(t), "-admin-token", extToken, "-app", app,
		"-sessions", "2", "-users", "1", "-fanout-share", "0", "-d", "1s", "-rate", "1", "-out", t.TempDir())
	if code != exitSetup {
		t.Errorf("exit %d, want %d (setup error)", code, exitSetup)
	}
	deleted := fk.saw("DELETE /v1/apps/" + app)
	said := regexp.MustCompile(`(?i)` + app + `.*(left|not deleted|remains|delete it)`).MatchString(out)
	if !deleted && !said {
		t.Errorf("app %s was created, its configuration failed, and it was neither deleted nor reported as left behind; output:\n%s", app, out)
	}
}

// TestExternalBadCAFileIsSetupError: a -ca-file that holds no certificate
// is a usage/setup error (exit 2) that names the file, found before the
// harness creates anything on the gateway; not a failed soak (exit 1).
func TestExternalBadCAFileIsSetupError(t *testing.T) {
	fk := &fakeRemote{}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	bad := filepath.Join(t.TempDir(), "not-a-cert.pem")
	os.WriteFile(bad, []byte("this is not PEM\n"), 0o644)
	code, out, _ := runExternal(t, 20*time.Second,
		"-url", srv.URL, "-addr", closedLoopbackAddr(t), "-admin-token", extToken, "-ca-file", bad,
		"-sessions", "2", "-users", "1", "-fanout-share", "0", "-d", "1s", "-rate", "1", "-out", t.TempDir())
	if code != exitSetup || !strings.Contains(out, bad) {
		t.Errorf("-ca-file without a certificate: exit %d (want %d) and an error naming %s; output:\n%s", code, exitSetup, bad, out)
	}
	if fk.saw("POST /v1/apps") {
		t.Errorf("the harness created an app before finding -ca-file unusable")
	}
}

// TestExternalUnreachableXMPPAddr: -addr names a port nothing listens on
// (a typo). /readyz on -url answers, so only a check of -addr itself can
// tell. The harness should stop quickly with a setup error naming the
// address, not run the whole soak and report the messages its own
// devices could not receive as "lost" by the gateway.
func TestExternalUnreachableXMPPAddr(t *testing.T) {
	fk := &fakeRemote{}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	addr := closedLoopbackAddr(t)
	code, out, took := runExternal(t, 25*time.Second,
		"-url", srv.URL, "-addr", addr, "-admin-token", extToken,
		"-sessions", "4", "-users", "2", "-fanout-share", "0", "-offline", "0", "-tls", "1", "-starttls", "0", "-ws", "0",
		"-d", "2s", "-rate", "1", "-deadline", "12s", "-out", t.TempDir())
	if code != exitSetup || !strings.Contains(out, addr) || took > 8*time.Second {
		t.Errorf("-addr %s unreachable: exit %d after %v, want %d within a few seconds with an error naming the address; output:\n%s",
			addr, code, took.Round(time.Millisecond), exitSetup, out)
	}
}

// TestExternalUntrustedXMPPCert: the XMPP listener's certificate is not
// the one -ca-file names (a wrong -ca-file). Every TLS login fails the
// same way; that is a setup error to report at once (exit 2, saying the
// certificate is not trusted), not a soak that fails on lost messages.
func TestExternalUntrustedXMPPCert(t *testing.T) {
	fk := &fakeRemote{}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	xmpps := quietTLSServer(http.NotFoundHandler()) // a TLS listener with httptest's own certificate
	defer xmpps.Close()
	addr := xmpps.Listener.Addr().String()
	ca := writePEMCert(t, unrelatedCert(t))
	code, out, took := runExternal(t, 25*time.Second,
		"-url", srv.URL, "-addr", addr, "-admin-token", extToken, "-ca-file", ca,
		"-sessions", "4", "-users", "2", "-fanout-share", "0", "-offline", "0", "-tls", "1", "-starttls", "0", "-ws", "0",
		"-d", "2s", "-rate", "1", "-deadline", "12s", "-out", t.TempDir())
	if code != exitSetup || !strings.Contains(out, "certificate") || took > 8*time.Second {
		t.Errorf("untrusted XMPP certificate: exit %d after %v, want %d within a few seconds saying the certificate is not trusted; output:\n%s",
			code, took.Round(time.Millisecond), exitSetup, out)
	}
}

// TestExternalReportOmitsAdminToken: a small run that completes against
// the fake (every device offline, no messages), then the report files:
// they must not contain the admin token (configMap leaves it out on
// purpose, so the command line must too), report.json must parse, and
// report.html must reference nothing over http(s) but the command's own
// text. Without -metrics-url the gateway's RSS is unknown, which the text
// must not give as 0 MiB "from -metrics-url".
func TestExternalReportOmitsAdminToken(t *testing.T) {
	fk := &fakeRemote{}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	outDir := t.TempDir()
	args := []string{"-url", srv.URL, "-addr", xmppStubAddr(t), "-admin-token", extToken,
		"-sessions", "1", "-users", "1", "-fanout-share", "0", "-offline", "1", "-rate", "0", "-d", "1s", "-drain", "1s", "-out", outDir}
	saved := os.Args
	os.Args = append([]string{"loadtest"}, args...) // the report quotes the command line
	defer func() { os.Args = saved }()
	code, out, _ := runExternal(t, 30*time.Second, args...)
	if code != exitPass {
		t.Fatalf("exit %d, want %d; output:\n%s", code, exitPass, out)
	}
	for _, name := range []string{"report.txt", "report.json", "report.html"} {
		b, err := os.ReadFile(filepath.Join(outDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(extToken)) {
			t.Errorf("%s contains the admin token", name)
		}
		switch name {
		case "report.json":
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("report.json: %v", err)
			}
		case "report.html":
			for _, m := range regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?https?://|@import|url\(\s*["']?https?://|<script|<link`).FindAll(b, -1) {
				t.Errorf("report.html fetches or runs something: %q", m)
			}
		case "report.txt":
			if regexp.MustCompile(`RSS 0 MiB before the sessions.*\(from -metrics-url\)`).Match(b) {
				t.Errorf("report.txt gives the gateway's RSS as 0 MiB from -metrics-url, which was not given:\n%s", b)
			}
		}
	}
	if strings.Contains(out, extToken) {
		t.Errorf("the printed summary contains the admin token")
	}
}

// xmppStub is a TLS listener standing for a gateway's direct-TLS XMPP
// port: it completes handshakes with a self-signed certificate for
// *.localhost (as a gateway's generated one is) and closes. certPEM is
// that certificate.
func xmppStub(t *testing.T) (addr string, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost", "*.localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// xmppStubAddr is xmppStub's address alone (runs without -ca-file do not
// verify the certificate).
func xmppStubAddr(t *testing.T) string {
	addr, _ := xmppStub(t)
	return addr
}
