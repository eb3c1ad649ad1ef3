package waketest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"tether/wake"
)

// SMS is a fake SMS provider with two APIs on one server: the "http"
// provider at POST /send (JSON, bearer key) and the Vonage SMS API at
// POST /sms/json (form, api_key and api_secret). Its methods are safe for
// concurrent use.
type SMS struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// APIKey is the bearer key of /send and the Vonage api_key; APISecret
	// the Vonage api_secret.
	APIKey    string
	APISecret string

	srv *httptest.Server

	mu     sync.Mutex
	reqs   []SMSRequest
	script []SMSReply
	seq    int
}

// SMSRequest is one request the fake received.
type SMSRequest struct {
	Provider  string // "http" or "vonage"
	Header    http.Header
	Body      []byte
	Form      url.Values // vonage only
	To        string
	From      string
	Text      string
	MessageID string // http: message_id; vonage: client-ref
	Status    int    // the HTTP status the fake answered
	At        time.Time
}

// SMSReply is a scripted answer to the next request. For the http API,
// Status and Body are the answer (zero Status: 202 with {"id":...}). For
// Vonage, a VonageStatus other than "" or "0" fails the message with
// ErrorText (the HTTP status stays 200, as Vonage does); a non-zero Status
// overrides the HTTP status with Body.
type SMSReply struct {
	Status       int
	Body         string
	VonageStatus string
	ErrorText    string
	RetryAfter   string // the Retry-After header of an answer with Status
}

// NewSMS starts a fake SMS server and closes it with t.Cleanup.
func NewSMS(t testing.TB) *SMS {
	t.Helper()
	return mustStart(t, StartSMS)
}

// StartSMS starts a fake SMS server on 127.0.0.1. Close it with Close.
func StartSMS() (*SMS, error) {
	f := &SMS{APIKey: "sms-test-key", APISecret: "sms-test-secret"}
	var err error
	if f.srv, err = startServer(f, false); err != nil {
		return nil, err
	}
	f.URL = f.srv.URL
	return f, nil
}

// Close closes the server.
func (f *SMS) Close() { f.srv.Close() }

// HTTPConfig returns an "http" provider configuration for the fake.
func (f *SMS) HTTPConfig() wake.SMSConfig {
	return wake.SMSConfig{Provider: wake.SMSProviderHTTP, URL: f.URL + "/send", APIKey: f.APIKey, From: "Tether"}
}

// VonageConfig returns a "vonage" provider configuration for the fake.
func (f *SMS) VonageConfig() wake.SMSConfig {
	return wake.SMSConfig{Provider: wake.SMSProviderVonage, URL: f.URL, APIKey: f.APIKey, APISecret: f.APISecret, From: "Tether"}
}

// Script queues answers for the next requests, in order.
func (f *SMS) Script(replies ...SMSReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, replies...)
}

// Requests returns a copy of the recorded requests, oldest first.
func (f *SMS) Requests() []SMSRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SMSRequest(nil), f.reqs...)
}

func (f *SMS) next() (SMSReply, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if len(f.script) > 0 {
		r := f.script[0]
		f.script = f.script[1:]
		return r, f.seq
	}
	return SMSReply{}, f.seq
}

// answer records rec with the status it answers and writes the JSON
// body with that status.
func (f *SMS) answer(w http.ResponseWriter, rec SMSRequest, status int, body string) {
	rec.Status, rec.At = status, time.Now()
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// answerScripted answers with a scripted HTTP status, body and
// Retry-After.
func (f *SMS) answerScripted(w http.ResponseWriter, rec SMSRequest, reply SMSReply) {
	if reply.RetryAfter != "" {
		w.Header().Set("Retry-After", reply.RetryAfter)
	}
	f.answer(w, rec, reply.Status, reply.Body)
}

// ServeHTTP implements both APIs.
func (f *SMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/send":
		f.serveHTTP(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/sms/json":
		f.serveVonage(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *SMS) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	rec := SMSRequest{Provider: wake.SMSProviderHTTP, Header: r.Header.Clone(), Body: body}
	var m struct {
		To        string `json:"to"`
		From      string `json:"from"`
		Text      string `json:"text"`
		MessageID string `json:"message_id"`
	}
	answer := func(status int, body string) { f.answer(w, rec, status, body) }
	if r.Header.Get("Authorization") != "Bearer "+f.APIKey {
		answer(http.StatusUnauthorized, `{"error":"invalid api key"}`)
		return
	}
	if err := json.Unmarshal(body, &m); err != nil || m.To == "" || m.Text == "" {
		answer(http.StatusBadRequest, `{"error":"to and text are required"}`)
		return
	}
	rec.To, rec.From, rec.Text, rec.MessageID = m.To, m.From, m.Text, m.MessageID
	reply, n := f.next()
	if reply.Status == 0 {
		answer(http.StatusAccepted, fmt.Sprintf(`{"id":"sms-%d"}`, n))
		return
	}
	f.answerScripted(w, rec, reply)
}

func (f *SMS) serveVonage(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	form, _ := url.ParseQuery(string(body))
	rec := SMSRequest{Provider: wake.SMSProviderVonage, Header: r.Header.Clone(), Body: body, Form: form,
		To: form.Get("to"), From: form.Get("from"), Text: form.Get("text"), MessageID: form.Get("client-ref")}
	answer := func(status int, body string) { f.answer(w, rec, status, body) }
	fail := func(status, text string) {
		answer(http.StatusOK, fmt.Sprintf(`{"message-count":"1","messages":[{"status":%q,"error-text":%q}]}`, status, text))
	}
	if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		fail("2", "Missing api_key")
		return
	}
	switch {
	case form.Get("api_key") == "" || form.Get("api_secret") == "":
		fail("2", "Missing api_key")
		return
	case form.Get("api_key") != f.APIKey || form.Get("api_secret") != f.APISecret:
		fail("4", "Bad Credentials")
		return
	case rec.To == "":
		fail("2", "Missing to param")
		return
	case rec.From == "":
		fail("2", "Missing from param")
		return
	case rec.Text == "":
		fail("2", "Missing text param")
		return
	}
	reply, n := f.next()
	switch {
	case reply.Status != 0:
		f.answerScripted(w, rec, reply)
	case reply.VonageStatus != "" && reply.VonageStatus != "0":
		fail(reply.VonageStatus, reply.ErrorText)
	default:
		answer(http.StatusOK, fmt.Sprintf(`{"message-count":"1","messages":[{"to":%q,"message-id":"0A0000000%07X","status":"0","remaining-balance":"10.00000000","message-price":"0.03330000","network":"22201"}]}`, rec.To, n))
	}
}
