package wake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// SMS providers.
const (
	SMSProviderHTTP   = "http"
	SMSProviderVonage = "vonage"
)

// DefaultVonageURL is the Vonage SMS API base URL.
const DefaultVonageURL = "https://rest.nexmo.com"

// SMS is one fallback text message.
type SMS struct {
	// To is the recipient's number, E.164 ("+393331234567").
	To string
	// From is the sender (a number or an alphanumeric sender id). Empty
	// means SMSConfig.From.
	From string
	// Text is the message text.
	Text string
	// MessageID is Tether's message id, passed on for the provider's
	// records (http: message_id; vonage: client-ref).
	MessageID string
}

// SMSConfig configures an app's SMS provider (SPEC section 8).
type SMSConfig struct {
	// Provider is "http" or "vonage".
	Provider string
	// URL is, for http, the endpoint that receives the POST (required);
	// for vonage, the API base URL (default DefaultVonageURL), to which
	// "/sms/json" is appended.
	URL string
	// APIKey is the http provider's bearer token, or the Vonage api_key.
	APIKey string
	// APISecret is the Vonage api_secret (unused by http).
	APISecret string
	// From is the default sender.
	From string
	// HTTPClient sends the requests. Nil means a client with a clone of
	// http.DefaultTransport.
	HTTPClient *http.Client
	// Timeout bounds each Send. Zero means 10 s.
	Timeout time.Duration
}

// SMSSender sends fallback SMS through one app's provider. It is safe for
// concurrent use.
type SMSSender struct {
	cfg SMSConfig
	hc  *http.Client
	url string
}

// NewSMSSender validates cfg and builds a sender. It does no network I/O.
func NewSMSSender(cfg SMSConfig) (*SMSSender, error) {
	s := &SMSSender{cfg: cfg, hc: cfg.HTTPClient}
	switch cfg.Provider {
	case SMSProviderHTTP:
		if cfg.URL == "" {
			return nil, fmt.Errorf("%w: sms: provider http needs url", ErrConfig)
		}
		s.url = cfg.URL
	case SMSProviderVonage:
		if cfg.APIKey == "" || cfg.APISecret == "" {
			return nil, fmt.Errorf("%w: sms: provider vonage needs api_key and api_secret", ErrConfig)
		}
		base := cfg.URL
		if base == "" {
			base = DefaultVonageURL
		}
		s.url = strings.TrimSuffix(base, "/") + "/sms/json"
	default:
		return nil, fmt.Errorf("%w: sms: unknown provider %q (want http or vonage)", ErrConfig, cfg.Provider)
	}
	if u, err := url.Parse(s.url); err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("%w: sms: url %q is not an absolute URL", ErrConfig, cfg.URL)
	}
	if s.hc == nil {
		s.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if s.cfg.Timeout <= 0 {
		s.cfg.Timeout = sendTimeout
	}
	return s, nil
}

// Provider returns the provider's name, "http" or "vonage".
func (s *SMSSender) Provider() string { return s.cfg.Provider }

// Close closes idle connections. It does not block.
func (s *SMSSender) Close() { s.hc.CloseIdleConnections() }

// maxDetail bounds the provider answer kept in detail.
const maxDetail = 256

// Send hands one SMS to the provider and blocks until it answers or the
// timeout passes. provider is the provider's name; detail is its answer
// for the status record: on success the provider's message id (or its
// response body), on a rejection its error text. err wraps ErrSMSRejected
// when the provider refused the message (and ErrSMSTryLater as well when
// it asked to be tried again), ErrUnreachable when it gave no answer.
// SMSRetryable says whether sending the same SMS again makes sense. It is
// safe for concurrent use.
func (s *SMSSender) Send(ctx context.Context, m SMS) (provider, detail string, err error) {
	provider = s.cfg.Provider
	if m.From == "" {
		m.From = s.cfg.From
	}
	if m.To == "" {
		return provider, "no recipient", fmt.Errorf("%w: sms: empty to", ErrInvalidTarget)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if provider == SMSProviderVonage {
		detail, err = s.sendVonage(ctx, m)
	} else {
		detail, err = s.sendHTTP(ctx, m)
	}
	return provider, detail, err
}

func (s *SMSSender) sendHTTP(ctx context.Context, m SMS) (string, error) {
	body, err := json.Marshal(struct {
		To        string `json:"to"`
		From      string `json:"from"`
		Text      string `json:"text"`
		MessageID string `json:"message_id"`
	}{m.To, m.From, m.Text, m.MessageID})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.APIKey)
	}
	status, answer, after, err := s.do(req)
	if err != nil {
		return "unreachable", err
	}
	if status < 200 || status > 299 {
		return rejectedHTTP(status, answer, after, fmt.Errorf("%w: sms http: status %d", ErrSMSRejected, status))
	}
	if answer == "" {
		answer = fmt.Sprintf("HTTP %d", status)
	}
	return answer, nil
}

// vonageAnswer is the Vonage SMS API response.
type vonageAnswer struct {
	Messages []vonageMessage `json:"messages"`
}

// vonageMessage is the answer for one part of a text.
type vonageMessage struct {
	Status    string `json:"status"`
	MessageID string `json:"message-id"`
	ErrorText string `json:"error-text"`
}

func (s *SMSSender) sendVonage(ctx context.Context, m SMS) (string, error) {
	form := url.Values{
		"api_key":    {s.cfg.APIKey},
		"api_secret": {s.cfg.APISecret},
		"from":       {vonageNumber(m.From)},
		"to":         {vonageNumber(m.To)},
		"text":       {m.Text},
	}
	if m.MessageID != "" {
		form.Set("client-ref", m.MessageID)
	}
	if !isASCII(m.Text) {
		// Without it, Vonage sends GSM-7 and garbles other characters.
		form.Set("type", "unicode")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	status, answer, after, err := s.do(req)
	if err != nil {
		return "unreachable", err
	}
	var a vonageAnswer
	if status < 200 || status > 299 || json.Unmarshal([]byte(answer), &a) != nil || len(a.Messages) == 0 {
		d, err := rejectedHTTP(status, answer, after, fmt.Errorf("%w: sms vonage: status %d, unexpected answer", ErrSMSRejected, status))
		return clip(d), err
	}
	// A long text is split; every part must be accepted. Only when no
	// part went out may the whole text be sent again.
	ids := make([]string, 0, len(a.Messages))
	someSent := slices.ContainsFunc(a.Messages, func(m vonageMessage) bool { return m.Status == "0" })
	for _, msg := range a.Messages {
		if msg.Status != "0" {
			d := "status " + msg.Status
			if msg.ErrorText != "" {
				d = msg.ErrorText + " (" + d + ")"
			}
			err := fmt.Errorf("%w: sms vonage: status %s", ErrSMSRejected, msg.Status)
			if !someSent && (msg.Status == vonageThrottled || msg.Status == vonageInternalError) {
				err = &smsTryLater{after: after, err: err}
			}
			return clip(d), err
		}
		ids = append(ids, msg.MessageID)
	}
	return clip(strings.Join(ids, ",")), nil
}

// do sends req and returns the status, the clipped, trimmed body and the
// answer's Retry-After.
func (s *SMSSender) do(req *http.Request) (int, string, time.Duration, error) {
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, "", 0, fmt.Errorf("%w: sms %s: %w", ErrUnreachable, s.cfg.Provider, err)
	}
	defer resp.Body.Close()
	after := parseRetryAfter(resp.Header, time.Now())
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if err != nil {
		return 0, "", 0, fmt.Errorf("%w: sms %s: reading the answer: %w", ErrUnreachable, s.cfg.Provider, err)
	}
	if s.cfg.Provider == SMSProviderVonage {
		return resp.StatusCode, string(b), after, nil // parsed whole, clipped later
	}
	return resp.StatusCode, clip(strings.TrimSpace(string(b))), after, nil
}

// Vonage SMS API statuses that ask for a later try.
const (
	vonageThrottled     = "1"
	vonageInternalError = "5"
)

// rejectedHTTP returns the detail of an HTTP answer the provider gave in
// place of accepting the SMS, "HTTP status: answer", and err, the
// rejection, as an ErrSMSTryLater with the Retry-After after when the
// status asks for a later try.
func rejectedHTTP(status int, answer string, after time.Duration, err error) (string, error) {
	d := fmt.Sprintf("HTTP %d", status)
	if answer != "" {
		d += ": " + answer
	}
	if tryLaterStatus(status) {
		err = &smsTryLater{after: after, err: err}
	}
	return d, err
}

// tryLaterStatus reports whether an HTTP status asks the client to send
// the same request again later.
func tryLaterStatus(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// smsTryLater is a provider's answer that asks for a later try, with its
// Retry-After (0 if none).
type smsTryLater struct {
	after time.Duration
	err   error
}

func (e *smsTryLater) Error() string   { return e.err.Error() }
func (e *smsTryLater) Unwrap() []error { return []error{ErrSMSTryLater, e.err} }

// SMSRetryable reports whether an error of SMSSender.Send is worth
// sending the same SMS again for, and the provider's Retry-After if it
// gave one. True for ErrSMSTryLater and for ErrUnreachable. The latter
// includes a timeout after the request went out, when the provider may
// have taken the SMS: a retry can then send it twice, which the
// message id the provider gets each time (http: message_id; vonage:
// client-ref) lets it detect.
func SMSRetryable(err error) (retry bool, after time.Duration) {
	var tl *smsTryLater
	if errors.As(err, &tl) {
		return true, tl.after
	}
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrSMSTryLater), 0
}

// vonageNumber drops the "+" of an E.164 number: Vonage wants digits only.
// Alphanumeric sender ids pass unchanged.
func vonageNumber(n string) string {
	if rest, ok := strings.CutPrefix(n, "+"); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
		return rest
	}
	return n
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	s = s[:maxDetail]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
