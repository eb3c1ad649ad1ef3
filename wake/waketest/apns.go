package waketest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"tether/wake"
)

// APNs is a fake APNs provider API. Script, SetDefault, Record,
// OnRequest, Requests, RequestsFor, Count and Accepted work on device
// tokens, APNsReply and APNsRequest. Its methods are safe for concurrent
// use.
type APNs struct {
	// URL is the server's base URL, https://127.0.0.1:PORT.
	URL string
	// KeyP8 is the PEM (PKCS#8) of the ECDSA P-256 key whose provider
	// tokens the fake accepts, with KeyID and TeamID.
	KeyP8  string
	KeyID  string
	TeamID string
	// Topic is the topic Config puts in the adapter's configuration. The
	// fake accepts any topic.
	Topic string

	recorder[APNsRequest, APNsReply]

	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu       sync.Mutex      // guards the fields below; recorder has its own
	verified map[string]bool // bearer tokens already verified
	clients  []*http2.Transport
}

// APNsRequest is one request the fake received.
type APNsRequest struct {
	Token  string
	Proto  string // "HTTP/2.0"
	Header http.Header
	Body   []byte
	Status int // what the fake answered
	// At is when the request reached the handler, before the fake read
	// its body, checked it or waited out a scripted delay.
	At time.Time
}

// Payload decodes the request body.
func (r APNsRequest) Payload() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.Body, &m)
	return m
}

// APNsReply is a scripted answer. The zero value is 200.
type APNsReply struct {
	Status    int
	Reason    string
	Timestamp time.Time     // sent with 410
	Delay     time.Duration // wait this long before answering
}

// APNsUnregistered is 410 Unregistered with the time the token was last
// valid, as APNs answers for an app uninstalled.
func APNsUnregistered(at time.Time) APNsReply {
	return APNsReply{Status: http.StatusGone, Reason: "Unregistered", Timestamp: at}
}

// APNsBadDeviceToken is 400 BadDeviceToken.
func APNsBadDeviceToken() APNsReply {
	return APNsReply{Status: http.StatusBadRequest, Reason: "BadDeviceToken"}
}

// APNsDeviceTokenNotForTopic is 400 DeviceTokenNotForTopic.
func APNsDeviceTokenNotForTopic() APNsReply {
	return APNsReply{Status: http.StatusBadRequest, Reason: "DeviceTokenNotForTopic"}
}

// APNsTooManyRequests is 429 TooManyRequests (APNs sends no Retry-After).
func APNsTooManyRequests() APNsReply {
	return APNsReply{Status: http.StatusTooManyRequests, Reason: "TooManyRequests"}
}

// APNsServiceUnavailable is 503 ServiceUnavailable.
func APNsServiceUnavailable() APNsReply {
	return APNsReply{Status: http.StatusServiceUnavailable, Reason: "ServiceUnavailable"}
}

// APNsToken returns a well-formed device token (64 hex digits) for n.
func APNsToken(n int) string {
	return fmt.Sprintf("%064x", n+0x7e7e)
}

// NewAPNs starts a fake APNs server and closes it with t.Cleanup.
func NewAPNs(t testing.TB) *APNs {
	t.Helper()
	return mustStart(t, StartAPNs)
}

// StartAPNs starts a fake APNs server: HTTP/2 over TLS on 127.0.0.1, a
// fresh signing key, up to 1000 concurrent streams per connection. Close
// it with Close.
func StartAPNs() (*APNs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	f := &APNs{
		KeyP8:    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		KeyID:    "TESTKEY123",
		TeamID:   "TEAM123456",
		Topic:    "com.example.tether",
		recorder: newRecorder[APNsRequest, APNsReply](func(r APNsRequest) string { return r.Token }),
		key:      key,
		verified: map[string]bool{},
	}
	if f.srv, err = startServer(f, true); err != nil {
		return nil, err
	}
	f.URL = f.srv.URL
	return f, nil
}

// Close closes the idle connections of the clients it handed out, then
// the server.
func (f *APNs) Close() {
	f.mu.Lock()
	clients := f.clients
	f.clients = nil
	f.mu.Unlock()
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	f.srv.Close()
}

// Client returns an HTTP/2 client (golang.org/x/net/http2.Transport, as
// apns2 uses) that trusts the fake's certificate. Close closes its idle
// connections.
func (f *APNs) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	f.mu.Lock()
	f.clients = append(f.clients, tr)
	f.mu.Unlock()
	return &http.Client{Transport: tr}
}

// Config returns an adapter configuration pointed at the fake, with its
// key, a fresh client trusting it and environment production.
func (f *APNs) Config() wake.APNsConfig {
	return wake.APNsConfig{
		KeyP8:       f.KeyP8,
		KeyID:       f.KeyID,
		TeamID:      f.TeamID,
		Topic:       f.Topic,
		Environment: "production",
		Endpoint:    f.URL,
		HTTPClient:  f.Client(),
	}
}

// CertificatePEM returns the fake's TLS certificate (self-signed, for
// 127.0.0.1) in PEM, for a client in another process to trust, such as a
// gateway started with --provider-ca-file.
func (f *APNs) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

// ServeHTTP implements the provider API.
func (f *APNs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok {
		f.answer(w, APNsReply{Status: http.StatusNotFound, Reason: "BadPath"})
		return
	}
	if r.Method != http.MethodPost {
		f.answer(w, APNsReply{Status: http.StatusMethodNotAllowed, Reason: "MethodNotAllowed"})
		return
	}
	arrived := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	f.received()
	reply, checked := f.check(r, token, body)
	if checked {
		reply = f.next(token)
	}
	pause(r.Context(), reply.Delay)
	if reply.Status == 0 {
		reply.Status = http.StatusOK
	}
	f.answered(reply.Status, func() APNsRequest {
		return APNsRequest{Token: token, Proto: r.Proto, Header: r.Header.Clone(), Body: body, Status: reply.Status, At: arrived}
	})
	f.answer(w, reply)
}

// check validates a request as APNs does; ok is false with the error reply
// when it fails.
func (f *APNs) check(r *http.Request, token string, body []byte) (APNsReply, bool) {
	bad := func(reason string) (APNsReply, bool) {
		return APNsReply{Status: http.StatusBadRequest, Reason: reason}, false
	}
	if reply, ok := f.checkAuth(r.Header.Get("Authorization")); !ok {
		return reply, false
	}
	if token == "" {
		return bad("MissingDeviceToken")
	}
	if _, err := hex.DecodeString(token); err != nil {
		return bad("BadDeviceToken")
	}
	if r.Header.Get("apns-topic") == "" {
		return bad("MissingTopic")
	}
	pt := r.Header.Get("apns-push-type")
	switch pt {
	case "alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity", "pushtotalk":
	default:
		return bad("InvalidPushType")
	}
	switch p := r.Header.Get("apns-priority"); p {
	case "", "1", "5", "10":
		if pt == "background" && (p == "10" || p == "") {
			return bad("BadPriority") // background must be 5 (or 1)
		}
	default:
		return bad("BadPriority")
	}
	if e := r.Header.Get("apns-expiration"); e != "" {
		if _, err := strconv.ParseInt(e, 10, 64); err != nil {
			return bad("BadExpirationDate")
		}
	}
	if len(r.Header.Get("apns-collapse-id")) > 64 {
		return bad("BadCollapseId")
	}
	if len(body) == 0 {
		return bad("PayloadEmpty")
	}
	if len(body) > 4096 {
		return APNsReply{Status: http.StatusRequestEntityTooLarge, Reason: "PayloadTooLarge"}, false
	}
	return APNsReply{}, true
}

// checkAuth verifies the provider token: an ES256 JWT signed with the
// fake's key, with its key id and team id, issued within the hour.
func (f *APNs) checkAuth(h string) (APNsReply, bool) {
	forbidden := func(reason string) (APNsReply, bool) {
		return APNsReply{Status: http.StatusForbidden, Reason: reason}, false
	}
	bearer, ok := strings.CutPrefix(h, "bearer ")
	if !ok {
		bearer, ok = strings.CutPrefix(h, "Bearer ")
	}
	if !ok || bearer == "" {
		return forbidden("MissingProviderToken")
	}
	f.mu.Lock()
	done := f.verified[bearer]
	f.mu.Unlock()
	if !done {
		hdr, claims, err := verifyES256(bearer, &f.key.PublicKey)
		if err != nil || hdr["kid"] != f.KeyID || claims["iss"] != f.TeamID {
			return forbidden("InvalidProviderToken")
		}
		iat, _ := claims["iat"].(float64)
		if age := time.Since(time.Unix(int64(iat), 0)); age > time.Hour || age < -time.Minute {
			return forbidden("ExpiredProviderToken")
		}
		f.mu.Lock()
		f.verified[bearer] = true
		f.mu.Unlock()
	}
	return APNsReply{}, true
}

func (f *APNs) answer(w http.ResponseWriter, r APNsReply) {
	n := f.nextID()
	w.Header().Set("apns-id", fmt.Sprintf("%08X-7E7E-4000-8000-%012X", uint32(n>>48), n&0xFFFFFFFFFFFF))
	if r.Status == 0 || r.Status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.Status)
	if r.Status == http.StatusGone && !r.Timestamp.IsZero() {
		fmt.Fprintf(w, `{"reason":%q,"timestamp":%d}`, r.Reason, r.Timestamp.UnixMilli())
		return
	}
	fmt.Fprintf(w, `{"reason":%q}`, r.Reason)
}
