package waketest

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// recorder is what the APNs and FCM fakes share: answers scripted per
// device token with a default for the rest, the requests they record,
// the OnRequest hook and the counts of pushes received and accepted.
// Request is the fake's request type (APNsRequest, FCMRequest), Reply its
// scripted answer (APNsReply, FCMReply). The fakes embed it, so its
// exported methods are theirs. Its methods are safe for concurrent use.
type recorder[Request, Reply any] struct {
	tokenOf func(Request) string // the device token a request is for

	mu     sync.Mutex
	record bool
	reqs   []Request
	script map[string][]Reply
	def    Reply
	hook   func(Request)

	total    atomic.Int64
	accepted atomic.Int64
	seq      atomic.Uint64
}

// newRecorder returns a recorder with recording on and nothing scripted.
func newRecorder[Request, Reply any](tokenOf func(Request) string) recorder[Request, Reply] {
	return recorder[Request, Reply]{tokenOf: tokenOf, record: true, script: map[string][]Reply{}}
}

// Script queues answers for a device token: each request for it takes
// the next one; once they are used up the token gets the default answer.
func (f *recorder[Request, Reply]) Script(token string, replies ...Reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[token] = append(f.script[token], replies...)
}

// SetDefault sets the answer for requests with no scripted reply (for
// example APNsServiceUnavailable() or FCMUnavailable("") for an outage);
// the zero reply restores success.
func (f *recorder[Request, Reply]) SetDefault(r Reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = r
}

// Record turns request recording on (the default) or off (benchmarks).
func (f *recorder[Request, Reply]) Record(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record = on
}

// OnRequest sets fn (nil removes it) to be called with every push request
// the fake answers, recorded or not, after it chose the answer and before
// it writes it: a harness reacts to each wake as a device would (see
// package loadtest). The FCM fake's token requests are not included. fn
// runs on the request's goroutine, concurrently with other requests, and
// delays the answer while it runs.
func (f *recorder[Request, Reply]) OnRequest(fn func(Request)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// Requests returns a copy of the recorded requests, oldest first.
func (f *recorder[Request, Reply]) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.reqs...)
}

// RequestsFor returns the recorded requests for one device token.
func (f *recorder[Request, Reply]) RequestsFor(token string) []Request {
	var out []Request
	for _, r := range f.Requests() {
		if f.tokenOf(r) == token {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many pushes the fake received.
func (f *recorder[Request, Reply]) Count() int64 { return f.total.Load() }

// Accepted returns how many pushes the fake answered with 200.
func (f *recorder[Request, Reply]) Accepted() int64 { return f.accepted.Load() }

// received counts a push that reached the fake.
func (f *recorder[Request, Reply]) received() { f.total.Add(1) }

// next takes the answer for a request to token that passed the fake's
// checks: its next scripted reply, or the default.
func (f *recorder[Request, Reply]) next(token string) Reply {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q := f.script[token]; len(q) > 0 {
		f.script[token] = q[1:]
		return q[0]
	}
	return f.def
}

// answered records the request the fake answers with status, when
// recording is on, calls the OnRequest hook with it and counts a 200 as
// accepted. build makes the request only if one of them needs it.
func (f *recorder[Request, Reply]) answered(status int, build func() Request) {
	f.mu.Lock()
	record, hook := f.record, f.hook
	f.mu.Unlock()
	if record || hook != nil {
		req := build()
		if record {
			f.mu.Lock()
			f.reqs = append(f.reqs, req)
			f.mu.Unlock()
		}
		if hook != nil {
			hook(req)
		}
	}
	if status == http.StatusOK {
		f.accepted.Add(1)
	}
}

// nextID returns the next number for an answer's id (the APNs apns-id,
// the FCM message name).
func (f *recorder[Request, Reply]) nextID() uint64 { return f.seq.Add(1) }

// pause waits out a scripted delay, or until ctx (the request's) ends
// because the client gave up.
func pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
