package sdkproto

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// Defaults for Config's zero values.
const (
	DefaultDomain             = "localhost"
	DefaultAckInterval        = 200 * time.Millisecond
	DefaultAckEvery           = 10
	DefaultAckRequestEvery    = 8
	DefaultAckRequestInterval = 30 * time.Second
	DefaultWriteTimeout       = 10 * time.Second
	DefaultHandshakeTimeout   = 30 * time.Second
	// closeWait bounds how long Close waits for the server to end its side
	// of the stream before it closes the connection anyway.
	closeWait = 2 * time.Second
)

// Config configures a Client. New copies it and never changes it; the
// callbacks are called from the Client's reader goroutine (see Client).
type Config struct {
	// Transport is how to connect; the zero value is TransportTLS.
	Transport Transport
	// Addr is the gateway's host:port for TransportTLS (port 5223 by
	// default on the gateway) and TransportStartTLS (5222).
	Addr string
	// URL is the WebSocket endpoint for TransportWebSocket, ws:// or
	// wss://, normally ending in WebSocketPath. Over plain ws:// the
	// gateway allows SASL only from loopback.
	URL string

	// App is the app id; the stream goes to App + "." + Domain. Required.
	App string
	// Domain is the gateway's base domain. Zero means "localhost".
	Domain string
	// User is the user id (the SASL authcid and the JID's localpart).
	// Required.
	User string
	// Password is the user's password. Required.
	Password string
	// Device is the device id, bound as the XMPP resource every time.
	// Required.
	Device string

	// TLSConfig is cloned for TLS. Nil means a default configuration that
	// verifies the gateway's certificate against the system roots.
	// ServerName empty means the app domain on XMPP transports and the
	// URL's host for wss://. MinVersion zero means TLS 1.2. Set
	// ClientSessionCache to share TLS session tickets between Clients.
	TLSConfig *tls.Config
	// LocalAddr is the local address to dial from; nil lets the system
	// choose. SourceIP is a shortcut for a TCP address with that IP and
	// any port (load tests spread source addresses over 127.0.0.0/8).
	// LocalAddr wins if both are set.
	LocalAddr net.Addr
	SourceIP  string // e.g. "127.0.0.42"
	// WrapConn, if set, is given each TCP connection the Client dials
	// (either transport), before TLS or anything else reads or writes it,
	// and the Client uses what it returns: to count bytes, to observe
	// reads (the load test harness takes the kernel's receive times this
	// way), to shape traffic in a test.
	WrapConn func(net.Conn) net.Conn

	// Mechanism is the SASL mechanism to use (MechSCRAMSHA256,
	// MechSCRAMSHA1 or MechPLAIN). Zero means the strongest the server
	// offers, never PLAIN outside TLS. A set mechanism the server does not
	// offer fails the login with ErrMechanism.
	Mechanism string
	// Credentials caches SCRAM salted passwords across logins and Clients.
	// Nil means no cache: every SCRAM login runs PBKDF2.
	Credentials *CredentialCache

	// DisablePipelining makes every connection wait for the server's
	// features before each step of the negotiation. By default a Client
	// that has negotiated with the server before sends its <auth/> with
	// the stream header, and its resume (or bind and enable) with the
	// authenticated stream's header: four round trips to a session
	// instead of seven.
	DisablePipelining bool

	// DisableStreamManagement turns XEP-0198 off. By default the Client
	// enables it with resumption whenever the server offers it.
	DisableStreamManagement bool
	// AckInterval is how long the inbound stream must be quiet before the
	// Client acknowledges (XEP-0198 <a/>) what it received. Zero means
	// 200 ms.
	AckInterval time.Duration
	// AckEvery acknowledges at once after this many unacknowledged inbound
	// stanzas. Zero means 10.
	AckEvery int
	// AckRequestEvery makes the Client ask the server to acknowledge its
	// own stanzas (XEP-0198 <r/>) once this many are unacknowledged, and
	// AckRequestInterval after the first one otherwise. Unacknowledged
	// stanzas (receipts, markers) are kept and sent again after a
	// reconnect; asking after every one would cost the server a write and
	// the device a wake-up per receipt. Zero means 8 and 30 s.
	AckRequestEvery    int
	AckRequestInterval time.Duration
	// DedupeWindow is how many recent message ids the Client remembers to
	// drop redeliveries. Zero means DefaultDedupeWindow (4096).
	DedupeWindow int

	// AutoReconnect makes the Client reconnect after losing its session,
	// trying XEP-0198 resumption first, with Backoff{ReconnectMin,
	// ReconnectMax} between attempts. It stops after Close, after a
	// <conflict/> stream error (a newer session took the resource) and
	// after an authentication failure.
	AutoReconnect bool
	// ReconnectMin and ReconnectMax bound the reconnect backoff. Zero
	// means 500 ms and 30 s.
	ReconnectMin time.Duration // first-attempt floor
	ReconnectMax time.Duration // cap

	// WriteTimeout bounds each batch of writes. Zero means 10 s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds a connection attempt (dial, TLS, SASL, bind)
	// when the context has no earlier deadline. Zero means 30 s.
	HandshakeTimeout time.Duration

	// OnMessage is called for every message the gateway delivers, once per
	// message id (within DedupeWindow). Nil drops them (they are still
	// acknowledged by stream management).
	OnMessage func(*Message)
	// OnDisconnect is called when a session is lost, with nil if the
	// server ended the stream cleanly, a *StreamError, or the network
	// error; and again with the error if automatic reconnection gives up.
	// It is not called after Close.
	OnDisconnect func(error)
	// OnConnect is called each time a session is established by automatic
	// reconnection, with whether it was resumed.
	OnConnect func(resumed bool)
}

var (
	appIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	// userIDRe is SPEC section 1's user id, also allowing a leading '+'
	// as the SPEC's own example (+393331234567) and the gateway do.
	userIDRe   = regexp.MustCompile(`^[A-Za-z0-9+][A-Za-z0-9._+=-]{0,127}$`)
	deviceIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// withDefaults returns a copy of c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	orDefault(&c.AckInterval, DefaultAckInterval)
	orDefault(&c.AckEvery, DefaultAckEvery)
	orDefault(&c.AckRequestEvery, DefaultAckRequestEvery)
	orDefault(&c.AckRequestInterval, DefaultAckRequestInterval)
	orDefault(&c.DedupeWindow, DefaultDedupeWindow)
	orDefault(&c.WriteTimeout, DefaultWriteTimeout)
	orDefault(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	orDefault(&c.ReconnectMin, DefaultReconnectMin)
	orDefault(&c.ReconnectMax, DefaultReconnectMax)
	return c
}

// orDefault replaces a zero (or negative) count or duration with def.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// validate reports the first invalid field.
func (c *Config) validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s: %s", ErrConfig, field, why) }
	if !appIDRe.MatchString(c.App) {
		return bad("App", "must match "+appIDRe.String())
	}
	if !userIDRe.MatchString(c.User) {
		return bad("User", "must match "+userIDRe.String())
	}
	if !deviceIDRe.MatchString(c.Device) {
		return bad("Device", "must match "+deviceIDRe.String())
	}
	if c.Password == "" {
		return bad("Password", "required")
	}
	switch c.Transport {
	case TransportTLS, TransportStartTLS:
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return bad("Addr", err.Error())
		}
	case TransportWebSocket:
		u, err := url.Parse(c.URL)
		if err != nil {
			return bad("URL", err.Error())
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return bad("URL", "scheme must be ws or wss")
		}
	default:
		return bad("Transport", "unknown")
	}
	if c.SourceIP != "" && net.ParseIP(c.SourceIP) == nil {
		return bad("SourceIP", "not an IP address")
	}
	if c.Mechanism != "" && !slices.Contains(Mechanisms, c.Mechanism) {
		return bad("Mechanism", "unsupported")
	}
	return nil
}

func (c *Config) localAddr() net.Addr {
	if c.LocalAddr != nil {
		return c.LocalAddr
	}
	if c.SourceIP != "" {
		return &net.TCPAddr{IP: net.ParseIP(c.SourceIP)}
	}
	return nil
}

// domain is the app's XMPP domain.
func (c *Config) domain() string { return c.App + "." + c.Domain }

// tlsConfig builds the TLS configuration for the transport.
func (c *Config) tlsConfig() *tls.Config {
	var t *tls.Config
	if c.TLSConfig != nil {
		t = c.TLSConfig.Clone()
	} else {
		t = &tls.Config{}
	}
	if t.MinVersion == 0 {
		t.MinVersion = tls.VersionTLS12
	}
	if t.ServerName == "" && c.Transport != TransportWebSocket {
		t.ServerName = c.domain()
	}
	return t
}
