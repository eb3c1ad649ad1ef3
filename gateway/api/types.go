// Package api holds the REST API's request and response types and a Go
// client for it. It is a leaf: the admin CLI and tests import it without
// pulling in the gateway.
//
// Field names and JSON spellings are the contract of SPEC section 3. Every
// request type is decoded strictly: unknown fields are an error.
package api

import (
	"encoding/json"
	"time"
)

// Error codes and their HTTP statuses.
const (
	CodeInvalidArgument  = "invalid_argument"   // 400
	CodeUnauthenticated  = "unauthenticated"    // 401
	CodePermissionDenied = "permission_denied"  // 403
	CodeNotFound         = "not_found"          // 404
	CodeMethodNotAllowed = "method_not_allowed" // 405, with Allow
	CodeConflict         = "conflict"           // 409
	CodePayloadTooLarge  = "payload_too_large"  // 413
	CodeRateLimited      = "rate_limited"       // 429
	CodeUnavailable      = "unavailable"        // 503
	CodeInternal         = "internal"           // 500
)

// Error is the body of every error answer: {"error": {...}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Status is the HTTP status the error came with (client side only).
	Status int `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Code + ": " + e.Message + " (field " + e.Field + ")"
	}
	return e.Code + ": " + e.Message
}

// ErrorBody wraps an Error on the wire.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Secret is how a stored secret is shown: only whether it is set.
type Secret struct {
	Set bool `json:"set"`
}

// CreateAppRequest is the body of POST /v1/apps.
type CreateAppRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// App is an app as the API shows it. APIKey is only filled in the answer
// that created it (POST /v1/apps).
type App struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	XMPPDomain   string          `json:"xmpp_domain"`
	APIKey       string          `json:"api_key,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	Webhook      *WebhookView    `json:"webhook,omitempty"`
	APNS         *APNSView       `json:"apns,omitempty"`
	FCM          *FCMView        `json:"fcm,omitempty"`
	SMS          *SMSView        `json:"sms,omitempty"`
	Defaults     Defaults        `json:"defaults"`
	ClientConfig json.RawMessage `json:"client_config,omitempty"`
}

// PatchAppRequest is the body of PATCH /v1/apps/{app}. Absent fields are
// left alone; a present object replaces that whole setting, except
// defaults, whose fields are merged one by one. A JSON null removes a
// setting.
type PatchAppRequest struct {
	Name         *string         `json:"name,omitempty"`
	Webhook      *WebhookConfig  `json:"webhook,omitempty"`
	APNS         *APNSConfig     `json:"apns,omitempty"`
	FCM          *FCMConfig      `json:"fcm,omitempty"`
	SMS          *SMSConfig      `json:"sms,omitempty"`
	Defaults     *Defaults       `json:"defaults,omitempty"`
	ClientConfig json.RawMessage `json:"client_config,omitempty"`
}

// WebhookConfig is where and how events are posted.
type WebhookConfig struct {
	URL    string `json:"url"`
	Secret string `json:"secret,omitempty"`
}

// WebhookView shows a webhook setting without its secret.
type WebhookView struct {
	URL    string `json:"url"`
	Secret Secret `json:"secret"`
}

// APNSConfig is an app's APNs token-auth credentials and wake settings.
type APNSConfig struct {
	KeyP8       string `json:"key_p8,omitempty"`
	KeyID       string `json:"key_id,omitempty"`
	TeamID      string `json:"team_id,omitempty"`
	Topic       string `json:"topic,omitempty"`
	Environment string `json:"environment,omitempty"` // "production" (default) or "sandbox"
	Wake        string `json:"wake,omitempty"`        // "alert" (default) or "background"
	AlertText   string `json:"alert_text,omitempty"`
	Endpoint    string `json:"endpoint,omitempty"`
}

// APNSView shows APNs settings without the key.
type APNSView struct {
	KeyP8       Secret `json:"key_p8"`
	KeyID       string `json:"key_id,omitempty"`
	TeamID      string `json:"team_id,omitempty"`
	Topic       string `json:"topic,omitempty"`
	Environment string `json:"environment"`
	Wake        string `json:"wake"`
	AlertText   string `json:"alert_text"`
	Endpoint    string `json:"endpoint,omitempty"`
}

// FCMConfig is an app's FCM HTTP v1 service account.
type FCMConfig struct {
	ServiceAccountJSON string `json:"service_account_json,omitempty"`
	Endpoint           string `json:"endpoint,omitempty"`
}

// FCMView shows FCM settings without the service account.
type FCMView struct {
	ServiceAccountJSON Secret `json:"service_account_json"`
	ProjectID          string `json:"project_id,omitempty"`
	Endpoint           string `json:"endpoint,omitempty"`
}

// SMSConfig is an app's SMS provider.
type SMSConfig struct {
	Provider  string `json:"provider"` // "http" or "vonage"
	URL       string `json:"url,omitempty"`
	APIKey    string `json:"api_key,omitempty"`
	APISecret string `json:"api_secret,omitempty"`
	From      string `json:"from,omitempty"`
}

// SMSView shows SMS settings without credentials.
type SMSView struct {
	Provider  string `json:"provider"`
	URL       string `json:"url,omitempty"`
	APIKey    Secret `json:"api_key"`
	APISecret Secret `json:"api_secret"`
	From      string `json:"from,omitempty"`
}

// Defaults are an app's per-message defaults.
type Defaults struct {
	ExpiresIn          *int64           `json:"expires_in,omitempty"`    // seconds; 604800 (7 days)
	WakeInterval       *int64           `json:"wake_interval,omitempty"` // seconds; 60
	FallbackAfter      map[string]int64 `json:"fallback_after,omitempty"`
	RejectUnknownUsers *bool            `json:"reject_unknown_users,omitempty"`
}

// KeyResponse is the answer of POST /v1/apps/{app}/keys.
type KeyResponse struct {
	APIKey             string    `json:"api_key"`
	PreviousValidUntil time.Time `json:"previous_valid_until,omitzero"`
}

// PutUserRequest is the body of PUT /v1/apps/{app}/users/{user}.
type PutUserRequest struct {
	Password string `json:"password,omitempty"`
}

// User is a user as the API shows it. Password is only present in the
// answer that generated it.
type User struct {
	User      string    `json:"user"`
	JID       string    `json:"jid"`
	Password  string    `json:"password,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// PushRegistration is a device's native push token.
type PushRegistration struct {
	Provider    string `json:"provider"` // "apns" or "fcm"
	Token       string `json:"token"`
	Topic       string `json:"topic,omitempty"`
	Environment string `json:"environment,omitempty"` // "production" or "sandbox"
}

// PutDeviceRequest is the body of PUT .../devices/{device}.
type PutDeviceRequest struct {
	Push *PushRegistration `json:"push,omitempty"`
}

// PushView shows a push registration without the token.
type PushView struct {
	Provider    string `json:"provider"`
	TokenSuffix string `json:"token_suffix"`
}

// Device is a device as GET .../devices shows it.
type Device struct {
	Device    string    `json:"device"`
	Online    bool      `json:"online"`
	Transport string    `json:"transport,omitempty"`
	LastSeen  time.Time `json:"last_seen"`
	Push      *PushView `json:"push,omitempty"`
}

// SMSFallback asks for an SMS when a message is not delivered in time.
type SMSFallback struct {
	To    string `json:"to"`
	Text  string `json:"text,omitempty"`
	After *int64 `json:"after,omitempty"` // seconds; default: the app's fallback_after for the priority, else at expiry
}

// SendRequest is the body of POST /v1/apps/{app}/messages.
type SendRequest struct {
	To          []string        `json:"to"`
	Body        string          `json:"body,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
	ExpiresIn   *int64          `json:"expires_in,omitempty"`
	Priority    string          `json:"priority,omitempty"`
	CollapseKey string          `json:"collapse_key,omitempty"`
	Ref         string          `json:"ref,omitempty"`
	Channel     string          `json:"channel,omitempty"`
	Delivery    string          `json:"delivery,omitempty"`
	SMSFallback *SMSFallback    `json:"sms_fallback,omitempty"`
}

// SentMessage is one recipient's message in a SendResponse.
type SentMessage struct {
	ID     string `json:"id"`
	To     string `json:"to"`
	Status string `json:"status"`
}

// SendResponse is the 202 answer of POST .../messages.
type SendResponse struct {
	Messages []SentMessage `json:"messages"`
}

// DeviceStatus is one device's progress on a message.
type DeviceStatus struct {
	Device string    `json:"device"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// Fallback is the SMS fallback part of a message status.
type Fallback struct {
	To       string    `json:"to"`
	Status   string    `json:"status"` // pending, sending, sent, failed, not_needed, cancelled
	At       time.Time `json:"at,omitzero"`
	Provider string    `json:"provider,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	// Attempts counts the hand-offs to the SMS provider; more than one
	// when it asked to be tried again (while status is sending, Detail is
	// its last answer).
	Attempts int `json:"attempts,omitempty"`
}

// MessageStatus is the answer of GET .../messages/{id}.
type MessageStatus struct {
	ID          string         `json:"id"`
	To          string         `json:"to"`
	Status      string         `json:"status"`
	Ref         string         `json:"ref,omitempty"`
	Reason      string         `json:"reason,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	ExpiresAt   time.Time      `json:"expires_at"`
	SentAt      *time.Time     `json:"sent_at"`
	DeliveredAt *time.Time     `json:"delivered_at"`
	ReadAt      *time.Time     `json:"read_at"`
	Devices     []DeviceStatus `json:"devices"`
	Fallback    *Fallback      `json:"fallback,omitempty"`
}

// EventsResponse is the answer of GET .../events.
type EventsResponse struct {
	Events []json.RawMessage `json:"events"`
	Next   string            `json:"next"`
}

// Event is one feed or webhook event, for clients that decode them.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	At        time.Time       `json:"at"`
	App       string          `json:"app"`
	MessageID string          `json:"message_id,omitempty"`
	User      string          `json:"user,omitempty"`
	Device    string          `json:"device,omitempty"`
	Ref       string          `json:"ref,omitempty"`
	Status    string          `json:"status,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Transport string          `json:"transport,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	InReplyTo string          `json:"in_reply_to,omitempty"`
	Body      string          `json:"body,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Fallback  *Fallback       `json:"fallback,omitempty"`
	Provider  string          `json:"provider,omitempty"` // device.wake_sent, device.token_invalid: apns or fcm
}

// PulledMessage is a message as the device HTTP pull returns it: the same
// fields as the XMPP stanza.
type PulledMessage struct {
	ID        string          `json:"id"`
	Body      string          `json:"body,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	Priority  string          `json:"priority"`
	CreatedAt time.Time       `json:"created_at"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// PullResponse is the answer of GET /v1/device/messages.
type PullResponse struct {
	Messages []PulledMessage `json:"messages"`
}

// AcksRequest is the body of POST /v1/device/acks.
type AcksRequest struct {
	Delivered []string `json:"delivered,omitempty"`
	Read      []string `json:"read,omitempty"`
}

// Stats is the answer of GET /v1/stats (admin token): a node overview.
type Stats struct {
	Version       string           `json:"version"`
	UptimeSeconds int64            `json:"uptime_seconds"`
	Apps          int              `json:"apps"`
	QueueDepth    int64            `json:"queue_depth"`
	Sessions      map[string]int64 `json:"sessions"`
	Store         StoreStats       `json:"store"`
}

// StoreStats are the store's counters.
type StoreStats struct {
	DiskBytes uint64 `json:"disk_bytes"`
	Fsyncs    uint64 `json:"fsyncs"`
	WALBytes  uint64 `json:"wal_bytes"`
}
