package wsproto

import (
	"encoding/binary"
	"math"
	"unicode/utf8"
)

// Reader parses the frames a client sends. Its zero value is ready to use
// and accepts messages of any size; set MaxMessage to bound them.
//
// # Buffer contract
//
// The caller keeps the bytes it has read from the connection in a buffer
// and passes the unconsumed part, buf, to Next. Next returns n, the number
// of bytes at the front of buf that are consumed: the caller drops them
// and passes what follows (extended by whatever it reads next) to the next
// call. ErrNeedMore consumes nothing.
//
// A single-frame message, and any frame outside a fragmented message,
// comes back with n covering the whole frame. The frames of a fragmented
// message are kept in buf until the last one arrives: Next unmasks each
// complete frame and moves its payload down to follow the payload of the
// frames before it, starting at buf[0], and remembers how many bytes it
// has processed so far. Meanwhile it returns n == 0 (also for a control
// frame between the fragments, which it has processed and skips on later
// calls), and the caller must pass the same bytes again, extended: it may
// copy them to a larger buffer, but must not change them. When the last
// frame is in, the message is buf[:len(Payload)] and n covers all its
// frames. Next also modifies the bytes of the frame it returns, unmasking
// them in place.
//
// While a fragmented message is incomplete, buf holds its payload so far,
// then frame headers and control frames already processed, then the rest.
// Compact squeezes out the processed bytes in the middle; a caller that
// calls it whenever its buffer fills up never needs more than
// BufferSize(MaxMessage) bytes.
//
// # Errors
//
// A protocol violation is a *CloseError carrying the status code to send;
// it is sticky: later calls return it again. Nothing may follow a close
// frame (RFC 6455 section 5.5.1): the caller answers it, unless it sent
// one first, and closes the connection without parsing further; the
// Reader itself does not enforce this.
type Reader struct {
	// MaxMessage bounds a data message's payload (all its fragments
	// together); a frame whose header takes it over is a CloseMessageTooBig
	// error. Zero means no limit. Control frames are bounded by the
	// protocol (MaxControlPayload).
	MaxMessage int

	op      Opcode // of the fragmented message in progress; OpContinuation when none
	msgLen  int    // its payload so far, at buf[:msgLen]
	scanned int    // bytes of buf processed: its frames and control frames between them
	err     *CloseError
}

// Next parses the first message or control frame in buf. See Reader for
// the buffer contract.
func (r *Reader) Next(buf []byte) (n int, m Message, err error) {
	if r.err != nil {
		return 0, Message{}, r.err
	}
	if len(buf) < r.scanned {
		return 0, Message{}, ErrBufferChanged
	}
	for {
		p := buf[r.scanned:]
		if len(p) == 0 {
			return 0, Message{}, ErrNeedMore
		}
		b0 := p[0]
		fin := b0&0x80 != 0
		op := Opcode(b0 & 0x0f)
		if b0&0x70 != 0 {
			return r.fail(CloseProtocolError, "reserved bit set without an extension")
		}
		switch op {
		case OpContinuation:
			if r.op == OpContinuation {
				return r.fail(CloseProtocolError, "continuation frame outside a fragmented message")
			}
		case OpText, OpBinary:
			if r.op != OpContinuation {
				return r.fail(CloseProtocolError, "new data frame inside a fragmented message")
			}
		case OpClose, OpPing, OpPong:
			if !fin {
				return r.fail(CloseProtocolError, "fragmented control frame")
			}
		default:
			return r.fail(CloseProtocolError, "unknown opcode")
		}
		if len(p) < 2 {
			return 0, Message{}, ErrNeedMore
		}
		b1 := p[1]
		if b1&0x80 == 0 {
			return r.fail(CloseProtocolError, "unmasked client frame")
		}
		length := uint64(b1 & 0x7f)
		hdr := 2
		if op.IsControl() && length > MaxControlPayload {
			return r.fail(CloseProtocolError, "control frame payload over 125 bytes")
		}
		switch length {
		case 126:
			if len(p) < 4 {
				return 0, Message{}, ErrNeedMore
			}
			length, hdr = uint64(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return 0, Message{}, ErrNeedMore
			}
			length, hdr = binary.BigEndian.Uint64(p[2:]), 10
			if length>>63 != 0 {
				return r.fail(CloseProtocolError, "payload length with the most significant bit set")
			}
		}
		if !op.IsControl() {
			room := uint64(maxPayload - r.msgLen)
			if r.MaxMessage > 0 {
				room = min(room, uint64(r.MaxMessage-r.msgLen))
			}
			if length > room {
				return r.fail(CloseMessageTooBig, "message over the size limit")
			}
		}
		hdr += 4
		size := hdr + int(length)
		if len(p) < size {
			return 0, Message{}, ErrNeedMore
		}
		payload := p[hdr:size]
		unmask([4]byte(p[hdr-4:hdr]), payload)

		if op.IsControl() {
			if op == OpClose {
				if code, reason := checkClose(payload); code != 0 {
					return r.fail(code, reason)
				}
			}
			if r.op != OpContinuation {
				// Between fragments: processed, but the message's bytes
				// before it are not consumed yet.
				r.scanned += size
				return 0, Message{Op: op, Payload: payload}, nil
			}
			return size, Message{Op: op, Payload: payload}, nil
		}
		if r.op == OpContinuation {
			if fin {
				if op == OpText && !utf8.Valid(payload) {
					return r.fail(CloseInvalidPayload, "text message not valid UTF-8")
				}
				return size, Message{Op: op, Payload: payload}, nil
			}
			r.op = op // the first fragment
		}
		r.msgLen += copy(buf[r.msgLen:], payload)
		r.scanned += size
		if !fin {
			continue
		}
		m = Message{Op: r.op, Payload: buf[:r.msgLen]}
		n = r.scanned
		r.op, r.msgLen, r.scanned = OpContinuation, 0, 0
		if m.Op == OpText && !utf8.Valid(m.Payload) {
			return r.fail(CloseInvalidPayload, "text message not valid UTF-8")
		}
		return n, m, nil
	}
}

// Compact removes the frame headers and control frames already processed
// from the middle of a fragmented message's bytes: it moves buf's
// unprocessed rest down to follow the payload so far and returns buf's new
// length. The caller's buffered bytes become buf[:Compact(buf)]. It does
// nothing (returning len(buf)) outside a fragmented message. It
// invalidates the payload of a control frame returned before.
func (r *Reader) Compact(buf []byte) int {
	if r.err != nil || r.scanned == r.msgLen || len(buf) < r.scanned {
		return len(buf)
	}
	k := copy(buf[r.msgLen:], buf[r.scanned:])
	r.scanned = r.msgLen
	return r.msgLen + k
}

// InMessage reports whether a fragmented message is incomplete: its bytes
// are in the caller's buffer, which must be kept.
func (r *Reader) InMessage() bool { return r.op != OpContinuation }

// Reset makes r ready for a new connection, keeping MaxMessage.
func (r *Reader) Reset() { *r = Reader{MaxMessage: r.MaxMessage} }

// maxPayload bounds a message when MaxMessage does not: far more than
// any buffer holds, small enough that offsets cannot overflow.
const maxPayload = math.MaxInt >> 1

func (r *Reader) fail(code int, reason string) (int, Message, error) {
	r.err = &CloseError{Code: code, Reason: reason}
	return 0, Message{}, r.err
}

// checkClose validates a close frame's payload: empty, or a status code
// that may be sent and a UTF-8 reason. It returns the code to fail the
// connection with, or 0.
func checkClose(p []byte) (int, string) {
	switch {
	case len(p) == 0:
		return 0, ""
	case len(p) == 1:
		return CloseProtocolError, "close frame with a one-byte payload"
	case !ValidCloseCode(int(p[0])<<8 | int(p[1])):
		return CloseProtocolError, "close frame with an invalid status code"
	case !utf8.Valid(p[2:]):
		return CloseInvalidPayload, "close reason not valid UTF-8"
	}
	return 0, ""
}

// unmask XORs b with the masking key, b[0] with key[0].
func unmask(key [4]byte, b []byte) {
	if len(b) >= 8 {
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for len(b) >= 32 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^k)
			binary.LittleEndian.PutUint64(b[16:], binary.LittleEndian.Uint64(b[16:])^k)
			binary.LittleEndian.PutUint64(b[24:], binary.LittleEndian.Uint64(b[24:])^k)
			b = b[32:]
		}
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
