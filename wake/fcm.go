package wake

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// FCMConfig configures an FCM (HTTP v1) adapter for one app.
type FCMConfig struct {
	// ServiceAccountJSON is the app's Firebase service account key file
	// (type "service_account"). Required: the project id comes from it
	// and, unless NoAuth, the OAuth2 credentials (its private key, and its
	// token_uri as the token endpoint).
	ServiceAccountJSON string
	// ProjectID overrides the service account's project_id.
	ProjectID string
	// Endpoint overrides the FCM base URL, which must include the API
	// version: "https://fcm.googleapis.com/v1" is the default, a fake is
	// "http://127.0.0.1:PORT/v1". Sends go to
	// <Endpoint>/projects/<project>/messages:send.
	Endpoint string
	// HTTPClient supplies the base transport (only its Transport is used;
	// nil Transport means http.DefaultTransport). Nil means a clone of
	// http.DefaultTransport with 100 idle connections per host. The
	// OAuth2 layer, when on, wraps it.
	HTTPClient *http.Client
	// NoAuth sends requests without Google OAuth2 credentials, for tests
	// and relays that authenticate on their own. The service account JSON
	// then needs only project_id.
	NoAuth bool
	// Timeout bounds each Send. Zero means 10 s.
	Timeout time.Duration
	// Now is the clock for the TTL. Nil means time.Now.
	Now func() time.Time
}

// tokenTimeout bounds one OAuth2 token fetch.
const tokenTimeout = 15 * time.Second

// fcmMaxTTL is the longest TTL FCM accepts (4 weeks).
const fcmMaxTTL = 28 * 24 * time.Hour

// fcmScopes are the OAuth2 scopes of the FCM HTTP v1 API.
var fcmScopes = []string{
	"https://www.googleapis.com/auth/firebase.messaging",
	"https://www.googleapis.com/auth/cloud-platform",
}

// FCM sends wake pushes through Firebase Cloud Messaging HTTP v1 with
// firebase.google.com/go/v4/messaging. It is safe for concurrent use.
//
// The firebase client retries 503 answers and transport errors itself, up
// to 4 times with a backoff of up to 2 minutes (or the 503's Retry-After).
// The adapter switches that off: its transport records the first attempt's
// outcome and cancels the send's context, so the client's retry wait ends
// at once and Send returns the first answer (RetryAfter for a 503, with
// its Retry-After). Retrying is the caller's policy, and a 503 storm holds
// no worker for minutes. Timeout bounds what is left (the OAuth2 token
// fetch, which the transport does not see).
type FCM struct {
	client  *messaging.Client
	base    http.RoundTripper
	project string
	timeout time.Duration
	now     func() time.Time
}

var _ Provider = (*FCM)(nil)

// serviceAccount is the part of a service account key file we check.
type serviceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	PrivateKey  string `json:"private_key"`
	ClientEmail string `json:"client_email"`
	TokenURI    string `json:"token_uri"`
}

// NewFCM validates cfg and builds an adapter. It parses the service
// account and its private key here, so bad credentials fail at
// construction; it does no network I/O (the OAuth2 token is fetched with
// the first send and refreshed before it expires).
func NewFCM(cfg FCMConfig) (*FCM, error) {
	var sa serviceAccount
	if err := json.Unmarshal([]byte(cfg.ServiceAccountJSON), &sa); err != nil {
		return nil, fmt.Errorf("%w: fcm: service_account_json: %w", ErrConfig, err)
	}
	project := cfg.ProjectID
	if project == "" {
		project = sa.ProjectID
	}
	if project == "" {
		return nil, fmt.Errorf("%w: fcm: service_account_json has no project_id", ErrConfig)
	}
	if !cfg.NoAuth {
		// Only service accounts: other credential types (external_account
		// and the like) make the Google library fetch URLs or run
		// programs that the JSON names.
		if sa.Type != "service_account" {
			return nil, fmt.Errorf("%w: fcm: service_account_json: type %q, want service_account", ErrConfig, sa.Type)
		}
		if sa.ClientEmail == "" {
			return nil, fmt.Errorf("%w: fcm: service_account_json has no client_email", ErrConfig)
		}
		if err := checkRSAKey(sa.PrivateKey); err != nil {
			return nil, fmt.Errorf("%w: fcm: service_account_json: private_key: %w", ErrConfig, err)
		}
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("%w: fcm: endpoint %q is not an absolute URL", ErrConfig, cfg.Endpoint)
		}
	}

	var base http.RoundTripper
	switch {
	case cfg.HTTPClient == nil:
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 100
		base = t
	case cfg.HTTPClient.Transport == nil:
		base = http.DefaultTransport
	default:
		base = cfg.HTTPClient.Transport
	}
	// Outermost first: attemptTransport → [OAuth2] → base.
	rt := base
	if !cfg.NoAuth {
		// The token source keeps this context for its refreshes: a
		// long-lived one, carrying a client with a time limit (the default
		// would be http.DefaultClient, which has none, and a hung token
		// fetch blocks every send of the app).
		tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient,
			&http.Client{Transport: base, Timeout: tokenTimeout})
		auth, err := htransport.NewTransport(tokenCtx, rt,
			option.WithCredentialsJSON([]byte(cfg.ServiceAccountJSON)),
			option.WithScopes(fcmScopes...),
			option.WithTelemetryDisabled())
		if err != nil {
			return nil, fmt.Errorf("%w: fcm: credentials: %w", ErrConfig, err)
		}
		rt = auth
	}
	hc := &http.Client{Transport: attemptTransport{next: rt}}
	opts := []option.ClientOption{option.WithHTTPClient(hc)}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimSuffix(cfg.Endpoint, "/")))
	}
	ctx := context.Background()
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: project}, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: fcm: %w", ErrConfig, err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: fcm: %w", ErrConfig, err)
	}
	f := &FCM{client: client, base: base, project: project, timeout: cfg.Timeout, now: orNow(cfg.Now)}
	if f.timeout <= 0 {
		f.timeout = sendTimeout
	}
	return f, nil
}

func checkRSAKey(p string) error {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New("neither PKCS#8 nor PKCS#1 RSA")
	}
	return nil
}

// Name returns "fcm".
func (f *FCM) Name() string { return "fcm" }

// ProjectID returns the Firebase project the adapter sends for.
func (f *FCM) ProjectID() string { return f.project }

// Close closes the idle connections of the base transport (also when it
// came from Config.HTTPClient, unless that is http.DefaultTransport).
// Sends after Close open new ones. It does not block.
func (f *FCM) Close() {
	if t, ok := f.base.(interface{ CloseIdleConnections() }); ok && f.base != http.DefaultTransport {
		t.CloseIdleConnections()
	}
}

// message builds the FCM message for one wake: data only, no notification.
func message(t Target, p Payload, ttl time.Duration) *messaging.Message {
	prio := "normal"
	if p.Priority == PriorityHigh {
		prio = "high"
	}
	return &messaging.Message{
		Token: t.Token,
		Data:  map[string]string{"tether": "wake", "pending": strconv.Itoa(p.Pending)},
		Android: &messaging.AndroidConfig{
			Priority:    prio,
			TTL:         &ttl,
			CollapseKey: CollapseID,
		},
	}
}

// Send pushes one wake. See Provider.Send for the contract; it blocks for
// at most the configured Timeout. It is safe for concurrent use.
//
// Classification (done on the firebase error itself, before any wrapping,
// since messaging.Is* use a type assertion): success is Delivered;
// UNREGISTERED is TokenInvalid; INVALID_ARGUMENT is TokenInvalid unless
// FCM names a field other than message.token as the culprit (then it is
// our request, Failed); QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL
// and other 5xx are RetryAfter with the Retry-After; SENDER_ID_MISMATCH,
// THIRD_PARTY_AUTH_ERROR, 401, 403 and the rest are Failed.
func (f *FCM) Send(ctx context.Context, t Target, p Payload) (Result, error) {
	if t.Token == "" {
		return Result{Outcome: Failed, Reason: "invalid target"}, fmt.Errorf("%w: fcm: empty token", ErrInvalidTarget)
	}
	now := f.now()
	life := p.Expiration.Sub(now)
	if p.Expiration.IsZero() || life <= 0 {
		return Result{Outcome: Failed, Reason: "expired"}, ErrExpired
	}
	ttl := life.Truncate(time.Second)
	if ttl < life {
		ttl += time.Second
	}
	ttl = min(ttl, fcmMaxTTL)

	ctx, cancelT := context.WithTimeout(ctx, f.timeout)
	defer cancelT()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st := &attemptState{cancel: cancel}
	ctx = context.WithValue(ctx, attemptKey{}, st)

	name, err := f.client.Send(ctx, message(t, p, ttl))
	if err == nil {
		return Result{Outcome: Delivered, Status: http.StatusOK, ID: name}, nil
	}
	if r, ok := classifyFirebase(err, now); ok {
		return r, nil
	}
	var stop *attemptStop
	if errors.As(context.Cause(ctx), &stop) {
		if stop.err == nil {
			// A 503 that the firebase client would have retried.
			return classifyStatus(stop.status, stop.header, stop.body, now), nil
		}
		var re *oauth2.RetrieveError
		if errors.As(stop.err, &re) && re.Response != nil {
			// The token endpoint answered, and not with a token.
			r := Result{Outcome: Failed, Reason: "auth", Status: re.Response.StatusCode}
			if r.Status == http.StatusTooManyRequests || r.Status >= 500 {
				r.Outcome = RetryAfter
				r.RetryAfter = parseRetryAfter(re.Response.Header, now)
			}
			return r, fmt.Errorf("fcm: oauth2 token: %w", stop.err)
		}
		err = stop.err
	} else if st.attempts.Load() == 0 && ctx.Err() == nil {
		// The firebase client's own validation refused the message.
		return Result{Outcome: Failed, Reason: "invalid message"}, fmt.Errorf("%w: fcm: %w", ErrInvalidTarget, err)
	}
	reason := "unreachable"
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		reason = "timeout"
	}
	return Result{Outcome: RetryAfter, Reason: reason}, fmt.Errorf("%w: fcm send: %w", ErrUnreachable, err)
}

// classifyFirebase classifies an error that carries an HTTP answer (a
// *internal.FirebaseError with a response). ok is false for other errors.
func classifyFirebase(err error, now time.Time) (Result, bool) {
	resp := errorutils.HTTPResponse(err)
	if resp == nil {
		return Result{}, false
	}
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	}
	r := classifyStatus(resp.StatusCode, resp.Header, body, now)
	// The messaging helpers are the library's word on the FCM error code;
	// they agree with the body parsed by classifyStatus, and catch the
	// cases where it did not parse.
	switch {
	case messaging.IsUnregistered(err):
		r.Outcome, r.Reason = TokenInvalid, "UNREGISTERED"
	case messaging.IsInvalidArgument(err):
		if r.Outcome != Failed {
			r.Outcome = TokenInvalid
		}
		r.Reason = "INVALID_ARGUMENT"
	case messaging.IsQuotaExceeded(err), messaging.IsUnavailable(err), messaging.IsInternal(err):
		r.Outcome = RetryAfter
	case messaging.IsSenderIDMismatch(err), messaging.IsThirdPartyAuthError(err):
		r.Outcome = Failed
	}
	return r, true
}

// fcmError is the FCM v1 error body.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// classifyStatus classifies an FCM HTTP answer from its status, headers
// and body.
func classifyStatus(status int, h http.Header, body []byte, now time.Time) Result {
	var e fcmError
	_ = json.Unmarshal(body, &e) // a body that is not JSON leaves e empty
	code, field := "", ""
	for _, d := range e.Error.Details {
		switch {
		case strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && code == "":
			code = d.ErrorCode
		case strings.HasSuffix(d.Type, "google.rpc.BadRequest"):
			for _, v := range d.FieldViolations {
				if field == "" || v.Field == "message.token" {
					field = v.Field
				}
			}
		}
	}
	r := Result{Status: status, Reason: code}
	if r.Reason == "" {
		r.Reason = e.Error.Status
	}
	if r.Reason == "" {
		r.Reason = http.StatusText(status)
	}
	switch {
	case status >= 200 && status < 300:
		r.Outcome, r.Reason = Delivered, ""
	case code == "UNREGISTERED":
		r.Outcome = TokenInvalid
	case code == "INVALID_ARGUMENT" || code == "" && e.Error.Status == "INVALID_ARGUMENT":
		// Our message is fixed and valid, so an invalid argument is the
		// token, unless FCM names another field.
		r.Outcome = TokenInvalid
		if field != "" && field != "message.token" {
			r.Outcome = Failed
		}
	case status == http.StatusTooManyRequests || status >= 500:
		r.Outcome = RetryAfter
		r.RetryAfter = parseRetryAfter(h, now)
	default:
		r.Outcome = Failed
	}
	return r
}
