package waketest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"tether/wake"
	"tether/wake/waketest"
)

// TestAPNsCertificatePEMAndOnRequest checks that a client trusting only
// CertificatePEM reaches the fake, and that OnRequest sees every push with
// recording off.
func TestAPNsCertificatePEMAndOnRequest(t *testing.T) {
	fake := waketest.NewAPNs(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(fake.CertificatePEM()) {
		t.Fatal("CertificatePEM: no certificate in the PEM")
	}
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := fake.Config()
	cfg.HTTPClient = &http.Client{Transport: tr}
	a, err := wake.NewAPNs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)

	var mu sync.Mutex
	var got []waketest.APNsRequest
	fake.Record(false)
	fake.OnRequest(func(r waketest.APNsRequest) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	})
	token := waketest.APNsToken(7)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := a.Send(ctx, wake.Target{Token: token}, wake.Payload{Pending: 2, Expiration: time.Now().Add(time.Hour)})
	if err != nil || res.Outcome != wake.Delivered {
		t.Fatalf("Send = %+v, %v; want delivered", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Token != token || got[0].Status != http.StatusOK || got[0].At.IsZero() {
		t.Fatalf("OnRequest saw %+v; want one 200 for %s", got, token)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("recorded %d requests with Record(false)", n)
	}
	fake.OnRequest(nil)
	if _, err := a.Send(ctx, wake.Target{Token: token}, wake.Payload{Pending: 1, Expiration: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("OnRequest(nil) still called: %d requests", len(got))
	}
}

// TestFCMOnRequest checks that OnRequest sees every send with its token
// and answer, with recording on or off.
func TestFCMOnRequest(t *testing.T) {
	fake := waketest.NewFCM(t)
	f, err := wake.NewFCM(fake.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	var mu sync.Mutex
	var got []waketest.FCMRequest
	fake.OnRequest(func(r waketest.FCMRequest) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
	})
	fake.Script("tok-b", waketest.FCMUnregistered())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exp := time.Now().Add(time.Hour)
	if _, err := f.Send(ctx, wake.Target{Token: "tok-a"}, wake.Payload{Pending: 1, Expiration: exp}); err != nil {
		t.Fatal(err)
	}
	fake.Record(false)
	if _, err := f.Send(ctx, wake.Target{Token: "tok-b"}, wake.Payload{Pending: 1, Expiration: exp}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("OnRequest saw %d sends; want 2", len(got))
	}
	if got[0].Message.Token != "tok-a" || got[0].Status != http.StatusOK {
		t.Errorf("first send: token %q status %d", got[0].Message.Token, got[0].Status)
	}
	if got[1].Message.Token != "tok-b" || got[1].Status != http.StatusNotFound {
		t.Errorf("second send: token %q status %d; want tok-b 404", got[1].Message.Token, got[1].Status)
	}
	if n := len(fake.Requests()); n != 1 {
		t.Errorf("recorded %d sends; want 1 (recording was turned off for the second)", n)
	}
}
