package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Webhooks (SPEC section 7): the gateway posts an app's events to its
// webhook URL as a WebhookBatch, signed with the app's webhook secret in
// the Tether-Signature header. A receiver checks the signature with
// VerifyWebhook, or serves WebhookHandler, which does it all.

// SignatureHeader is the header that carries a webhook post's signature.
const SignatureHeader = "Tether-Signature"

// DefaultWebhookTolerance is how far a signature's time may be from the
// receiver's clock in WebhookHandler: a captured post replayed later than
// this is refused. The gateway signs each attempt afresh, so retries are
// not affected.
const DefaultWebhookTolerance = 5 * time.Minute

// MaxWebhookBody bounds the body WebhookHandler reads: 100 events, each
// with an inbound message of at most 16 KiB of body and data (escaped),
// fit with room to spare.
const MaxWebhookBody = 16 << 20

// Errors of VerifyWebhook.
var (
	// ErrSignature: the header is missing or malformed, or no v1
	// signature in it matches the body and the secret.
	ErrSignature = errors.New("tether webhook: signature does not match")
	// ErrSignatureExpired: the signature matches but its time is further
	// from now than the tolerance (a replay, or a clock far off).
	ErrSignatureExpired = errors.New("tether webhook: signature time outside the tolerance")
)

// WebhookBatch is the body of a webhook post: up to 100 events of one app,
// oldest first. Events have unique ids; a batch that was not acknowledged
// (no 2xx) comes again, so a receiver drops ids it has seen.
type WebhookBatch struct {
	Events []Event `json:"events"`
}

// SignWebhook returns the Tether-Signature value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func SignWebhook(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyWebhook checks a webhook post: header is its Tether-Signature,
// body its raw body, secret the app's webhook secret. With a positive
// tolerance the signature's time must also be within tolerance of now.
// The header may carry several v1 values (any one matching is enough), so
// a receiver keeps working while a secret changes. On success it returns
// the decoded batch.
func VerifyWebhook(secret, header string, body []byte, tolerance time.Duration, now time.Time) (*WebhookBatch, error) {
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return nil, fmt.Errorf("%w: malformed %s header", ErrSignature, SignatureHeader)
	}
	want := webhookMAC(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return nil, ErrSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); tolerance > 0 && (d > tolerance || d < -tolerance) {
		return nil, fmt.Errorf("%w: signed %s ago", ErrSignatureExpired, d.Round(time.Second))
	}
	var b WebhookBatch
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("tether webhook: body: %w", err)
	}
	return &b, nil
}

// WebhookHandler returns an http.Handler that receives an app's webhook
// posts: it checks each post's signature (DefaultWebhookTolerance) and
// passes the events to handle. It answers 204 when handle returns nil,
// which acknowledges the batch, and 500 otherwise, so the gateway posts it
// again later (with backoff, in order); 401 to a post whose signature does
// not match, 400 to one it cannot read, 405 to anything but POST. handle
// must be idempotent: after a lost answer the same events come again.
func WebhookHandler(secret string, handle func(ctx context.Context, events []Event) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		b, err := VerifyWebhook(secret, r.Header.Get(SignatureHeader), body, DefaultWebhookTolerance, time.Now())
		switch {
		case errors.Is(err, ErrSignature), errors.Is(err, ErrSignatureExpired):
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := handle(r.Context(), b.Events); err != nil {
			http.Error(w, "not handled: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
