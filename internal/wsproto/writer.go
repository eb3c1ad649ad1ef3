package wsproto

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"
)

// AppendHeader appends the header of a final, unmasked server frame with
// a payload of n bytes: a frame's payload can then be written from where
// it already is (net.Buffers). It panics for a control opcode with n over
// MaxControlPayload, for OpContinuation, or for an opcode that is not
// defined.
func AppendHeader(dst []byte, op Opcode, n int) []byte {
	switch op {
	case OpText, OpBinary:
	case OpClose, OpPing, OpPong:
		if n > MaxControlPayload {
			panic("wsproto: control frame payload over 125 bytes")
		}
	default:
		panic("wsproto: AppendHeader with " + op.String())
	}
	if n < 0 {
		panic("wsproto: negative payload length")
	}
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	}
	dst = append(dst, b0, 127)
	return binary.BigEndian.AppendUint64(dst, uint64(n))
}

// AppendFrame appends a final, unmasked server frame. It panics as
// AppendHeader does.
func AppendFrame(dst []byte, op Opcode, payload []byte) []byte {
	dst = AppendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// AppendPong appends the pong answering a ping with the given payload.
func AppendPong(dst, ping []byte) []byte { return AppendFrame(dst, OpPong, ping) }

// AppendClose appends a close frame with a status code and reason. A code
// of 0 or CloseNoStatus gives a close frame without a payload (the reason
// is then ignored); a code that may not be sent (ValidCloseCode) panics. A
// reason over 123 bytes is cut at a UTF-8 boundary, and invalid UTF-8 in
// it is replaced, so the frame is always valid.
func AppendClose(dst []byte, code int, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return AppendHeader(dst, OpClose, 0)
	}
	if !ValidCloseCode(code) {
		panic("wsproto: AppendClose with an invalid status code")
	}
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	const maxReason = MaxControlPayload - 2
	if len(reason) > maxReason {
		i := maxReason
		for i > 0 && !utf8.RuneStart(reason[i]) {
			i--
		}
		reason = reason[:i]
	}
	dst = AppendHeader(dst, OpClose, 2+len(reason))
	dst = append(dst, byte(code>>8), byte(code))
	return append(dst, reason...)
}
