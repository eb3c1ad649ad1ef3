package wake

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
)

// APNsConfig configures an APNs adapter for one app (token authentication
// with the app's .p8 key).
type APNsConfig struct {
	// KeyP8 is the .p8 signing key: PEM text of a PKCS#8 ECDSA P-256 key.
	// Required.
	KeyP8 string
	// KeyID is the key's 10-character id in the Apple developer account.
	// Required.
	KeyID string
	// TeamID is the developer team id. Required.
	TeamID string
	// Topic is the default apns-topic (the app's bundle id), used when a
	// Target carries none.
	Topic string
	// Environment is the default environment, "production" (the default)
	// or "sandbox", used when a Target carries none.
	Environment string
	// Endpoint overrides the APNs base URL for both environments, for
	// tests and private relays, for example "https://127.0.0.1:4443". It
	// must speak HTTP/2 unless HTTPClient says otherwise.
	Endpoint string
	// HTTPClient replaces the HTTP/2 client (tests pass one that trusts
	// the fake's certificate). Nil means an http2.Transport with TLS 1.2+,
	// 15 s ping health checks and no client timeout (Timeout applies per
	// push).
	HTTPClient *http.Client
	// Timeout bounds each Send. Zero means 10 s.
	Timeout time.Duration
	// Now is the clock for expiry checks. Nil means time.Now.
	Now func() time.Time
}

// APNs sends wake pushes through Apple's push service with
// github.com/sideshow/apns2, over one HTTP/2 client shared by all sends
// (many concurrent streams per connection). It is safe for concurrent use.
type APNs struct {
	prod, sandbox *apns2.Client
	tok           *token.Token
	topic         string
	sandboxDef    bool
	timeout       time.Duration
	now           func() time.Time
	hc            *http.Client
}

var _ Provider = (*APNs)(nil)

// NewAPNs validates cfg and builds an adapter. It parses the .p8 key and
// signs a first provider token, so a bad key fails here rather than as an
// empty bearer on every push (apns2 ignores signing errors). It does no
// network I/O.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	if cfg.KeyID == "" || cfg.TeamID == "" {
		return nil, fmt.Errorf("%w: apns: key_id and team_id are required", ErrConfig)
	}
	key, err := token.AuthKeyFromBytes([]byte(cfg.KeyP8))
	if err != nil {
		return nil, fmt.Errorf("%w: apns: key_p8: %w", ErrConfig, err)
	}
	if key == nil || key.Curve == nil || key.Curve.Params().BitSize != 256 {
		return nil, fmt.Errorf("%w: apns: key_p8: not a P-256 key", ErrConfig)
	}
	tok := &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
	if _, err := tok.Generate(); err != nil {
		return nil, fmt.Errorf("%w: apns: signing a provider token: %w", ErrConfig, err)
	}
	var sandboxDef bool
	switch cfg.Environment {
	case "", "production":
	case "sandbox", "development":
		sandboxDef = true
	default:
		return nil, fmt.Errorf("%w: apns: environment %q is neither production nor sandbox", ErrConfig, cfg.Environment)
	}
	prodHost, sandboxHost := apns2.HostProduction, apns2.HostDevelopment
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("%w: apns: endpoint %q is not an absolute URL", ErrConfig, cfg.Endpoint)
		}
		prodHost = strings.TrimSuffix(cfg.Endpoint, "/")
		sandboxHost = prodHost
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http2.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12},
			ReadIdleTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
		}}
	}
	a := &APNs{
		prod:       &apns2.Client{Host: prodHost, Token: tok, HTTPClient: hc},
		sandbox:    &apns2.Client{Host: sandboxHost, Token: tok, HTTPClient: hc},
		tok:        tok,
		topic:      cfg.Topic,
		sandboxDef: sandboxDef,
		timeout:    cfg.Timeout,
		now:        orNow(cfg.Now),
		hc:         hc,
	}
	if a.timeout <= 0 {
		a.timeout = sendTimeout
	}
	return a, nil
}

// Name returns "apns".
func (a *APNs) Name() string { return "apns" }

// Close closes the client's idle connections. Sends after Close open new
// ones. It is safe for concurrent use and does not block.
func (a *APNs) Close() {
	a.hc.CloseIdleConnections()
}

// apnsBody is the whole push body: the aps dictionary and our custom keys
// beside it, never message content.
type apnsBody struct {
	APS     apsDict `json:"aps"`
	Tether  string  `json:"tether"`
	Pending int     `json:"pending"`
}

type apsDict struct {
	Alert            string `json:"alert,omitempty"`
	MutableContent   int    `json:"mutable-content,omitempty"`
	ContentAvailable int    `json:"content-available,omitempty"`
}

// notification builds the apns2 notification for one wake.
func (a *APNs) notification(t Target, p Payload, topic string) (*apns2.Notification, error) {
	b := apnsBody{Tether: "wake", Pending: p.Pending}
	n := &apns2.Notification{
		DeviceToken: t.Token,
		Topic:       topic,
		CollapseID:  CollapseID,
		// apns2 sends apns-expiration only for times after the Unix epoch;
		// Send has checked that Expiration is in the future.
		Expiration: p.Expiration,
	}
	switch p.Mode {
	case ModeBackground:
		n.PushType = apns2.PushTypeBackground
		n.Priority = apns2.PriorityLow // APNs rejects background pushes at 10
		b.APS.ContentAvailable = 1
	case ModeAlert, "":
		n.PushType = apns2.PushTypeAlert
		n.Priority = apns2.PriorityLow
		if p.Priority == PriorityHigh {
			n.Priority = apns2.PriorityHigh
		}
		b.APS.Alert = p.AlertText
		if b.APS.Alert == "" {
			b.APS.Alert = DefaultAlertText
		}
		b.APS.MutableContent = 1
	default:
		return nil, fmt.Errorf("%w: apns: unknown mode %q", ErrInvalidTarget, p.Mode)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	n.Payload = body // []byte goes out as is
	return n, nil
}

// Send pushes one wake. See Provider.Send for the contract; it blocks for
// at most the configured Timeout. It is safe for concurrent use.
//
// Classification: 200 is Delivered; 410 (Unregistered, ExpiredToken) and
// 400 BadDeviceToken are TokenInvalid, as is a token that is not hex (APNs
// would answer BadDeviceToken; nothing is sent); 429 and 5xx are
// RetryAfter (APNs sends no Retry-After); 403 ExpiredProviderToken is
// RetryAfter after forcing a fresh provider token; every other status,
// including 400 DeviceTokenNotForTopic, is Failed. DeviceTokenNotForTopic
// is deliberately not TokenInvalid: it also follows from a wrong topic in
// the app's configuration, and treating it as TokenInvalid would then
// permanently discard every valid token of the app.
func (a *APNs) Send(ctx context.Context, t Target, p Payload) (Result, error) {
	if t.Token == "" {
		return Result{Outcome: Failed, Reason: "invalid target"}, fmt.Errorf("%w: apns: empty token", ErrInvalidTarget)
	}
	if !isHex(t.Token) {
		return Result{Outcome: TokenInvalid, Reason: apns2.ReasonBadDeviceToken}, nil
	}
	topic := t.Topic
	if topic == "" {
		topic = a.topic
	}
	if topic == "" {
		return Result{Outcome: Failed, Reason: "invalid target"}, fmt.Errorf("%w: apns: no topic", ErrInvalidTarget)
	}
	cl := a.prod
	switch t.Environment {
	case "":
		if a.sandboxDef {
			cl = a.sandbox
		}
	case "production":
	case "sandbox", "development":
		cl = a.sandbox
	default:
		return Result{Outcome: Failed, Reason: "invalid target"}, fmt.Errorf("%w: apns: environment %q", ErrInvalidTarget, t.Environment)
	}
	if !p.Expiration.After(a.now()) {
		return Result{Outcome: Failed, Reason: "expired"}, ErrExpired
	}
	n, err := a.notification(t, p, topic)
	if err != nil {
		return Result{Outcome: Failed, Reason: "invalid target"}, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	res, err := cl.PushWithContext(ctx, n)
	if err != nil {
		// Transport failure, timeout, or an error body that is not JSON
		// (apns2 then loses the status code): no usable answer.
		reason := "unreachable"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			reason = "timeout"
		}
		// A *url.Error quotes the request URL, whose path is the device
		// token: keep it out of the error (and so out of the logs).
		var ue *url.Error
		if errors.As(err, &ue) {
			host := ue.URL
			if u, perr := url.Parse(ue.URL); perr == nil {
				host = u.Scheme + "://" + u.Host
			}
			err = fmt.Errorf("%s %s/3/device/…: %w", ue.Op, host, ue.Err)
		}
		return Result{Outcome: RetryAfter, Reason: reason}, fmt.Errorf("%w: apns push: %w", ErrUnreachable, err)
	}
	return a.classify(res), nil
}

// classify maps an APNs answer to a Result. apns2 reports rejections as a
// Response with a nil error.
func (a *APNs) classify(res *apns2.Response) Result {
	r := Result{Status: res.StatusCode, Reason: res.Reason, ID: res.ApnsID}
	switch {
	case res.StatusCode == http.StatusOK:
		r.Outcome = Delivered
	case res.StatusCode == http.StatusGone:
		r.Outcome = TokenInvalid
		r.InvalidSince = res.Timestamp.Time
	case res.StatusCode == http.StatusBadRequest && res.Reason == apns2.ReasonBadDeviceToken:
		r.Outcome = TokenInvalid
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		r.Outcome = RetryAfter
	case res.StatusCode == http.StatusForbidden && res.Reason == apns2.ReasonExpiredProviderToken:
		// Our JWT is older than APNs accepts (clock skew, or a long
		// suspend): make the next push sign a new one.
		a.tok.Lock()
		a.tok.IssuedAt = 0
		a.tok.Unlock()
		r.Outcome = RetryAfter
	default:
		r.Outcome = Failed
	}
	if r.Reason == "" && r.Outcome != Delivered {
		r.Reason = http.StatusText(res.StatusCode)
	}
	return r
}

func isHex(s string) bool {
	if len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
