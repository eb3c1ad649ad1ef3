package waketest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"
)

// startServer starts an httptest server for h listening on 127.0.0.1
// (IPv4 loopback only) with its error log discarded (clients that hang up
// mid-handshake are normal in tests). It serves plain HTTP, or with h2
// HTTP/2 over TLS with up to 1000 concurrent streams per connection.
func startServer(h http.Handler, h2 bool) (*httptest.Server, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = zap.NewStdLog(zap.NewNop())
	if !h2 {
		srv.Start()
		return srv, nil
	}
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	srv.StartTLS()
	return srv, nil
}

// mustStart starts a fake with start (one of the Start* functions), fails
// the test if it cannot, and closes the fake with t.Cleanup: the New*
// functions.
func mustStart[F interface{ Close() }](t testing.TB, start func() (F, error)) F {
	t.Helper()
	f, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}
