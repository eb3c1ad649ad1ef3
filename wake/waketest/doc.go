// Package waketest has loopback fakes of the push and SMS providers that
// speak their real protocols, for tests that drive the real clients
// (github.com/sideshow/apns2, firebase.google.com/go/v4) through package
// wake:
//
//   - NewAPNs: an HTTP/2 TLS server with APNs' POST /3/device/{token}. It
//     checks the provider token (an ES256 JWT signed with the fake's own
//     .p8 key), the topic and the headers APNs checks, records each
//     request, and answers 200 with an apns-id, or what a test scripts per
//     token (410 Unregistered with a timestamp, 400 BadDeviceToken, 429
//     TooManyRequests, 503 ServiceUnavailable).
//   - NewFCM: FCM HTTP v1's POST /v1/projects/{project}/messages:send with
//     the real error body shape, and the OAuth2 token endpoint that its
//     service account JSON names (token_uri), so the adapter's production
//     authentication runs too.
//   - NewSMS: the "http" SMS provider (JSON with a bearer key) and the
//     Vonage SMS API form (POST /sms/json).
//
// Every fake binds 127.0.0.1 on a random port, is closed by t.Cleanup (the
// Start* variants return a fake to Close yourself, for non-test harnesses),
// and is safe for concurrent use. Config methods return a wake
// configuration pointed at the fake.
//
// For harnesses that run the gateway in another process (the soak harness,
// loadtest): APNs.CertificatePEM is the certificate to pass to the
// gateway's --provider-ca-file, and APNs.OnRequest and FCM.OnRequest call
// back on every push, so the harness can react to each wake (with Record
// off, nothing accumulates).
package waketest
