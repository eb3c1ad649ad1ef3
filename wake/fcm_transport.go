package wake

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
)

// The firebase messaging client retries a 503 and any transport error up
// to 4 times, waiting 0 s, 1 s, 2 s and 4 s (or the 503's Retry-After, up
// to 2 minutes) in between (firebase.google.com/go/v4 internal
// http_client.go, WithDefaultRetryConfig). Its retry settings are not
// reachable from outside, but its wait ends when the request's context is
// done. So attemptTransport, the outermost RoundTripper of the client,
// records the first attempt's outcome as the context's cancel cause and
// cancels it whenever the client would retry: the wait returns at once and
// FCM.Send reads the recorded outcome with context.Cause.

// attemptKey is the context key of a send's *attemptState.
type attemptKey struct{}

// attemptState is one FCM.Send's view of its HTTP attempts.
type attemptState struct {
	cancel   context.CancelCauseFunc
	attempts atomic.Int32 // RoundTrips started
}

// attemptStop is the cancel cause recorded by attemptTransport: either a
// transport error (err) or a 503 answer (status, header, body).
type attemptStop struct {
	err    error
	status int
	header http.Header
	body   []byte
}

func (s *attemptStop) Error() string {
	if s.err != nil {
		return "wake: fcm attempt failed: " + s.err.Error()
	}
	return "wake: fcm attempt answered " + http.StatusText(s.status)
}

func (s *attemptStop) Unwrap() error { return s.err }

// attemptTransport is the outermost RoundTripper: it sees each attempt's
// final outcome, after the OAuth2 layer.
type attemptTransport struct{ next http.RoundTripper }

func (t attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(attemptKey{}).(*attemptState)
	if st == nil {
		return t.next.RoundTrip(req)
	}
	st.attempts.Add(1)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		st.cancel(&attemptStop{err: err})
		return nil, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		// The only status the client retries. Keep the body for
		// classification and hand the client an identical copy.
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if rerr != nil {
			st.cancel(&attemptStop{err: rerr})
			return nil, rerr
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		st.cancel(&attemptStop{status: resp.StatusCode, header: resp.Header, body: body})
	}
	return resp, nil
}
