package main

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tether/gateway/api"
)

// postServer is a loopback REST endpoint that answers POSTs to the
// messages path with one message per recipient, and counts its
// connections.
type postServer struct {
	*httptest.Server
	conns, open, maxOpen atomic.Int64
	bodies               chan string
	hold                 chan struct{} // when not nil, answers wait for it to close
	status               atomic.Int64  // when not zero, the answer's status
}

func newPostServer(t *testing.T, tlsOn bool) *postServer {
	s := &postServer{bodies: make(chan string, 1000)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Header.Get("Idempotency-Key") == "" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"unauthorized","message":"no"}`, http.StatusUnauthorized)
			return
		}
		select {
		case s.bodies <- string(b):
		default:
		}
		if s.hold != nil {
			<-s.hold
		}
		if st := s.status.Load(); st != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(st))
			io.WriteString(w, `{"error":"unavailable","message":"`+strings.Repeat("x", 3000)+`"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"messages":[{"id":"m1","to":"u1","status":"enqueued"}]}`)
	})
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
			n := s.open.Add(1)
			for {
				m := s.maxOpen.Load()
				if n <= m || s.maxOpen.CompareAndSwap(m, n) {
					break
				}
			}
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func sendOne(ctx context.Context, c *api.Client, key string) error {
	_, err := c.Send(ctx, "app", api.SendRequest{To: []string{"u1"}, Data: []byte(`{"k":"` + key + `"}`)}, key)
	return err
}

// TestPostTransportKeepsConnectionsAlive: sequential POSTs share one
// connection; concurrent ones open no more than the transport's limit;
// each request arrives whole and each answer is decoded.
func TestPostTransportKeepsConnectionsAlive(t *testing.T) {
	s := newPostServer(t, false)
	c := mustPostClient(t, s.URL, 3, "")
	ctx := context.Background()
	for i := range 50 {
		resp, err := c.Send(ctx, "app", api.SendRequest{To: []string{"u1"}, Data: []byte(`{"i":1}`)}, "k")
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		if len(resp.Messages) != 1 || resp.Messages[0].ID != "m1" {
			t.Fatalf("POST %d: answer %+v", i, resp)
		}
		if b := <-s.bodies; !strings.Contains(b, `"data":{"i":1}`) {
			t.Fatalf("POST %d: the server read %q", i, b)
		}
	}
	if n := s.conns.Load(); n != 1 {
		t.Fatalf("50 sequential POSTs used %d connections, want 1", n)
	}

	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 40 {
		wg.Go(func() {
			for range 10 {
				if sendOne(ctx, c, "k") != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of 400 concurrent POSTs failed", failed.Load())
	}
	if m := s.maxOpen.Load(); m > 3 {
		t.Fatalf("%d connections open at once, want at most 3", m)
	}
}

// TestPostTransportReconnects: when the server has closed the kept-alive
// connections (as a restarted gateway has), the next POST goes out on a
// new one, body and all, without an error to the caller.
func TestPostTransportReconnects(t *testing.T) {
	s := newPostServer(t, false)
	c := mustPostClient(t, s.URL, 2, "")
	ctx := context.Background()
	for round := range 3 {
		if err := sendOne(ctx, c, "k"); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		<-s.bodies
		s.CloseClientConnections()
		for s.open.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := sendOne(ctx, c, "after"); err != nil {
		t.Fatalf("after the server closed its connections: %v", err)
	}
	if b := <-s.bodies; !strings.Contains(b, `"k":"after"`) {
		t.Fatalf("the resent POST arrived as %q", b)
	}
	if n := s.conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4 (one per round, one after)", n)
	}
}

// TestPostTransportErrorsAndCancel: error answers decode as the API's
// errors and leave the connection usable; a cancelled POST returns at
// once with the context's error and gives its connection's slot back.
func TestPostTransportErrorsAndCancel(t *testing.T) {
	s := newPostServer(t, false)
	c := mustPostClient(t, s.URL, 1, "")
	ctx := context.Background()
	s.status.Store(http.StatusServiceUnavailable)
	for range 5 {
		var ae *api.Error
		if err := sendOne(ctx, c, "k"); !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
			t.Fatalf("a 503: got %v", err)
		}
	}
	s.status.Store(0)
	wrong, _ := newPostClient(s.URL, "bad", 1, "")
	var ae *api.Error
	if err := sendOne(ctx, wrong, "k"); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("a bad token: got %v", err)
	}

	s.hold = make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sendOne(cctx, c, "held") }()
	<-s.bodies
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled POST: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled POST did not return")
	}
	close(s.hold)
	// The only slot is free again: a POST with a short deadline gets a
	// connection and its answer.
	tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
	defer tcancel()
	if err := sendOne(tctx, c, "k"); err != nil {
		t.Fatalf("after the cancelled POST: %v", err)
	}
}

// TestPostTransportTLS: an https gateway is reached over TLS, verified
// with the CA given, and refused without it when the certificate is not
// trusted.
func TestPostTransportTLS(t *testing.T) {
	s := newPostServer(t, true)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
	c := mustPostClient(t, s.URL, 2, caPEM)
	if err := sendOne(context.Background(), c, "k"); err != nil {
		t.Fatalf("over TLS with the CA: %v", err)
	}
	wrongCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: unrelatedCert(t)}))
	c2, _ := newPostClient(s.URL, "tok", 2, wrongCA)
	if err := sendOne(context.Background(), c2, "k"); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if _, err := newPostClient("ftp://127.0.0.1:1", "tok", 1, ""); err == nil {
		t.Fatal("an ftp URL was taken")
	}
}

// mustPostClient is newPostClient with the token "tok", failing the test
// on an error.
func mustPostClient(t *testing.T, url string, conns int, caPEM string) *api.Client {
	t.Helper()
	c, err := newPostClient(url, "tok", conns, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
