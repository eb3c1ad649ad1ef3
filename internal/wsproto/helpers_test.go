package wsproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"unicode/utf8"
)

var testKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// frame builds a masked client frame.
func frame(fin bool, op Opcode, payload string) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	return rawFrame(b0, true, 0, []byte(payload))
}

// rawFrame builds a client frame with the first byte b0 as given, masked
// or not, with the length in the smallest encoding or in lenBytes (2 or
// 8) extended bytes.
func rawFrame(b0 byte, masked bool, lenBytes int, payload []byte) []byte {
	n := len(payload)
	var mbit byte
	if masked {
		mbit = 0x80
	}
	b := []byte{b0}
	switch {
	case lenBytes == 8 || lenBytes == 0 && n > 0xffff:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	case lenBytes == 2 || lenBytes == 0 && n > 125:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|byte(n))
	}
	if !masked {
		return append(b, payload...)
	}
	b = append(b, testKey[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= testKey[i&3]
	}
	return b
}

func cat(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	return b
}

// outcome is what a run of the Reader over some input gave: the messages
// (as "op:payload"), the error code that ended it (0: none, the input ran
// out), and the bytes consumed.
type outcome struct {
	msgs     []string
	code     int
	consumed int
}

func (o outcome) String() string {
	return fmt.Sprintf("msgs=%q code=%d consumed=%d", o.msgs, o.code, o.consumed)
}

func (o outcome) equal(p outcome, withConsumed bool) bool {
	if o.code != p.code || len(o.msgs) != len(p.msgs) || withConsumed && o.consumed != p.consumed {
		return false
	}
	for i := range o.msgs {
		if o.msgs[i] != p.msgs[i] {
			return false
		}
	}
	return true
}

func msgString(m Message) string { return m.Op.String() + ":" + string(m.Payload) }

// drive feeds input to a Reader in chunks of the given sizes (cycled; the
// whole input at once if none), as a connection's reader would: the
// buffer holds the bytes not consumed yet, extended by each read. With
// compact it calls Compact before each read, and checks that the buffer
// then stays under BufferSize. It fails t if a call neither consumes nor
// advances. After a close frame it stops, as a server would.
func drive(t testing.TB, input []byte, limit int, sizes []int, compact bool) outcome {
	t.Helper()
	data := append([]byte(nil), input...) // the Reader unmasks in place
	r := Reader{MaxMessage: limit}
	var (
		o    outcome
		buf  []byte
		next int
		si   int
	)
	for iter := 0; ; iter++ {
		before := r.scanned
		n, m, err := r.Next(buf)
		if err == ErrNeedMore {
			if n != 0 {
				t.Fatalf("ErrNeedMore with n=%d", n)
			}
			if next == len(data) {
				return o
			}
			if compact {
				buf = buf[:r.Compact(buf)]
				if limit > 0 && len(buf) >= BufferSize(limit) {
					t.Fatalf("%d bytes buffered after Compact, BufferSize(%d)=%d", len(buf), limit, BufferSize(limit))
				}
			}
			k := len(data) - next
			if len(sizes) > 0 {
				k = min(k, sizes[si%len(sizes)])
				si++
			}
			buf = append(buf, data[next:next+k]...)
			next += k
			continue
		}
		if err != nil {
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a CloseError", err)
			}
			if _, _, err2 := r.Next(buf); err2 != err {
				t.Fatalf("error not sticky: %v then %v", err, err2)
			}
			o.code = ce.Code
			return o
		}
		if n < 0 || n > len(buf) {
			t.Fatalf("n=%d with %d bytes buffered", n, len(buf))
		}
		if n == 0 && r.scanned <= before {
			t.Fatalf("no progress: n=0, scanned %d -> %d", before, r.scanned)
		}
		if m.Op == OpContinuation {
			t.Fatalf("message with opcode continuation")
		}
		o.msgs = append(o.msgs, msgString(m))
		o.consumed += n
		buf = buf[n:]
		if m.Op == OpClose {
			return o
		}
	}
}

// reference parses input the simple way: frame by frame, from the whole
// input, with a separate reassembly buffer. It is the model drive's
// results are checked against.
func reference(input []byte, limit int) outcome {
	var (
		o    outcome
		p    = input
		frag []byte
		fop  Opcode
		off  int
	)
	fail := func(code int) outcome { o.code = code; return o }
	for len(p) > 0 {
		b0 := p[0]
		fin, op := b0&0x80 != 0, Opcode(b0&0xf)
		if b0&0x70 != 0 {
			return fail(CloseProtocolError)
		}
		switch {
		case op == OpContinuation && fop == 0:
			return fail(CloseProtocolError)
		case (op == OpText || op == OpBinary) && fop != 0:
			return fail(CloseProtocolError)
		case op >= 8 && op <= 10 && !fin:
			return fail(CloseProtocolError)
		case op > 2 && op < 8 || op > 10:
			return fail(CloseProtocolError)
		}
		if len(p) < 2 {
			return o
		}
		if p[1]&0x80 == 0 {
			return fail(CloseProtocolError)
		}
		l, h := uint64(p[1]&0x7f), 2
		if op >= 8 && l > 125 {
			return fail(CloseProtocolError)
		}
		if l == 126 {
			if len(p) < 4 {
				return o
			}
			l, h = uint64(binary.BigEndian.Uint16(p[2:])), 4
		} else if l == 127 {
			if len(p) < 10 {
				return o
			}
			l, h = binary.BigEndian.Uint64(p[2:]), 10
			if l>>63 != 0 {
				return fail(CloseProtocolError)
			}
		}
		if op < 8 && limit > 0 && l+uint64(len(frag)) > uint64(limit) {
			return fail(CloseMessageTooBig)
		}
		if op < 8 && l+uint64(len(frag)) > maxPayload {
			return fail(CloseMessageTooBig)
		}
		if uint64(len(p)) < uint64(h+4)+l {
			return o
		}
		pl := make([]byte, l)
		for i := range pl {
			pl[i] = p[h+4+i] ^ p[h+(i&3)]
		}
		size := h + 4 + int(l)
		p = p[size:]
		if op >= 8 {
			if op == OpClose {
				if code, _ := checkClose(pl); code != 0 {
					return fail(code)
				}
			}
			if fop == 0 {
				o.consumed += size
			} else {
				off += size
			}
			o.msgs = append(o.msgs, op.String()+":"+string(pl))
			if op == OpClose {
				return o
			}
			continue
		}
		if fop == 0 {
			fop = op
		}
		frag = append(frag, pl...)
		off += size
		if !fin {
			continue
		}
		if fop == OpText && !utf8.Valid(frag) {
			return fail(CloseInvalidPayload)
		}
		o.msgs = append(o.msgs, fop.String()+":"+string(frag))
		o.consumed += off
		frag, fop, off = nil, 0, 0
	}
	return o
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}
