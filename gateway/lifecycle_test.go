package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/queue"
	"tether/sdkproto"
	"tether/storage"
)

// writeCert writes a fresh self-signed certificate for *.localhost with
// the given common name, and returns its serial number.
func writeCert(t *testing.T, certFile, keyFile, cn string) *big.Int {
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
	require.NoError(t, os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	require.NoError(t, os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.Rename(keyFile+".tmp", keyFile))
	require.NoError(t, os.Rename(certFile+".tmp", certFile))
	return serial
}

func peerSerial(t *testing.T, addr string) *big.Int {
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "acme.localhost"})
	require.NoError(t, err)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestSIGHUPSwapsCertificate: after SIGHUP new sessions see the new
// certificate while a session opened before stays up.
func TestSIGHUPSwapsCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile, "first")
	c := startChild(t, dir, "TETHER_TEST_CHILD_TLS_CERT="+certFile, "TETHER_TEST_CHILD_TLS_KEY="+keyFile)
	ctx := ctxT(t)
	admin := api.NewClient(c.url, "crash-test-admin-token")
	created, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	app := api.NewClient(c.url, created.APIKey)
	_, err = app.PutUser(ctx, "acme", "alice", api.PutUserRequest{Password: "alice-password"})
	require.NoError(t, err)
	require.Equal(t, first, peerSerial(t, c.xmpps))

	got := make(chan string, 4)
	old, err := sdkproto.Dial(ctx, sdkproto.Config{Addr: c.xmpps, App: "acme", User: "alice", Password: "alice-password",
		Device: "d1", TLSConfig: &tls.Config{InsecureSkipVerify: true}, OnMessage: func(m *sdkproto.Message) { got <- m.ID }})
	require.NoError(t, err)
	defer old.Close()

	second := writeCert(t, certFile, keyFile, "second")
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGHUP))
	deadline := time.Now().Add(10 * time.Second)
	for peerSerial(t, c.xmpps).Cmp(second) != 0 {
		require.True(t, time.Now().Before(deadline), "new handshakes still get the old certificate")
		time.Sleep(20 * time.Millisecond) // waiting for the signal to be handled
	}
	// The session from before the reload is still up and receiving.
	require.NoError(t, old.Ping(ctx))
	res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: "after reload"}, "")
	require.NoError(t, err)
	select {
	case id := <-got:
		require.Equal(t, res.Messages[0].ID, id)
	case <-time.After(10 * time.Second):
		t.Fatal("the old session got nothing after the reload")
	}
}

// TestSIGTERMUnderLoad: SIGTERM while clients post and a device is
// connected: the device is told <system-shutdown/>, the process exits 0
// within the shutdown bound, every message that got a 202 is in its queue
// after a restart, and the store opens cleanly.
func TestSIGTERMUnderLoad(t *testing.T) {
	dir := t.TempDir()
	c := startChild(t, dir)
	ctx := ctxT(t)
	admin := api.NewClient(c.url, "crash-test-admin-token")
	created, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	app := api.NewClient(c.url, created.APIKey)
	_, err = app.PutUser(ctx, "acme", "dev", api.PutUserRequest{Password: "dev-password"})
	require.NoError(t, err)
	disconnected := make(chan error, 1)
	dc, err := sdkproto.Dial(ctx, sdkproto.Config{Addr: c.xmpps, App: "acme", User: "dev", Password: "dev-password",
		Device: "d1", TLSConfig: &tls.Config{InsecureSkipVerify: true}, OnDisconnect: func(err error) {
			select {
			case disconnected <- err:
			default:
			}
		}})
	require.NoError(t, err)
	defer dc.Close()

	var (
		mu       sync.Mutex
		accepted = map[string]string{} // id → user
		posted   atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("u%d", (w*7+i)%20)
				res, err := app.Send(ctx, "acme", api.SendRequest{To: []string{user}, Body: fmt.Sprintf("%d-%d", w, i)}, "")
				posted.Add(1)
				if err != nil {
					return // the gateway is shutting down
				}
				mu.Lock()
				accepted[res.Messages[0].ID] = user
				mu.Unlock()
			}
		})
	}
	for posted.Load() < 500 {
		time.Sleep(5 * time.Millisecond) // waiting for load
	}
	start := time.Now()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-c.done:
		require.NoError(t, err, "exit status after SIGTERM")
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not stop within 20 s of SIGTERM")
	}
	took := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("stopped in %v with %d messages accepted", took, len(accepted))
	select {
	case err := <-disconnected:
		var se *sdkproto.StreamError
		require.True(t, errors.As(err, &se), "got %v", err)
		require.Equal(t, "system-shutdown", se.Condition)
	case <-time.After(5 * time.Second):
		t.Fatal("the device was not told about the shutdown")
	}

	db, err := storage.Open(filepath.Join(dir, "store"), storage.Options{})
	require.NoError(t, err)
	defer db.Close()
	q, err := queue.New(queue.Config{DB: db, TimerInterval: -1})
	require.NoError(t, err)
	defer q.Close()
	found := map[string]bool{}
	for u := range 20 {
		msgs, err := q.Pending(context.Background(), queue.DeviceRef{App: "acme", User: fmt.Sprintf("u%d", u), Device: "check"}, 0, 1<<20)
		require.NoError(t, err)
		for _, m := range msgs {
			found[m.ID] = true
		}
	}
	for id, user := range accepted {
		require.True(t, found[id], "accepted message %s for %s lost in a graceful shutdown", id, user)
	}
	require.EqualValues(t, len(found), q.Depth(), "the depth counted at start matches the queues")
}
