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
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"tether/wake"
)

// APNs is a fake APNs provider API. Its methods are safe for concurrent
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

	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu       sync.Mutex
	record   bool
	reqs     []APNsRequest
	script   map[string][]APNsReply
	def      APNsReply
	verified map[string]bool // bearer tokens already verified
	clients  []*http2.Transport
	hook     func(APNsRequest)

	total    atomic.Int64
	accepted atomic.Int64
	seq      atomic.Uint64
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
	f, err := StartAPNs()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
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
		key:      key,
		record:   true,
		script:   map[string][]APNsReply{},
		verified: map[string]bool{},
	}
	if f.srv, err = newServer(f); err != nil {
		return nil, err
	}
	f.srv.EnableHTTP2 = true
	f.srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	f.srv.StartTLS()
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

// Script queues answers for a token: each request for it takes the next
// one; once they are used up the token gets the default answer.
func (f *APNs) Script(token string, replies ...APNsReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[token] = append(f.script[token], replies...)
}

// SetDefault sets the answer for requests with no scripted reply (for
// example APNsServiceUnavailable() for an outage); APNsReply{} restores
// 200.
func (f *APNs) SetDefault(r APNsReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = r
}

// Record turns request recording on (the default) or off (benchmarks).
func (f *APNs) Record(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record = on
}

// OnRequest sets fn (nil removes it) to be called with every push request
// the fake answers, recorded or not, after it chose the answer and before
// it writes it: a harness reacts to each wake as a device would (see
// package loadtest). fn runs on the request's goroutine, concurrently with
// other requests, and delays the answer while it runs.
func (f *APNs) OnRequest(fn func(APNsRequest)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// CertificatePEM returns the fake's TLS certificate (self-signed, for
// 127.0.0.1) in PEM, for a client in another process to trust, such as a
// gateway started with --provider-ca-file.
func (f *APNs) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
}

// Requests returns a copy of the recorded requests, oldest first.
func (f *APNs) Requests() []APNsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]APNsRequest(nil), f.reqs...)
}

// RequestsFor returns the recorded requests for one token.
func (f *APNs) RequestsFor(token string) []APNsRequest {
	var out []APNsRequest
	for _, r := range f.Requests() {
		if r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many pushes the fake received.
func (f *APNs) Count() int64 { return f.total.Load() }

// Accepted returns how many pushes the fake answered with 200.
func (f *APNs) Accepted() int64 { return f.accepted.Load() }

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
	f.total.Add(1)
	reply, checked := f.check(r, token, body)
	if checked {
		reply = f.next(token)
	}
	if reply.Delay > 0 {
		t := time.NewTimer(reply.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	if reply.Status == 0 {
		reply.Status = http.StatusOK
	}
	f.mu.Lock()
	record, hook := f.record, f.hook
	f.mu.Unlock()
	if record || hook != nil {
		req := APNsRequest{Token: token, Proto: r.Proto, Header: r.Header.Clone(), Body: body, Status: reply.Status, At: arrived}
		if record {
			f.mu.Lock()
			f.reqs = append(f.reqs, req)
			f.mu.Unlock()
		}
		if hook != nil {
			hook(req)
		}
	}
	if reply.Status == http.StatusOK {
		f.accepted.Add(1)
	}
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

func (f *APNs) next(token string) APNsReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.script[token]; len(q) > 0 {
		f.script[token] = q[1:]
		return q[0]
	}
	return f.def
}

func (f *APNs) answer(w http.ResponseWriter, r APNsReply) {
	n := f.seq.Add(1)
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
