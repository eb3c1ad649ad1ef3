package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxErrorBody bounds how much of an error answer the client reads.
const maxErrorBody = 64 << 10

// Client calls the REST API of SPEC section 3 over HTTP.
//
// A Client is safe for concurrent use once configured; do not change its
// fields while calls are in flight. Every method blocks until the answer
// is read or ctx is done. A non-2xx answer is returned as an *Error with
// Status set, so callers can match it with errors.As and switch on Code.
type Client struct {
	// BaseURL is the gateway's root, e.g. "http://127.0.0.1:8080", without
	// the /v1 prefix.
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>": the admin token or
	// an app's API key. Empty sends no Authorization header.
	Token string
	// HTTP performs the requests. NewClient sets a client without an
	// overall timeout, since Events long-polls; bound calls with ctx.
	HTTP *http.Client
	// UserAgent is sent on every request when not empty.
	UserAgent string
}

// NewClient returns a Client for the gateway at baseURL that authenticates
// with token.
func NewClient(baseURL, token string) *Client {
	return &Client{
		BaseURL:   strings.TrimRight(baseURL, "/"),
		Token:     token,
		HTTP:      &http.Client{},
		UserAgent: "tether-api-client/1",
	}
}

// CreateApp creates an app (admin token). The answer carries the app's
// API key, which is shown only this once.
func (c *Client) CreateApp(ctx context.Context, req CreateAppRequest) (*App, error) {
	out := new(App)
	if err := c.Do(ctx, http.MethodPost, "/v1/apps", nil, nil, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ListApps lists every app (admin token).
func (c *Client) ListApps(ctx context.Context) ([]App, error) {
	var raw json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/v1/apps", nil, nil, nil, &raw); err != nil {
		return nil, err
	}
	var apps []App
	if err := decodeList(raw, "apps", &apps); err != nil {
		return nil, fmt.Errorf("api: GET /v1/apps: %w", err)
	}
	return apps, nil
}

// GetApp returns one app; secrets show only whether they are set.
func (c *Client) GetApp(ctx context.Context, app string) (*App, error) {
	out := new(App)
	if err := c.Do(ctx, http.MethodGet, Path("v1", "apps", app), nil, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// PatchApp changes an app's settings and returns the app as it is after
// the change (nil if the gateway answers without a body).
func (c *Client) PatchApp(ctx context.Context, app string, req PatchAppRequest) (*App, error) {
	return doOptional[App](ctx, c, http.MethodPatch, Path("v1", "apps", app), req)
}

// DeleteApp deletes an app and all its data (admin token).
func (c *Client) DeleteApp(ctx context.Context, app string) error {
	return c.Do(ctx, http.MethodDelete, Path("v1", "apps", app), nil, nil, nil, nil)
}

// RotateKey issues a new API key for app; the previous one keeps working
// until PreviousValidUntil.
func (c *Client) RotateKey(ctx context.Context, app string) (*KeyResponse, error) {
	out := new(KeyResponse)
	if err := c.Do(ctx, http.MethodPost, Path("v1", "apps", app, "keys"), nil, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// PutUser creates or updates a user. Without a password the gateway
// generates one and returns it in the answer, once.
func (c *Client) PutUser(ctx context.Context, app, user string, req PutUserRequest) (*User, error) {
	out := new(User)
	if err := c.Do(ctx, http.MethodPut, Path("v1", "apps", app, "users", user), nil, nil, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetUser returns a user (never its password).
func (c *Client) GetUser(ctx context.Context, app, user string) (*User, error) {
	out := new(User)
	if err := c.Do(ctx, http.MethodGet, Path("v1", "apps", app, "users", user), nil, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteUser deletes a user, drops its queue and ends its sessions.
func (c *Client) DeleteUser(ctx context.Context, app, user string) error {
	return c.Do(ctx, http.MethodDelete, Path("v1", "apps", app, "users", user), nil, nil, nil, nil)
}

// ListDevices lists a user's devices.
func (c *Client) ListDevices(ctx context.Context, app, user string) ([]Device, error) {
	var raw json.RawMessage
	if err := c.Do(ctx, http.MethodGet, Path("v1", "apps", app, "users", user, "devices"), nil, nil, nil, &raw); err != nil {
		return nil, err
	}
	var devs []Device
	if err := decodeList(raw, "devices", &devs); err != nil {
		return nil, fmt.Errorf("api: GET devices: %w", err)
	}
	return devs, nil
}

// PutDevice creates a device or replaces its push registration (a nil
// req.Push removes it), and returns the device as it is after the change
// (nil if the gateway answers without a body).
func (c *Client) PutDevice(ctx context.Context, app, user, device string, req PutDeviceRequest) (*Device, error) {
	return doOptional[Device](ctx, c, http.MethodPut, Path("v1", "apps", app, "users", user, "devices", device), req)
}

// DeleteDevice removes a device and its push registration.
func (c *Client) DeleteDevice(ctx context.Context, app, user, device string) error {
	return c.Do(ctx, http.MethodDelete, Path("v1", "apps", app, "users", user, "devices", device), nil, nil, nil, nil)
}

// Send posts a message to one or more recipients. A non-empty
// idempotencyKey is sent as the Idempotency-Key header: a repeat within
// 24 h returns the first answer and enqueues nothing.
func (c *Client) Send(ctx context.Context, app string, req SendRequest, idempotencyKey string) (*SendResponse, error) {
	var h http.Header
	if idempotencyKey != "" {
		h = http.Header{"Idempotency-Key": []string{idempotencyKey}}
	}
	out := new(SendResponse)
	if err := c.Do(ctx, http.MethodPost, Path("v1", "apps", app, "messages"), nil, h, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetMessage returns a message's status.
func (c *Client) GetMessage(ctx context.Context, app, id string) (*MessageStatus, error) {
	out := new(MessageStatus)
	if err := c.Do(ctx, http.MethodGet, Path("v1", "apps", app, "messages", id), nil, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// CancelMessage cancels a message that is not yet delivered and returns
// its status after the change (nil if the gateway answers without a
// body). A message already in a final state answers 409 (CodeConflict).
func (c *Client) CancelMessage(ctx context.Context, app, id string) (*MessageStatus, error) {
	return doOptional[MessageStatus](ctx, c, http.MethodDelete, Path("v1", "apps", app, "messages", id), nil)
}

// Events reads the app's event feed after cursor after ("" for the
// oldest). limit <= 0 leaves the gateway's default; wait > 0 long-polls up
// to wait seconds for the first new event, so ctx must allow for it.
func (c *Client) Events(ctx context.Context, app, after string, limit, wait int) (*EventsResponse, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if wait > 0 {
		q.Set("wait", strconv.Itoa(wait))
	}
	out := new(EventsResponse)
	if err := c.Do(ctx, http.MethodGet, Path("v1", "apps", app, "events"), q, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Stats returns the node overview (admin token).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	out := new(Stats)
	if err := c.Do(ctx, http.MethodGet, "/v1/stats", nil, nil, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Healthz reports whether the process is up: nil on a 2xx answer.
func (c *Client) Healthz(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/healthz", nil, nil, nil, nil)
}

// Readyz reports whether the gateway is ready (store open, listeners up):
// nil on a 2xx answer.
func (c *Client) Readyz(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/readyz", nil, nil, nil, nil)
}

// Do performs one request: path is already escaped (see Path), query and
// header may be nil, in (when not nil) is sent as the JSON body, and a 2xx
// answer's body is decoded into out (when not nil and the body is not
// empty; a *json.RawMessage receives it verbatim). A non-2xx answer
// returns an *Error. Do is what the typed methods use; call it for
// anything they do not cover.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, header http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		// Without HTML escaping: json.Marshal would send a message's data
		// with each & < > as a six-byte \u escape, which the gateway
		// stores and counts against the payload limit as sent.
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(in); err != nil {
			return fmt.Errorf("api: %s %s: encode: %w", method, path, err)
		}
		body = &b
	}
	u := c.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("api: %w", err) // a *url.Error names the method and URL
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return decodeError(resp.StatusCode, b)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("api: %s %s: read answer: %w", method, path, err)
	}
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("api: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// doOptional performs a request whose answer body may be empty: it
// returns nil then, else the decoded body.
func doOptional[T any](ctx context.Context, c *Client, method, path string, in any) (*T, error) {
	var raw json.RawMessage
	if err := c.Do(ctx, method, path, nil, nil, in, &raw); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	out := new(T)
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("api: %s %s: decode answer: %w", method, path, err)
	}
	return out, nil
}

// Path joins segments into an absolute URL path, escaping each one so
// that only RFC 3986 unreserved characters stay as they are: a user id
// such as "+393331234567" or "a=b" travels as "%2B393331234567", "a%3Db".
func Path(segments ...string) string {
	var sb strings.Builder
	for _, s := range segments {
		sb.WriteByte('/')
		sb.WriteString(escapeSegment(s))
	}
	return sb.String()
}

func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	if s == "." || s == ".." {
		// Dot segments would be resolved away (DELETE .../devices/..
		// would reach the user): sent escaped, they reach the server
		// as the name they are, which it refuses.
		return strings.Repeat("%2E", len(s))
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&15])
	}
	return sb.String()
}

// decodeError turns a non-2xx answer into an *Error: the {"error": {...}}
// body when it is one, else a synthetic Error named after the status.
func decodeError(status int, body []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		eb.Error.Status = status
		return eb.Error
	}
	msg := http.StatusText(status)
	if msg == "" {
		msg = "HTTP " + strconv.Itoa(status)
	}
	if t := strings.TrimSpace(string(body)); t != "" && len(t) <= 200 && !strings.ContainsRune(t, 0) {
		msg += ": " + t
	}
	return &Error{Code: CodeForStatus(status), Message: msg, Status: status}
}

// CodeForStatus returns the error code SPEC section 3 pairs with an HTTP
// status; statuses it does not name map to CodeInternal (5xx) or
// CodeInvalidArgument (other 4xx).
func CodeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidArgument
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodePermissionDenied
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodePayloadTooLarge
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalidArgument
}

// decodeList decodes a list answer that is either a bare JSON array or an
// object holding the array under key.
func decodeList(raw json.RawMessage, key string, out any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if raw[0] == '[' {
		return json.Unmarshal(raw, out)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	inner, ok := obj[key]
	if !ok {
		return fmt.Errorf("answer has no %q list", key)
	}
	if bytes.Equal(bytes.TrimSpace(inner), []byte("null")) {
		return nil
	}
	return json.Unmarshal(inner, out)
}
