package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"tether/gateway/api"
)

// TestWebhookSink: the receiver takes signed posts only, drops repeated
// event ids, and the check tells lost, doubled and unconfirmed inbound
// messages apart.
func TestWebhookSink(t *testing.T) {
	s, err := startWebhookSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	post := func(secret string, evs ...api.Event) int {
		t.Helper()
		body, _ := json.Marshal(api.WebhookBatch{Events: evs})
		req, _ := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(body))
		req.Header.Set(api.SignatureHeader, api.SignWebhook(secret, time.Now(), body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	in := func(id, user, device, msg string) api.Event {
		return api.Event{ID: id, Type: "message.inbound", User: user, Device: device, MessageID: msg}
	}
	if got := post("wrong-secret", in("e9", "u", "d", "m9")); got != http.StatusUnauthorized {
		t.Fatalf("a post with a bad signature: %d, want 401", got)
	}
	if got := post(s.secret, in("e1", "u", "d", "m1"), api.Event{ID: "e2", Type: "message.delivered", MessageID: "x"}); got != http.StatusNoContent {
		t.Fatalf("a signed post: %d, want 204", got)
	}
	post(s.secret, in("e1", "u", "d", "m1"))                            // the same batch again: a repeat
	post(s.secret, in("e3", "u", "d", "m1"))                            // the same device message under a new id
	post(s.secret, in("e4", "u", "d2", "m1"), in("e5", "v", "d", "m2")) // another device's m1; an unconfirmed one

	confirmed := map[string]struct{}{
		inboundKey("u", "d", "m1"):  {},
		inboundKey("u", "d2", "m1"): {},
		inboundKey("w", "d", "m3"):  {}, // never came
	}
	got := s.check(confirmed)
	want := webhookChecks{Posts: 4, Events: 6, Repeats: 1, Confirmed: 3, Seen: 2, Lost: 1, Twice: 1, Unconfirmed: 1}
	if got != want {
		t.Errorf("check: %+v, want %+v", got, want)
	}
}
