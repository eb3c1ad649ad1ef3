package waketest

import (
	"net"
	"net/http"
	"net/http/httptest"

	"go.uber.org/zap"
)

// newServer returns an unstarted httptest server for h listening on
// 127.0.0.1 (IPv4 loopback only) with its error log discarded (clients
// that hang up mid-handshake are normal in tests).
func newServer(h http.Handler) (*httptest.Server, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = zap.NewStdLog(zap.NewNop())
	return srv, nil
}
