// Package wake sends the native pushes that wake an offline device (APNs
// and FCM, SPEC section 5) and the fallback SMS (SPEC section 8), through
// the providers' real client libraries, and classifies every answer.
//
// It is the only package that imports the push clients
// (github.com/sideshow/apns2, firebase.google.com/go/v4). Besides them it
// imports the standard library, golang.org/x/net/http2,
// google.golang.org/api (option, and transport/http to put the OAuth2
// layer over our own transport), golang.org/x/oauth2 (its context key and
// RetrieveError), go.uber.org/zap and Prometheus; nothing of Tether's. The
// wake policy (who is offline, one outstanding wake per device, backoff,
// hourly caps, token invalidation, events) belongs to the gateway, which
// calls in here.
//
// # Providers
//
// Provider is one push service with one app's credentials: Name() and
// Send(ctx, Target, Payload) (Result, error). Send blocks until the
// provider answers or its timeout passes; callers that must not block use
// a Pool. Adapters:
//
//   - APNs (NewAPNs): token authentication with the app's .p8 key over one
//     HTTP/2 client, many concurrent streams per connection. Alert mode
//     (the default): apns-push-type alert, priority 10 for high and 5 for
//     normal, {"aps":{"alert":"New message","mutable-content":1}}.
//     Background mode: apns-push-type background, priority 5,
//     {"aps":{"content-available":1}}. Always apns-expiration (the
//     payload's Expiration) and apns-collapse-id tether-wake, and beside
//     aps only "tether":"wake" and "pending":N.
//   - FCM (NewFCM): HTTP v1 with the app's service account. A data-only
//     message {"tether":"wake","pending":"N"} with android.priority high or
//     normal, ttl the remaining life (rounded up to seconds, at most 4
//     weeks) and collapse_key tether-wake.
//
// No push carries message content.
//
// # Results
//
// Result.Outcome is Delivered, TokenInvalid (remove the registration and
// never push the token again), RetryAfter (429, 5xx or no answer; back off,
// and wait at least Result.RetryAfter when the provider sent one) or
// Failed (other rejections, not worth retrying as is). Result.Reason is the
// provider's reason text. The error of Send is nil whenever the provider
// answered; it wraps ErrUnreachable (no answer), ErrInvalidTarget or
// ErrExpired (nothing sent). Each adapter's Send documents its mapping;
// the choices worth knowing:
//
//   - APNs 400 DeviceTokenNotForTopic is Failed, not TokenInvalid: a wrong
//     topic in the app's configuration causes it for every token, and
//     TokenInvalid would then discard them all for good.
//   - An APNs token that is not hexadecimal is TokenInvalid without being
//     sent (APNs would answer BadDeviceToken; it also keeps arbitrary
//     characters out of the request path).
//   - FCM INVALID_ARGUMENT is TokenInvalid unless FCM's BadRequest detail
//     names a field other than message.token.
//   - The firebase client would retry 503s and transport errors itself for
//     up to several seconds (or minutes, with Retry-After); the FCM adapter
//     stops that after the first attempt (see FCM) so that retrying stays
//     the caller's policy.
//
// # SMS
//
// SMSSender (NewSMSSender) posts one SMS to the app's provider: "http"
// (JSON with a bearer key) or "vonage" (the SMS API form). Send returns the
// provider's name and its answer (message id or error text) for the status
// record.
//
// # Pool
//
// Pool runs sends on a fixed number of workers (64 by default) fed by a
// bounded queue. Submit never blocks: it returns false when the queue is
// full. SubmitWait waits for a slot instead, until its context ends or
// Close starts; it is for callers off a request's path, such as a
// goroutine fanning one message out to thousands of devices, so a burst
// larger than the queue is sent as workers free up. Job.Done receives each outcome on a worker goroutine. The Pool
// counts outcomes (tether_wakes_total{provider,result}) and times them
// (tether_wake_latency_seconds{provider}); the gateway registers
// Pool.Collectors. Close drains with a time limit.
//
// # Concurrency and lifecycle
//
// APNs, FCM, SMSSender and Pool are safe for concurrent use. The
// constructors validate the configuration (a .p8 key that does not parse,
// service account JSON that does not, an unknown SMS provider: ErrConfig)
// and do no network I/O; connections open with the first send. Close on an
// adapter closes its idle connections; build a new adapter when an app's
// credentials change. Pool: NewPool starts the workers, Submit or
// SubmitWait, Close. There is one mutex per Pool and no lock order to
// respect.
//
// # Testing
//
// Package wake/waketest has loopback fakes of each provider that speak the
// real protocols (APNs over HTTP/2 and TLS, FCM HTTP v1 with its OAuth2
// token endpoint, the http and Vonage SMS APIs), so the real clients'
// serialization is what the tests check.
package wake
