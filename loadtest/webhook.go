package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"tether/gateway/api"
)

// webhookSink is the backend's end of the app's webhook (-webhook), served
// with the SDK's api.WebhookHandler, which checks each post's signature.
// It keeps the message.inbound events by device message (user, device,
// stanza id) with their event ids, and counts every event: the verdict
// then checks that each inbound message the gateway confirmed to its
// device reached the backend, and only once after dropping repeated event
// ids (SPEC section 7).
type webhookSink struct {
	url, secret string
	srv         *http.Server

	mu      sync.Mutex
	inbound map[string][]string // device message key → distinct event ids
	events  uint64              // events received, repeats included
	repeats uint64              // inbound events whose id came before (a batch posted again)
	posts   uint64
}

// inboundKey names a device's message as the webhook's message.inbound
// event and the sending device both know it.
func inboundKey(user, device, id string) string { return user + "\x00" + device + "\x00" + id }

func startWebhookSink() (*webhookSink, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sec := make([]byte, 16)
	rand.Read(sec)
	s := &webhookSink{
		url: "http://" + ln.Addr().String() + "/events", secret: hex.EncodeToString(sec),
		inbound: map[string][]string{},
	}
	s.srv = &http.Server{Handler: api.WebhookHandler(s.secret, s.handle), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *webhookSink) handle(_ context.Context, evs []api.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.posts++
	s.events += uint64(len(evs))
	for i := range evs {
		e := &evs[i]
		if e.Type != "message.inbound" {
			continue
		}
		k := inboundKey(e.User, e.Device, e.MessageID)
		if slices.Contains(s.inbound[k], e.ID) {
			s.repeats++
			continue
		}
		s.inbound[k] = append(s.inbound[k], e.ID)
	}
	return nil
}

func (s *webhookSink) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// webhookChecks are the -webhook figures.
type webhookChecks struct {
	Posts   uint64 `json:"posts"`
	Events  uint64 `json:"events"`
	Repeats uint64 `json:"inbound_id_repeats"` // inbound events whose id came again (dropped, as a receiver does)
	// Confirmed are the inbound messages whose receipt reached their
	// device; Seen those of them the backend got, Lost the others.
	Confirmed uint64 `json:"inbound_confirmed"`
	Seen      uint64 `json:"inbound_seen"`
	Lost      uint64 `json:"inbound_lost"`
	// Twice are device messages the backend got under two event ids: the
	// gateway stored one device message twice.
	Twice uint64 `json:"inbound_twice"`
	// Unconfirmed are inbound events of messages whose device saw no
	// receipt (sent around a kill): allowed.
	Unconfirmed uint64 `json:"inbound_unconfirmed"`
}

// check compares the confirmed inbound messages with what arrived.
func (s *webhookSink) check(confirmed map[string]struct{}) webhookChecks {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := webhookChecks{Posts: s.posts, Events: s.events, Repeats: s.repeats, Confirmed: uint64(len(confirmed))}
	for k := range confirmed {
		if _, ok := s.inbound[k]; ok {
			c.Seen++
		} else {
			c.Lost++
		}
	}
	for k, ids := range s.inbound {
		if len(ids) > 1 {
			c.Twice++
		}
		if _, ok := confirmed[k]; !ok {
			c.Unconfirmed++
		}
	}
	return c
}
