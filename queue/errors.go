package queue

import (
	"errors"
	"time"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrNotFound: no such message, or it belongs to another app.
	ErrNotFound = errors.New("queue: not found")
	// ErrFinal: the message already reached a final state or was delivered.
	ErrFinal = errors.New("queue: message already final")
	// ErrHandingOver: the message's SMS fallback is being handed to the
	// provider (or a crash interrupted the hand-off, which is retried), so
	// it can no longer be cancelled; its outcome follows.
	ErrHandingOver = errors.New("queue: SMS fallback being handed to the provider")
	// ErrBadID: the string is not a message id.
	ErrBadID = errors.New("queue: malformed id")
	// ErrCorrupt: a stored record could not be decoded.
	ErrCorrupt = errors.New("queue: corrupt record")
	// ErrClosed: the queue was closed.
	ErrClosed = errors.New("queue: closed")
	// ErrIdempotencyMismatch: an idempotency key was reused with a
	// different request.
	ErrIdempotencyMismatch = errors.New("queue: idempotency key reused with a different request")
	// ErrInvalid: the request is not valid (see the wrapped message).
	ErrInvalid = errors.New("queue: invalid request")
)

// TryLaterError, returned by a FallbackSender, says the SMS provider did
// not take the message but may later (it was unreachable, or asked to be
// tried again): the queue sends the same SMS again after After, or its
// own backoff if that is longer, up to maxFallbackAttempts in all.
type TryLaterError struct {
	After time.Duration
	Err   error
}

func (e *TryLaterError) Error() string { return e.Err.Error() }
func (e *TryLaterError) Unwrap() error { return e.Err }
