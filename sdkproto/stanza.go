package sdkproto

import (
	"encoding/json"
	"strconv"
	"time"
)

// Message is a message the gateway delivered to the device (SPEC section
// 6). A Message handed to OnMessage belongs to the callee.
type Message struct {
	ID      string          // the gateway's message id; the same on every redelivery
	From    string          // normally the app domain
	Body    string          // text, may be empty
	Data    json.RawMessage // the backend's JSON payload, nil if none
	Channel string          // conversation channel, "" if none
	// Stamp is when the gateway accepted the message (XEP-0203 delay); zero
	// if the stanza carried none.
	Stamp time.Time
	// ExpiresAt is when the gateway stops trying to deliver it; zero if
	// the stanza carried none.
	ExpiresAt time.Time
	// ReceiptRequested and Markable report XEP-0184 <request/> and
	// XEP-0333 <markable/>.
	ReceiptRequested bool // XEP-0184 <request/>
	Markable         bool // XEP-0333 <markable/>
}

// stanzaNS returns the namespace of e's stanza-level children: jabber:client
// on TCP, and tolerate frames that forgot it on WebSocket.
func stanzaNS(e *Element) string { return e.Name.Space }

// isStanza reports whether e is the named stanza in the client namespace
// (or in none, which lax WebSocket servers produce).
func isStanza(e *Element, local string) bool {
	return e.Name.Local == local && (e.Name.Space == NSClient || e.Name.Space == "")
}

// ParseMessage decodes a <message/> stanza. It returns ok false if e is not
// a message or carries neither a body nor data (a receipt, a marker or an
// error). Unparseable timestamps are left zero. Safe for concurrent use.
func ParseMessage(e *Element) (m *Message, ok bool) {
	if !isStanza(e, "message") || e.AttrValue("type") == "error" {
		return nil, false
	}
	m = &Message{ID: e.AttrValue("id"), From: e.AttrValue("from")}
	hasContent := false
	ns := e.Name.Space
	for _, c := range e.Children {
		switch {
		case c.Name.Local == "body" && c.Name.Space == ns:
			m.Body = c.Text
			hasContent = true
		case c.Is(NSData, "data"):
			if c.Text != "" {
				m.Data = json.RawMessage(c.Text)
			}
			hasContent = true
		case c.Is(NSChannel, "channel"):
			m.Channel = c.Text
		case c.Is(NSDelay, "delay"):
			m.Stamp = parseTime(c.AttrValue("stamp"))
		case c.Is(NSExpire, "expire"):
			m.ExpiresAt = parseTime(c.AttrValue("at"))
		case c.Is(NSReceipts, "request"):
			m.ReceiptRequested = true
		case c.Is(NSMarkers, "markable"):
			m.Markable = true
		}
	}
	if !hasContent {
		return nil, false
	}
	return m, true
}

func parseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Outbound is a message from the device to the app's backend, which gets
// it as a message.inbound event.
type Outbound struct {
	// ID is the stanza id; empty means the Client generates one. The
	// gateway's receipt refers to it.
	ID      string
	Body    string          // text; Body or Data is required
	Data    json.RawMessage // JSON payload; must be valid JSON if set
	Channel string          // conversation channel, optional
	// InReplyTo is the id of a gateway message this one answers
	// (XEP-0461 <reply/>).
	InReplyTo string
}

// appendOutbound appends the <message/> stanza for o, asking for a receipt.
func appendOutbound(dst []byte, to, id string, o *Outbound) []byte {
	dst = append(dst, "<message to='"...)
	dst = appendEscaped(dst, to, true)
	dst = append(dst, "' id='"...)
	dst = appendEscaped(dst, id, true)
	dst = append(dst, "'>"...)
	if o.Body != "" {
		dst = append(dst, "<body>"...)
		dst = appendEscaped(dst, o.Body, false)
		dst = append(dst, "</body>"...)
	}
	if len(o.Data) > 0 {
		dst = append(dst, "<data xmlns='"+NSData+"'>"...)
		dst = appendEscaped(dst, string(o.Data), false)
		dst = append(dst, "</data>"...)
	}
	if o.Channel != "" {
		dst = append(dst, "<channel xmlns='"+NSChannel+"'>"...)
		dst = appendEscaped(dst, o.Channel, false)
		dst = append(dst, "</channel>"...)
	}
	if o.InReplyTo != "" {
		dst = append(dst, "<reply xmlns='"+NSReply+"' id='"...)
		dst = appendEscaped(dst, o.InReplyTo, true)
		dst = append(dst, "'/>"...)
	}
	return append(dst, "<request xmlns='"+NSReceipts+"'/></message>"...)
}

// appendMarker appends a receipt (<received/>) or displayed marker for id.
func appendMarker(dst []byte, to, name, ns, id string) []byte {
	dst = append(dst, "<message to='"...)
	dst = appendEscaped(dst, to, true)
	dst = append(dst, "'><"...)
	dst = append(dst, name...)
	dst = append(dst, " xmlns='"...)
	dst = append(dst, ns...)
	dst = append(dst, "' id='"...)
	dst = appendEscaped(dst, id, true)
	return append(dst, "'/></message>"...)
}

// appendIQ appends <iq type=typ id=id>payload</iq>.
func appendIQ(dst []byte, typ, id, payload string) []byte {
	dst = append(dst, "<iq type='"...)
	dst = append(dst, typ...)
	dst = append(dst, "' id='"...)
	dst = appendEscaped(dst, id, true)
	if payload == "" {
		return append(dst, "'/>"...)
	}
	dst = append(dst, "'>"...)
	dst = append(dst, payload...)
	return append(dst, "</iq>"...)
}

func appendSMAck(dst []byte, h uint32) []byte {
	dst = append(dst, "<a xmlns='"+NSSM+"' h='"...)
	dst = strconv.AppendUint(dst, uint64(h), 10)
	return append(dst, "'/>"...)
}

// features is what a <stream:features/> offers that the client uses.
type features struct {
	startTLS         bool
	mechanisms       []string
	bind             bool
	session          bool
	sessionRequired  bool
	streamManagement bool
}

func parseFeatures(e *Element) features {
	var f features
	for _, c := range e.Children {
		switch {
		case c.Is(NSTLS, "starttls"):
			f.startTLS = true
		case c.Is(NSSASL, "mechanisms"):
			for _, m := range c.Children {
				if m.Name.Local == "mechanism" {
					f.mechanisms = append(f.mechanisms, m.Text)
				}
			}
		case c.Is(NSBind, "bind"):
			f.bind = true
		case c.Is(NSSession, "session"):
			f.session = true
			f.sessionRequired = c.Child(NSSession, "optional") == nil
		case c.Is(NSSM, "sm"):
			f.streamManagement = true
		}
	}
	return f
}

func isFeatures(e *Element) bool {
	return e.Name.Local == "features" && (e.Name.Space == NSStream || e.Name.Space == "stream")
}

func isStreamError(e *Element) bool {
	return e.Name.Local == "error" && (e.Name.Space == NSStream || e.Name.Space == "stream")
}
