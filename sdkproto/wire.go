package sdkproto

import "time"

// XML namespaces of the device protocol (SPEC section 6).
const (
	NSClient    = "jabber:client"
	NSStream    = "http://etherx.jabber.org/streams"
	NSTLS       = "urn:ietf:params:xml:ns:xmpp-tls"
	NSSASL      = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSBind      = "urn:ietf:params:xml:ns:xmpp-bind"
	NSSession   = "urn:ietf:params:xml:ns:xmpp-session"
	NSStanzas   = "urn:ietf:params:xml:ns:xmpp-stanzas"
	NSStreams   = "urn:ietf:params:xml:ns:xmpp-streams"
	NSFraming   = "urn:ietf:params:xml:ns:xmpp-framing" // RFC 7395 WebSocket framing
	NSSM        = "urn:xmpp:sm:3"                       // XEP-0198
	NSPing      = "urn:xmpp:ping"                       // XEP-0199
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
	NSRoster    = "jabber:iq:roster"
	NSReceipts  = "urn:xmpp:receipts"       // XEP-0184
	NSMarkers   = "urn:xmpp:chat-markers:0" // XEP-0333
	NSDelay     = "urn:xmpp:delay"          // XEP-0203
	NSReply     = "urn:xmpp:reply:0"        // XEP-0461
	NSData      = "urn:tether:data:0"
	NSExpire    = "urn:tether:expire:0"
	NSChannel   = "urn:tether:channel:0"
	NSPush      = "urn:tether:push:0"
	NSConfig    = "urn:tether:config:0"
)

// WebSocketProtocol is the WebSocket subprotocol of RFC 7395, and
// WebSocketPath the gateway's endpoint.
const (
	WebSocketProtocol = "xmpp"
	WebSocketPath     = "/xmpp-websocket"
)

// Limits and timers the gateway enforces.
const (
	// MaxStanzaBytes: a larger stanza from a client closes the stream
	// with <policy-violation/>.
	MaxStanzaBytes = 64 << 10
	// MaxReceivedStanzaBytes is the largest stanza a client takes from the
	// gateway (Reader, ParseElement, the WebSocket read limit). It is over
	// MaxStanzaBytes because escaping grows a message: its payload of up
	// to 16 KiB (body and data) takes up to 5 bytes a byte in XML (& is
	// &amp;), about 81 KiB with the envelope.
	MaxReceivedStanzaBytes = 128 << 10
	// AuthTimeout: a connection not authenticated (or, on 5222, not in TLS)
	// by then is closed.
	AuthTimeout = 10 * time.Second
	// IdleTimeout: a session with no traffic for this long is closed.
	IdleTimeout = 15 * time.Minute
	// ResumeWindow: how long a dropped session with stream management can
	// be resumed (XEP-0198 max).
	ResumeWindow = 300 * time.Second
)

// SASL mechanisms the gateway offers, strongest first. PLAIN is offered
// only inside TLS.
var Mechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}
