package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"go.uber.org/zap"

	"tether/internal/clock"
)

// Config is the gateway's configuration: SPEC section 2. Every field can be
// set by a flag and an environment variable (see cmd/gateway); the zero
// value of each field is documented next to it.
type Config struct {
	// DataDir holds the Pebble store, the generated TLS certificate and the
	// admin token file. Zero value: "./data".
	DataDir string
	// Domain is the base XMPP domain; app domains are "<app>.<Domain>".
	// Zero value: "localhost".
	Domain string
	// HTTPAddr serves the REST API, WebSocket and device pull over plain
	// HTTP. Empty disables it. Port 0 picks a free port.
	HTTPAddr string
	// HTTPSAddr serves the same handler over TLS. Empty disables it.
	HTTPSAddr string
	// XMPPAddr is XMPP c2s with STARTTLS required. Empty disables it.
	XMPPAddr string
	// XMPPSAddr is XMPP c2s with direct TLS. Empty disables it.
	XMPPSAddr string
	// MetricsAddr serves /metrics and /debug/pprof. Empty disables it.
	MetricsAddr string
	// TLSCert and TLSKey are PEM files. Both empty: a self-signed ECDSA
	// P-256 certificate is generated into DataDir on first start and reused.
	TLSCert, TLSKey string
	// AdminToken is the bearer token of the admin endpoints. Empty: one is
	// generated once into DataDir/admin-token (mode 0600) and logged.
	AdminToken string
	// Dev also ensures an app "demo" exists and prints how to use it.
	Dev bool

	// MaxBodyBytes caps request bodies. Zero value: 1 MiB.
	MaxBodyBytes int64
	// MaxPayloadBytes caps body+data of one message. Zero value: 16 KiB.
	MaxPayloadBytes int
	// ShutdownTimeout bounds graceful shutdown. Zero value: 15 s.
	ShutdownTimeout time.Duration
	// InMemory keeps the store in memory (tests only).
	InMemory bool

	// Banner receives the human-readable start messages (a generated admin
	// token, the --dev summary). Nil means they are only logged.
	Banner io.Writer
	// Logger. Nil means no logging.
	Logger *zap.Logger
	// Clock drives expiry and timestamps. Nil means the wall clock.
	Clock clock.Clock
	// TimerInterval is passed to the queue (negative disables the timer
	// loop, for tests with a manual clock). Zero value: 200 ms.
	TimerInterval time.Duration

	// SessionAuthTimeout, SessionIdleTimeout and SessionResumeWindow are
	// passed to the XMPP sessions (session.Config); tests shorten them.
	// Zero values: 10 s, 15 min and 300 s (SPEC section 6).
	// AppRateLimit is the REST requests per second each app's API key may
	// make (bursts of twice that); beyond it the API answers 429 with
	// Retry-After. Zero: no limit. The admin token is never limited.
	AppRateLimit float64
	// MaxSessionsPerUser caps one user's devices online at once, and
	// MaxSessions the node's sessions. Zero: no cap.
	MaxSessionsPerUser int
	MaxSessions        int

	// ProviderCAFile is a PEM file of extra CA certificates trusted, with
	// the system's, for push and SMS provider endpoints (private relays,
	// the soak harness's fakes). Empty: the system roots only.
	ProviderCAFile string

	// ProviderHTTPClient, when set, gives the HTTP client for a provider
	// ("apns", "fcm", "sms"): for tests and private relays with their own
	// CA. Nil means each adapter's default.
	ProviderHTTPClient func(provider string) *http.Client

	// GCPercent is the garbage collector's target (runtime/debug
	// SetGCPercent), process-wide: heap growth over the live heap before a
	// collection. A gateway's live heap is mostly long-lived session state,
	// and the runtime keeps up to that share of it again as free heap: 50
	// holds an idle TLS session in about 9.7 KiB of RSS where Go's default
	// 100 takes 11.7 KiB (docs/benchmarks.md), for more collections under
	// traffic. Zero value: 50, unless the GOGC environment variable is set,
	// which then stands. Negative: leave the runtime's setting alone.
	GCPercent int

	// Procs is how many goroutines may run Go code at once
	// (runtime.GOMAXPROCS), process-wide. Zero value: one more than the
	// CPUs the process may use (a spare P), unless the GOMAXPROCS
	// environment variable is set or a CPU quota keeps the runtime's own
	// choice below the machine's CPUs; either then stands. Negative:
	// leave the runtime's setting alone.
	//
	// Why a spare P: a P's run queue waits while the OS runs something
	// else on its thread (another process, the kernel's network work,
	// which for loopback and much of TCP runs in the sending thread's
	// time), and the other Ps take work from it only when they have none
	// of their own. With every P busy, a REST handler or a commit waiter
	// woken on a preempted P waits out the OS's time slice. A spare P is
	// an idle thread that steals it. In the soak's steady mix, sharing
	// two CPUs with the harness, the spare P cut the p99 of the time
	// goroutines wait to run by 23–45 ms (to 10–60 ms) and the
	// end-to-end p99 up to the device's socket by 10–12 ms in four pairs
	// of five, for 3–10 % more CPU per delivered message
	// (docs/benchmarks.md, session 29).
	// Under a CPU quota an extra P would only spend the quota sooner, so
	// it is not added there.
	Procs int

	// WebhookMinBackoff is the first retry delay of a failed webhook post,
	// doubling to 10 min. Zero value: 1 s.
	WebhookMinBackoff time.Duration

	SessionAuthTimeout  time.Duration
	SessionIdleTimeout  time.Duration
	SessionResumeWindow time.Duration
	// SessionAckTimeout ends a session from which nothing came within it
	// after an XEP-0198 ack request (session.Config.AckTimeout). Zero
	// value: 60 s.
	SessionAckTimeout time.Duration
	// SessionLostWakeGrace: a device whose connection was lost with
	// messages unacknowledged is woken if it has not resumed within it
	// (session.Config.LostWakeGrace). Zero value: 5 s.
	SessionLostWakeGrace time.Duration
	// RestartWakeGrace holds back, for this long after the gateway
	// starts, the wakes of devices whose session was up when the previous
	// process ended (a crash or a shutdown; queue.Device.Connected): they
	// reconnect by themselves, and a push would only race them (an alert
	// wake even shows the placeholder). Those that have not come back by
	// then are woken as usual. Zero value: 30 s; negative: no grace.
	RestartWakeGrace time.Duration
}

// Defaults for the listeners, as SPEC section 2 gives them. cmd/gateway uses
// them as flag defaults; a Config built in code starts with listeners off.
const (
	DefaultDataDir     = "./data"
	DefaultDomain      = "localhost"
	DefaultHTTPAddr    = "127.0.0.1:8080"
	DefaultHTTPSAddr   = ":8443"
	DefaultXMPPAddr    = ":5222"
	DefaultXMPPSAddr   = ":5223"
	DefaultMetricsAddr = "127.0.0.1:9090"

	defaultMaxBody         = 1 << 20
	defaultMaxPayload      = 16 << 10
	defaultShutdownTimeout = 15 * time.Second
	DefaultGCPercent       = 50
)

var domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// setDefaults fills zero values.
func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = defaultMaxBody
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = defaultMaxPayload
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = defaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	c.Clock = clock.Or(c.Clock)
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if !domainRE.MatchString(c.Domain) {
		errs = append(errs, fmt.Errorf("domain %q is not a valid DNS name", c.Domain))
	}
	for _, a := range []struct{ name, v string }{
		{"http-addr", c.HTTPAddr}, {"https-addr", c.HTTPSAddr}, {"xmpp-addr", c.XMPPAddr},
		{"xmpps-addr", c.XMPPSAddr}, {"metrics-addr", c.MetricsAddr},
	} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", a.name, a.v, err))
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" || n > 65535 {
			errs = append(errs, fmt.Errorf("%s %q: the port must be a number from 0 to 65535", a.name, a.v))
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key must be set together"))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("admin-token must be at least 16 characters"))
	}
	if c.MaxPayloadBytes < 0 || c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	return errors.Join(errs...)
}
