package wake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Provider sends wake pushes through one push service with one app's
// credentials. Implementations (*APNs, *FCM) are safe for concurrent use.
type Provider interface {
	// Name is the provider's metrics and event label: "apns" or "fcm".
	Name() string
	// Send pushes one wake to the target and blocks until the provider
	// answers, the provider's timeout passes or ctx is done. The Result
	// is always set. The error is nil when the provider answered (even
	// with a rejection, which the Result classifies); it is non-nil when
	// nothing was sent (ErrInvalidTarget, ErrExpired: Result Failed) or no
	// answer came back (ErrUnreachable: Result RetryAfter).
	Send(ctx context.Context, t Target, p Payload) (Result, error)
}

// Target is one device's push registration.
type Target struct {
	// Token is the APNs device token (hex) or the FCM registration token.
	Token string
	// Topic is the APNs topic (the app's bundle id). Empty means the
	// adapter's configured topic. Unused by FCM.
	Topic string
	// Environment is the APNs environment the token belongs to:
	// "production" or "sandbox" ("development" is accepted as an alias of
	// sandbox). Empty means the adapter's configured environment. Unused
	// by FCM.
	Environment string
}

// Priority is a message's delivery priority.
type Priority string

// Priorities. The zero value is normal.
const (
	PriorityNormal Priority = "normal"
	PriorityHigh   Priority = "high"
)

// Mode is how an APNs wake is delivered.
type Mode string

// APNs wake modes. The zero value is alert.
const (
	// ModeAlert: a visible alert push (push type alert, mutable-content 1,
	// the placeholder text) that the app's notification service extension
	// replaces after it pulls the messages. What iOS delivers reliably.
	ModeAlert Mode = "alert"
	// ModeBackground: a silent push (push type background,
	// content-available 1, priority 5), which iOS throttles.
	ModeBackground Mode = "background"
)

// DefaultAlertText is the APNs alert placeholder when Payload.AlertText is
// empty.
const DefaultAlertText = "New message"

// CollapseID is the APNs apns-collapse-id and the FCM collapse_key of every
// wake, so a device holds at most one undelivered wake.
const CollapseID = "tether-wake"

// Payload describes one wake. It carries no message content: the push body
// is only {"tether":"wake","pending":N}.
type Payload struct {
	// Pending is the number of messages waiting for the device.
	Pending int
	// Priority: high gives APNs priority 10 (alert mode) and FCM
	// android.priority high; anything else is normal (APNs 5).
	Priority Priority
	// Expiration is when the pending messages expire (the latest expiry
	// among them): APNs apns-expiration and the FCM TTL. It must be in the
	// future, otherwise Send returns ErrExpired without sending.
	Expiration time.Time
	// Mode is the APNs delivery mode; empty means alert. Unused by FCM.
	Mode Mode
	// AlertText is the APNs alert placeholder in alert mode; empty means
	// DefaultAlertText. Unused by FCM.
	AlertText string
}

// Outcome classifies a provider's answer.
type Outcome uint8

// Outcomes. The zero value is not a valid outcome.
const (
	// Delivered: the provider accepted the push (APNs 200, FCM 200). That
	// says nothing of whether the device got it.
	Delivered Outcome = iota + 1
	// TokenInvalid: the token will never work again (APNs 410 and 400
	// BadDeviceToken, FCM UNREGISTERED and INVALID_ARGUMENT on the token).
	// The caller removes the registration and never pushes it again.
	TokenInvalid
	// RetryAfter: a transient failure (429, 5xx, no answer). Retry with
	// backoff, and not before Result.RetryAfter when it is non-zero.
	RetryAfter
	// Failed: any other rejection, not worth retrying as is (bad
	// credentials, a token for another topic or sender, an invalid
	// target, an expired payload).
	Failed
)

// String returns the outcome's metrics label: "delivered",
// "token_invalid", "retry" or "failed".
func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case TokenInvalid:
		return "token_invalid"
	case RetryAfter:
		return "retry"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Result is a provider's classified answer to one Send.
type Result struct {
	// Outcome is what the caller should do next.
	Outcome Outcome
	// Reason is the provider's reason text ("Unregistered",
	// "BadDeviceToken", "TooManyRequests", "UNREGISTERED",
	// "QUOTA_EXCEEDED", ...), or a short word of ours when the provider
	// gave none ("unreachable", "expired", "invalid target"). Empty when
	// delivered. For events and metrics; it never contains the token.
	Reason string
	// Status is the provider's HTTP status, 0 when there was no answer.
	Status int
	// RetryAfter is the provider's Retry-After for an Outcome RetryAfter,
	// 0 when it gave none (APNs never does): then use your own backoff.
	RetryAfter time.Duration
	// ID is the provider's id of an accepted push: the apns-id, or the FCM
	// message name ("projects/p/messages/123").
	ID string
	// InvalidSince is when APNs last saw the token valid (the timestamp of
	// a 410), zero otherwise.
	InvalidSince time.Time
}

// TokenRef returns a short, stable reference to a push token for logs and
// events: the first 12 hex digits of its SHA-256. Tokens themselves are
// never logged.
func TokenRef(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

// parseRetryAfter reads a Retry-After header (delay-seconds or an
// HTTP-date). It returns 0 when absent or unparsable.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// sendTimeout is the default per-Send time limit of the adapters.
const sendTimeout = 10 * time.Second

func orNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
