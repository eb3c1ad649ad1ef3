package wake

import "errors"

// Sentinel errors. Callers compare with errors.Is; the returned errors wrap
// them with the operation and the underlying cause.
var (
	// ErrConfig: a provider or SMS configuration is invalid (a .p8 key that
	// is not a PKCS#8 ECDSA PEM, service account JSON that does not parse,
	// a missing field, an unknown provider). Returned by the constructors.
	ErrConfig = errors.New("wake: invalid configuration")

	// ErrInvalidTarget: the target cannot be pushed as given (no token, no
	// APNs topic, an unknown environment). Nothing was sent; the Result is
	// Failed.
	ErrInvalidTarget = errors.New("wake: invalid target")

	// ErrExpired: the payload's expiration is not in the future, so there
	// is nothing left to wake the device for. Nothing was sent; the Result
	// is Failed with reason "expired".
	ErrExpired = errors.New("wake: payload already expired")

	// ErrUnreachable: the provider gave no answer (connection failure,
	// timeout, cancelled context, a response that could not be read). The
	// Result is RetryAfter; the error also wraps the cause, so
	// errors.Is(err, context.DeadlineExceeded) works.
	ErrUnreachable = errors.New("wake: no answer from provider")

	// ErrSMSRejected: the SMS provider answered but did not accept the
	// message (a non-2xx status, or a non-zero Vonage status).
	ErrSMSRejected = errors.New("wake: sms rejected by provider")

	// ErrSMSTryLater: the SMS provider answered that it cannot take the
	// message now (HTTP 408, 429 or 5xx; Vonage status 1 "Throttled" or 5
	// "Internal Error"), so the same SMS may be sent again later. It is
	// wrapped together with ErrSMSRejected. See SMSRetryable.
	ErrSMSTryLater = errors.New("wake: sms provider asks to try later")

	// ErrClosed: the Pool was closed before the job could be sent.
	ErrClosed = errors.New("wake: pool closed")

	// ErrDrainTimeout: Pool.Close gave up waiting for queued jobs; the
	// in-flight sends were cancelled and the rest completed with ErrClosed.
	ErrDrainTimeout = errors.New("wake: pool drain timed out")
)
