package wsproto

import (
	"errors"
	"strconv"
)

// Opcode is a frame's opcode (RFC 6455 section 5.2).
type Opcode uint8

const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (close, ping, pong or
// a reserved one).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

func (op Opcode) String() string {
	switch op {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "opcode(" + strconv.Itoa(int(op)) + ")"
}

// Close status codes (RFC 6455 section 7.4.1).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	// CloseNoStatus is what Message.CloseStatus reports for a close frame
	// without a payload; it is never sent.
	CloseNoStatus = 1005
	// CloseAbnormal means the connection ended without a close frame; it
	// is never sent.
	CloseAbnormal        = 1006
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
)

// ValidCloseCode reports whether code may appear in a close frame:
// 1000-1003, 1007-1011, the later IANA registrations 1012-1014, and the
// ranges for libraries and applications, 3000-4999. 1005, 1006 and 1015
// are reserved for reporting and never sent.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// CloseError is a protocol violation by the peer: the connection must be
// failed, sending a close frame with Code (AppendClose) and then closing
// it. Reason says what was wrong.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return "wsproto: " + e.Reason + " (close " + strconv.Itoa(e.Code) + ")"
}

// ErrNeedMore says the buffered bytes hold only part of the next message
// or control frame: read more, then call again.
var ErrNeedMore = errors.New("wsproto: need more input")

// ErrBufferChanged is returned when a Reader is handed fewer bytes than
// it has already processed: the caller broke the buffer contract.
var ErrBufferChanged = errors.New("wsproto: buffer shorter than the bytes already parsed")

const (
	// MaxControlPayload is the largest payload of a control frame.
	MaxControlPayload = 125
	// MaxHeader is the largest frame header from a client: two bytes, an
	// eight-byte extended length and the four-byte masking key.
	MaxHeader = 14
	// MaxControlFrame is the largest control frame from a client.
	MaxControlFrame = 2 + 4 + MaxControlPayload
)

// BufferSize is a read buffer size that always leaves room to make
// progress with messages of at most limit bytes, provided the caller calls
// Reader.Compact before deciding the buffer is full.
func BufferSize(limit int) int { return limit + MaxControlFrame }

// Message is a complete data message or a control frame.
type Message struct {
	// Op is OpText, OpBinary, OpClose, OpPing or OpPong: never
	// OpContinuation.
	Op Opcode
	// Payload aliases the caller's buffer, unmasked. It stays valid until
	// the next call to Reader.Next or Reader.Compact, or until the caller
	// reuses those bytes.
	Payload []byte
}

// CloseStatus returns the status code and reason of a close frame
// (already validated by Reader.Next): CloseNoStatus and no reason when the
// payload is empty.
func (m Message) CloseStatus() (code int, reason []byte) {
	if len(m.Payload) < 2 {
		return CloseNoStatus, nil
	}
	return int(m.Payload[0])<<8 | int(m.Payload[1]), m.Payload[2:]
}
