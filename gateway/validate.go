package gateway

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"time"

	"tether/gateway/api"
	"tether/queue"
)

// Id grammars of SPEC section 1. The user grammar also admits a leading
// '+': SPEC's regular expression does not, yet it says phone numbers such
// as +393331234567 are user ids, which is what backends use.
var (
	appIDRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	userIDRE   = regexp.MustCompile(`^[A-Za-z0-9+][A-Za-z0-9._+=-]{0,127}$`)
	deviceIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	phoneRE    = regexp.MustCompile(`^\+?[0-9]{6,15}$`)
)

// Limits of message fields the SPEC leaves open; documented in docs/api.md.
const (
	maxExpiresIn        = 2419200 // 28 days
	defaultExpiresIn    = 604800  // 7 days
	maxRefLen           = 256
	maxChannelLen       = 128
	maxCollapseKeyLen   = 128
	maxSMSTextLen       = 1600
	maxIdempotencyKey   = 255
	maxPasswordLen      = 1024
	minPasswordLen      = 8
	maxPushTokenLen     = 4096
	maxClientConfigSize = 64 << 10
)

func validApp(s string) bool  { return appIDRE.MatchString(s) }
func validUser(s string) bool { return userIDRE.MatchString(s) }

// validDevice: SPEC's expression, without ids made only of dots ("." and
// ".." are path segments that URL clients resolve away: DELETE
// .../devices/.. would reach the user).
func validDevice(s string) bool { return deviceIDRE.MatchString(s) && strings.Trim(s, ".") != "" }

// parseRecipient splits "user" or "user/device".
func parseRecipient(s string) (queue.Recipient, bool) {
	user, device, hasDevice := strings.Cut(s, "/")
	if !validUser(user) || hasDevice && !validDevice(device) {
		return queue.Recipient{}, false
	}
	return queue.Recipient{User: user, Device: device}, true
}

// buildEnqueue validates a send request against SPEC section 3 and the
// app's defaults and turns it into a queue request.
func (g *Gateway) buildEnqueue(app *appRecord, req *api.SendRequest) (*queue.EnqueueRequest, *api.Error) {
	if len(req.To) == 0 {
		return nil, apiError(api.CodeInvalidArgument, "to", "to needs at least one recipient")
	}
	if len(req.To) > queue.MaxRecipients {
		return nil, apiError(api.CodeInvalidArgument, "to", "to has %d recipients; at most %d", len(req.To), queue.MaxRecipients)
	}
	q := &queue.EnqueueRequest{App: app.ID, To: make([]queue.Recipient, 0, len(req.To))}
	seen := make(map[string]struct{}, len(req.To))
	for _, s := range req.To {
		r, ok := parseRecipient(s)
		if !ok {
			return nil, apiError(api.CodeInvalidArgument, "to", "recipient %q is not a valid user or user/device", truncate(s, 80))
		}
		if _, dup := seen[s]; dup {
			return nil, apiError(api.CodeInvalidArgument, "to", "recipient %q is listed twice", s)
		}
		seen[s] = struct{}{}
		q.To = append(q.To, r)
	}
	data := req.Data
	if string(data) == "null" {
		data = nil
	}
	if req.Body == "" && len(data) == 0 {
		return nil, apiError(api.CodeInvalidArgument, "body", "a message needs a body, data or both")
	}
	if len(data) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return nil, apiError(api.CodeInvalidArgument, "data", "data is not valid JSON")
		}
		data = buf.Bytes()
	}
	if n := len(req.Body) + len(data); n > g.cfg.MaxPayloadBytes {
		return nil, apiError(api.CodePayloadTooLarge, "body", "body and data together are %d bytes; at most %d", n, g.cfg.MaxPayloadBytes)
	}
	q.Body, q.Data = req.Body, data

	expires := int64(defaultExpiresIn)
	if app.Defaults.ExpiresIn != nil {
		expires = *app.Defaults.ExpiresIn
	}
	if req.ExpiresIn != nil {
		expires = *req.ExpiresIn
	}
	if expires < 0 || expires > maxExpiresIn {
		return nil, apiError(api.CodeInvalidArgument, "expires_in", "expires_in must be from 0 to %d seconds", maxExpiresIn)
	}
	q.ExpiresIn = time.Duration(expires) * time.Second

	switch req.Priority {
	case "", "normal":
		q.Priority = queue.PriorityNormal
	case "high":
		q.Priority = queue.PriorityHigh
	default:
		return nil, apiError(api.CodeInvalidArgument, "priority", `priority must be "high" or "normal"`)
	}
	switch req.Delivery {
	case "", "all":
		q.Delivery = queue.DeliveryAll
	case "any":
		q.Delivery = queue.DeliveryAny
	default:
		return nil, apiError(api.CodeInvalidArgument, "delivery", `delivery must be "all" or "any"`)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"ref", req.Ref, maxRefLen}, {"channel", req.Channel, maxChannelLen}, {"collapse_key", req.CollapseKey, maxCollapseKeyLen}} {
		if len(f.v) > f.max {
			return nil, apiError(api.CodeInvalidArgument, f.name, "%s is longer than %d bytes", f.name, f.max)
		}
		if strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, apiError(api.CodeInvalidArgument, f.name, "%s contains control characters", f.name)
		}
	}
	q.Ref, q.Channel, q.CollapseKey = req.Ref, req.Channel, req.CollapseKey

	if fb := req.SMSFallback; fb != nil {
		if !phoneRE.MatchString(fb.To) {
			return nil, apiError(api.CodeInvalidArgument, "sms_fallback.to", "sms_fallback.to must be a phone number in international format")
		}
		if len(fb.Text) > maxSMSTextLen {
			return nil, apiError(api.CodeInvalidArgument, "sms_fallback.text", "sms_fallback.text is longer than %d bytes", maxSMSTextLen)
		}
		if fb.Text == "" && req.Body == "" {
			return nil, apiError(api.CodeInvalidArgument, "sms_fallback.text", "sms_fallback needs a text when the message has no body")
		}
		after := int64(0)
		if d, ok := app.Defaults.FallbackAfter[q.Priority.String()]; ok {
			after = d
		}
		if fb.After != nil {
			after = *fb.After
		}
		if after < 0 || after > maxExpiresIn {
			return nil, apiError(api.CodeInvalidArgument, "sms_fallback.after", "sms_fallback.after must be from 0 to %d seconds", maxExpiresIn)
		}
		if after >= expires {
			after = 0 // at expiry
		}
		q.Fallback = &queue.SMSFallback{To: fb.To, Text: fb.Text, After: after}
	}
	return q, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
