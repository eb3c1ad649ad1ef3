package waketest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"tether/wake"
)

// FCM is a fake FCM HTTP v1 API with the OAuth2 token endpoint of its
// service account. Script, SetDefault, Record, OnRequest, Requests,
// RequestsFor, Count and Accepted work on registration tokens, FCMReply
// and FCMRequest, for sends to messages:send. Its methods are safe for
// concurrent use.
type FCM struct {
	// URL is the server's base URL, http://127.0.0.1:PORT. The adapter's
	// endpoint is Endpoint() (URL + "/v1").
	URL string
	// ProjectID is the project of ServiceAccountJSON; sends to another
	// project get 404 NOT_FOUND.
	ProjectID string
	// ServiceAccountJSON is a service account key file whose token_uri is
	// the fake's /token, with a private key the fake checks assertions
	// against.
	ServiceAccountJSON string
	// ClientEmail is the service account's client_email.
	ClientEmail string

	recorder[FCMRequest, FCMReply]

	srv *httptest.Server
	key *rsa.PrivateKey

	mu          sync.Mutex // guards the fields below; recorder has its own
	requireAuth bool
	rejectToken bool
	issued      map[string]bool
	tokenReqs   int
}

// FCMRequest is one send the fake received.
type FCMRequest struct {
	Header  http.Header
	Body    []byte // the raw JSON request
	Message FCMMessage
	Status  int // what the fake answered
	// At is when the request reached the handler, before the fake read
	// its body, checked it or waited out a scripted delay.
	At time.Time
}

// FCMMessage is the "message" of a send request, as FCM reads it.
type FCMMessage struct {
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Data         map[string]string `json:"data"`
	Notification json.RawMessage   `json:"notification"`
	Android      *FCMAndroid       `json:"android"`
	APNS         json.RawMessage   `json:"apns"`
	Webpush      json.RawMessage   `json:"webpush"`
}

// FCMAndroid is the message's "android" object.
type FCMAndroid struct {
	Priority     string            `json:"priority"`
	TTL          string            `json:"ttl"`
	CollapseKey  string            `json:"collapse_key"`
	Data         map[string]string `json:"data"`
	Notification json.RawMessage   `json:"notification"`
}

// FCMReply is a scripted answer. The zero value is 200 with a message
// name.
type FCMReply struct {
	Status      int    // HTTP status
	ErrorStatus string // google.rpc status: "NOT_FOUND", "INVALID_ARGUMENT", ...
	ErrorCode   string // FcmError errorCode: "UNREGISTERED", ...
	Message     string
	Field       string        // a BadRequest field violation, e.g. "message.token"
	RetryAfter  string        // Retry-After header value
	Delay       time.Duration // wait this long before answering
}

// FCMUnregistered is 404 NOT_FOUND / UNREGISTERED, as FCM answers for an
// app uninstalled or a token expired.
func FCMUnregistered() FCMReply {
	return FCMReply{Status: http.StatusNotFound, ErrorStatus: "NOT_FOUND", ErrorCode: "UNREGISTERED", Message: "Requested entity was not found."}
}

// FCMInvalidArgument is 400 INVALID_ARGUMENT on message.token.
func FCMInvalidArgument() FCMReply {
	return FCMReply{Status: http.StatusBadRequest, ErrorStatus: "INVALID_ARGUMENT", ErrorCode: "INVALID_ARGUMENT",
		Message: "The registration token is not a valid FCM registration token", Field: "message.token"}
}

// FCMQuotaExceeded is 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with the
// given Retry-After ("" for none).
func FCMQuotaExceeded(retryAfter string) FCMReply {
	return FCMReply{Status: http.StatusTooManyRequests, ErrorStatus: "RESOURCE_EXHAUSTED", ErrorCode: "QUOTA_EXCEEDED",
		Message: "Message rate exceeded for the device.", RetryAfter: retryAfter}
}

// FCMUnavailable is 503 UNAVAILABLE with the given Retry-After ("" for
// none).
func FCMUnavailable(retryAfter string) FCMReply {
	return FCMReply{Status: http.StatusServiceUnavailable, ErrorStatus: "UNAVAILABLE", ErrorCode: "UNAVAILABLE",
		Message: "The service is currently unavailable.", RetryAfter: retryAfter}
}

// FCMSenderIDMismatch is 403 PERMISSION_DENIED / SENDER_ID_MISMATCH.
func FCMSenderIDMismatch() FCMReply {
	return FCMReply{Status: http.StatusForbidden, ErrorStatus: "PERMISSION_DENIED", ErrorCode: "SENDER_ID_MISMATCH",
		Message: "SenderId mismatch"}
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	rsaErr  error
)

// testRSAKey is one RSA key per process: generating 2048-bit keys is slow.
func testRSAKey() (*rsa.PrivateKey, error) {
	rsaOnce.Do(func() { rsaKey, rsaErr = rsa.GenerateKey(rand.Reader, 2048) })
	return rsaKey, rsaErr
}

// NewFCM starts a fake FCM server and closes it with t.Cleanup.
func NewFCM(t testing.TB) *FCM {
	t.Helper()
	return mustStart(t, StartFCM)
}

// StartFCM starts a fake FCM server (plain HTTP on 127.0.0.1) for project
// "tether-test". Close it with Close.
func StartFCM() (*FCM, error) {
	key, err := testRSAKey()
	if err != nil {
		return nil, err
	}
	f := &FCM{
		ProjectID:   "tether-test",
		ClientEmail: "tether-wake@tether-test.iam.gserviceaccount.com",
		recorder:    newRecorder[FCMRequest, FCMReply](func(r FCMRequest) string { return r.Message.Token }),
		key:         key,
		issued:      map[string]bool{},
	}
	if f.srv, err = startServer(f, false); err != nil {
		return nil, err
	}
	f.URL = f.srv.URL
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		f.srv.Close()
		return nil, err
	}
	sa, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  f.ProjectID,
		"private_key_id":              "fake-key-1",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                f.ClientEmail,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    f.URL + "/auth",
		"token_uri":                   f.URL + "/token",
		"auth_provider_x509_cert_url": f.URL + "/certs",
	})
	if err != nil {
		f.srv.Close()
		return nil, err
	}
	f.ServiceAccountJSON = string(sa)
	return f, nil
}

// Close closes the server.
func (f *FCM) Close() { f.srv.Close() }

// Endpoint returns the FCM endpoint to configure: URL + "/v1".
func (f *FCM) Endpoint() string { return f.URL + "/v1" }

// Config returns an adapter configuration for the fake with full
// authentication: the service account's token_uri is the fake's token
// endpoint, so the adapter fetches and sends OAuth2 tokens as it does in
// production.
func (f *FCM) Config() wake.FCMConfig {
	return wake.FCMConfig{ServiceAccountJSON: f.ServiceAccountJSON, Endpoint: f.Endpoint()}
}

// RequireAuth makes sends without a bearer token fail with 401 (by
// default the fake accepts them, for adapters built with NoAuth; a bearer
// token, when present, must always be one it issued).
func (f *FCM) RequireAuth(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requireAuth = on
}

// RejectTokenRequests makes the token endpoint refuse every assertion
// with 400 invalid_grant, as Google does for a deleted key.
func (f *FCM) RejectTokenRequests(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rejectToken = on
}

// TokenRequests returns how many access tokens the fake issued.
func (f *FCM) TokenRequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenReqs
}

// ServeHTTP implements the token endpoint and messages:send.
func (f *FCM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" && r.Method == http.MethodPost {
		f.serveToken(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/")
	project, ok2 := strings.CutSuffix(rest, "/messages:send")
	if !ok || !ok2 || r.Method != http.MethodPost {
		writeFCMError(w, FCMReply{Status: http.StatusNotFound, ErrorStatus: "NOT_FOUND", Message: "Not Found"})
		return
	}
	arrived := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	f.received()
	var req struct {
		ValidateOnly bool       `json:"validate_only"`
		Message      FCMMessage `json:"message"`
	}
	reply, checked := FCMReply{}, true
	switch {
	case !f.authorized(r.Header.Get("Authorization")):
		reply, checked = FCMReply{Status: http.StatusUnauthorized, ErrorStatus: "UNAUTHENTICATED",
			Message: "Request is missing required authentication credential."}, false
	case project != f.ProjectID:
		reply, checked = FCMReply{Status: http.StatusNotFound, ErrorStatus: "NOT_FOUND", Message: "Requested entity was not found."}, false
	case json.Unmarshal(body, &req) != nil:
		reply, checked = FCMReply{Status: http.StatusBadRequest, ErrorStatus: "INVALID_ARGUMENT", Message: "Invalid JSON payload received."}, false
	case req.Message.Token == "" && req.Message.Topic == "":
		reply, checked = FCMReply{Status: http.StatusBadRequest, ErrorStatus: "INVALID_ARGUMENT", ErrorCode: "INVALID_ARGUMENT",
			Message: "Recipient of the message is not set.", Field: "message"}, false
	}
	if checked {
		reply = f.next(req.Message.Token)
	}
	pause(r.Context(), reply.Delay)
	if reply.Status == 0 {
		reply.Status = http.StatusOK
	}
	f.answered(reply.Status, func() FCMRequest {
		return FCMRequest{Header: r.Header.Clone(), Body: body, Message: req.Message, Status: reply.Status, At: arrived}
	})
	if reply.Status != http.StatusOK {
		writeFCMError(w, reply)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	fmt.Fprintf(w, `{"name":"projects/%s/messages/%d"}`, f.ProjectID, 1000000+f.nextID())
}

func (f *FCM) authorized(h string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if h == "" {
		return !f.requireAuth
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return ok && f.issued[tok]
}

// serveToken is the OAuth2 JWT-bearer grant (RFC 7523) as Google's token
// endpoint runs it for service accounts.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	fail := func(code, desc string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, desc)
	}
	if err := r.ParseForm(); err != nil {
		fail("invalid_request", "bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("unsupported_grant_type", "Invalid grant_type")
		return
	}
	f.mu.Lock()
	reject := f.rejectToken
	f.mu.Unlock()
	if reject {
		fail("invalid_grant", "Invalid JWT Signature.")
		return
	}
	_, claims, err := verifyRS256(r.PostForm.Get("assertion"), &f.key.PublicKey)
	if err != nil {
		fail("invalid_grant", "Invalid JWT Signature.")
		return
	}
	scope, _ := claims["scope"].(string)
	if claims["iss"] != f.ClientEmail || claims["aud"] != f.URL+"/token" || !strings.Contains(scope, "https://www.googleapis.com/auth/firebase.messaging") {
		fail("invalid_grant", "Invalid JWT claims.")
		return
	}
	f.mu.Lock()
	f.tokenReqs++
	tok := fmt.Sprintf("ya29.fake-%d", f.tokenReqs)
	f.issued[tok] = true
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":3599,"token_type":"Bearer"}`, tok)
}

// writeFCMError writes the FCM v1 error body:
// {"error":{"code","message","status","details":[FcmError, BadRequest]}}.
func writeFCMError(w http.ResponseWriter, r FCMReply) {
	type violation struct {
		Field       string `json:"field"`
		Description string `json:"description"`
	}
	type detail struct {
		Type            string      `json:"@type"`
		ErrorCode       string      `json:"errorCode,omitempty"`
		FieldViolations []violation `json:"fieldViolations,omitempty"`
	}
	var e struct {
		Error struct {
			Code    int      `json:"code"`
			Message string   `json:"message"`
			Status  string   `json:"status"`
			Details []detail `json:"details,omitempty"`
		} `json:"error"`
	}
	e.Error.Code, e.Error.Message, e.Error.Status = r.Status, r.Message, r.ErrorStatus
	if r.ErrorCode != "" {
		e.Error.Details = append(e.Error.Details, detail{Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: r.ErrorCode})
	}
	if r.Field != "" {
		e.Error.Details = append(e.Error.Details, detail{Type: "type.googleapis.com/google.rpc.BadRequest",
			FieldViolations: []violation{{Field: r.Field, Description: r.Message}}})
	}
	if r.RetryAfter != "" {
		w.Header().Set("Retry-After", r.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(r.Status)
	_ = json.NewEncoder(w).Encode(e)
}
