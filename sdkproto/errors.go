package sdkproto

import (
	"errors"
	"strings"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrClosed is returned by calls on a Client after Close.
	ErrClosed = errors.New("sdkproto: client closed")
	// ErrNotConnected is returned by calls that need a live session (IQs)
	// while the Client has none.
	ErrNotConnected = errors.New("sdkproto: not connected")
	// ErrAlreadyConnected is returned by Connect on a Client that has a
	// session.
	ErrAlreadyConnected = errors.New("sdkproto: already connected")
	// ErrDisconnected is returned by a request whose session ended before
	// the answer came.
	ErrDisconnected = errors.New("sdkproto: disconnected before the answer")
	// ErrStanzaTooLarge is returned by Reader.Next for a top-level element
	// over MaxReceivedStanzaBytes.
	ErrStanzaTooLarge = errors.New("sdkproto: stanza exceeds MaxReceivedStanzaBytes")
	// ErrServerSignature means the server's SCRAM signature did not verify:
	// the server does not know the password, or someone is in the middle.
	ErrServerSignature = errors.New("sdkproto: SCRAM server signature mismatch")
	// ErrMechanism means the server offers none of the SASL mechanisms the
	// client may use.
	ErrMechanism = errors.New("sdkproto: no usable SASL mechanism")
	// ErrProtocol means the server sent something the protocol does not
	// allow at that point.
	ErrProtocol = errors.New("sdkproto: protocol violation by the server")
	// ErrConfig means the Config is missing a required field or has an
	// invalid one; the wrapping error names it.
	ErrConfig = errors.New("sdkproto: invalid config")
	// ErrOutboundTooLarge is returned by Send for a message whose stanza,
	// once encoded (escaping makes a '&' five bytes), is over
	// MaxStanzaBytes: the gateway would refuse it.
	ErrOutboundTooLarge = errors.New("sdkproto: message stanza exceeds MaxStanzaBytes")
	// ErrInCallback is returned by a call that waits for the server's
	// answer (Send, Ping, RegisterPush, ...) made from a callback: the
	// answer is read by the goroutine running the callback. Call it from
	// another goroutine.
	ErrInCallback = errors.New("sdkproto: blocking call from a callback")
)

// StreamError is an RFC 6120 stream error sent by the server, after which
// the stream is closed. Condition is the defined condition's element name
// ("conflict", "system-shutdown", "policy-violation", ...).
type StreamError struct {
	Condition string // defined condition, e.g. "conflict"
	Text      string // the optional <text/>, for humans
}

// Error describes the stream error.
func (e *StreamError) Error() string {
	if e.Text != "" {
		return "sdkproto: stream error: " + e.Condition + ": " + e.Text
	}
	return "sdkproto: stream error: " + e.Condition
}

// Temporary reports whether reconnecting may help. A conflict (a newer
// session took the resource), host-unknown and not-authorized are final:
// reconnecting would just repeat them or fight the newer session.
func (e *StreamError) Temporary() bool {
	switch e.Condition {
	case "conflict", "host-unknown", "not-authorized", "host-gone", "improper-addressing", "invalid-namespace", "unsupported-version":
		return false
	}
	return true
}

// Is makes errors.Is(err, &StreamError{Condition: c}) match on the
// condition alone.
func (e *StreamError) Is(target error) bool {
	t, ok := target.(*StreamError)
	return ok && (t.Condition == "" || t.Condition == e.Condition)
}

// SASLError is an RFC 6120 SASL <failure/> ("not-authorized",
// "temporary-auth-failure", ...). Logging in again with the same
// credentials will fail the same way unless Condition is
// "temporary-auth-failure".
type SASLError struct {
	Condition string // defined condition, e.g. "not-authorized"
	Text      string // the optional <text/>, or a SCRAM "e=" value
}

// Error describes the SASL failure.
func (e *SASLError) Error() string {
	if e.Text != "" {
		return "sdkproto: SASL failure: " + e.Condition + ": " + e.Text
	}
	return "sdkproto: SASL failure: " + e.Condition
}

// Is makes errors.Is(err, &SASLError{Condition: c}) match on the condition.
func (e *SASLError) Is(target error) bool {
	t, ok := target.(*SASLError)
	return ok && (t.Condition == "" || t.Condition == e.Condition)
}

// StanzaError is an RFC 6120 stanza error returned in answer to an IQ or a
// message ("service-unavailable", "bad-request", ...). Type is the error
// type attribute ("cancel", "modify", "wait", "auth").
type StanzaError struct {
	Type      string // "cancel", "modify", "wait" or "auth"
	Condition string // defined condition, e.g. "service-unavailable"
	Text      string // the optional <text/>
}

// Error describes the stanza error.
func (e *StanzaError) Error() string {
	var b strings.Builder
	b.WriteString("sdkproto: stanza error: ")
	b.WriteString(e.Condition)
	if e.Type != "" {
		b.WriteString(" (" + e.Type + ")")
	}
	if e.Text != "" {
		b.WriteString(": " + e.Text)
	}
	return b.String()
}

// Is makes errors.Is(err, &StanzaError{Condition: c}) match on the
// condition.
func (e *StanzaError) Is(target error) bool {
	t, ok := target.(*StanzaError)
	return ok && (t.Condition == "" || t.Condition == e.Condition)
}

// parseStreamError reads a <stream:error/>.
func parseStreamError(e *Element) *StreamError {
	cond, text := definedCondition(e, NSStreams, "undefined-condition")
	return &StreamError{Condition: cond, Text: text}
}

// parseSASLFailure reads a SASL <failure/>.
func parseSASLFailure(e *Element) *SASLError {
	cond, text := definedCondition(e, "", "not-authorized")
	return &SASLError{Condition: cond, Text: text}
}

// parseStanzaError reads the <error/> child of an error stanza.
func parseStanzaError(stanza *Element) *StanzaError {
	e := stanza.Child(stanzaNS(stanza), "error")
	if e == nil {
		return &StanzaError{Condition: "undefined-condition"}
	}
	cond, text := definedCondition(e, NSStanzas, "undefined-condition")
	return &StanzaError{Type: e.AttrValue("type"), Condition: cond, Text: text}
}

// definedCondition reads the defined condition (the last child other than
// <text/>, or def if there is none) and the <text/> of an error element,
// looking only at children in namespace ns, or at all of them if ns is "".
func definedCondition(e *Element, ns, def string) (cond, text string) {
	cond = def
	for _, c := range e.Children {
		if ns != "" && c.Name.Space != ns {
			continue
		}
		if c.Name.Local == "text" {
			text = c.Text
		} else {
			cond = c.Name.Local
		}
	}
	return cond, text
}
