package wsproto

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

type readerCase struct {
	name  string
	in    []byte
	limit int
	msgs  []string
	code  int
}

func closePayload(code int, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, uint16(code))) + reason
}

func readerCases() []readerCase {
	big := strings.Repeat("x", 70000)
	mid := strings.Repeat("y", 200)
	cs := []readerCase{
		{name: "text", in: frame(true, OpText, "hello"), msgs: []string{"text:hello"}},
		{name: "binary", in: frame(true, OpBinary, "\x00\xff\xfe"), msgs: []string{"binary:\x00\xff\xfe"}},
		{name: "empty text", in: frame(true, OpText, ""), msgs: []string{"text:"}},
		{name: "16-bit length", in: frame(true, OpText, mid), msgs: []string{"text:" + mid}},
		{name: "64-bit length", in: frame(true, OpText, big), msgs: []string{"text:" + big}},
		{name: "length not minimal", in: rawFrame(0x81, true, 8, []byte("abc")), msgs: []string{"text:abc"}},
		{name: "two messages", in: cat(frame(true, OpText, "a"), frame(true, OpBinary, "b")), msgs: []string{"text:a", "binary:b"}},
		{name: "fragmented", in: cat(frame(false, OpText, "hel"), frame(true, OpContinuation, "lo")), msgs: []string{"text:hello"}},
		{
			name: "fragmented with empty frames",
			in:   cat(frame(false, OpBinary, ""), frame(false, OpContinuation, "ab"), frame(false, OpContinuation, ""), frame(false, OpContinuation, mid), frame(true, OpContinuation, "")),
			msgs: []string{"binary:ab" + mid},
		},
		{
			name: "fragmented with controls between",
			in: cat(frame(false, OpText, "one "), frame(true, OpPing, "p1"), frame(false, OpContinuation, "two "),
				frame(true, OpPong, ""), frame(true, OpPing, "p2"), frame(true, OpContinuation, "three"), frame(true, OpText, "after")),
			msgs: []string{"ping:p1", "pong:", "ping:p2", "text:one two three", "text:after"},
		},
		{
			name: "big fragmented",
			in:   cat(frame(false, OpText, big), frame(true, OpPing, mid[:125]), frame(true, OpContinuation, big)),
			msgs: []string{"ping:" + mid[:125], "text:" + big + big},
		},
		{
			name: "close between fragments",
			in:   cat(frame(false, OpText, "a"), frame(true, OpClose, closePayload(1001, "bye")), frame(true, OpContinuation, "b")),
			msgs: []string{"close:" + closePayload(1001, "bye")},
		},
		{name: "ping", in: frame(true, OpPing, "are you there"), msgs: []string{"ping:are you there"}},
		{name: "ping 125", in: frame(true, OpPing, mid[:125]), msgs: []string{"ping:" + mid[:125]}},
		{name: "pong", in: frame(true, OpPong, "x"), msgs: []string{"pong:x"}},
		{name: "close empty", in: frame(true, OpClose, ""), msgs: []string{"close:"}},
		{name: "close code only", in: frame(true, OpClose, closePayload(1000, "")), msgs: []string{"close:" + closePayload(1000, "")}},
		{name: "close with reason", in: frame(true, OpClose, closePayload(1000, "fin ✓")), msgs: []string{"close:" + closePayload(1000, "fin ✓")}},
		{name: "nothing after close", in: cat(frame(true, OpClose, ""), []byte{0xff, 0xff}), msgs: []string{"close:"}},

		{name: "unmasked", in: rawFrame(0x81, false, 0, []byte("hi")), code: CloseProtocolError},
		{name: "unmasked control", in: rawFrame(0x89, false, 0, nil), code: CloseProtocolError},
		{name: "rsv1", in: rawFrame(0x81|0x40, true, 0, []byte("hi")), code: CloseProtocolError},
		{name: "rsv2", in: rawFrame(0x81|0x20, true, 0, []byte("hi")), code: CloseProtocolError},
		{name: "rsv3", in: rawFrame(0x81|0x10, true, 0, []byte("hi")), code: CloseProtocolError},
		{name: "rsv on continuation", in: cat(frame(false, OpText, "a"), rawFrame(0x80|0x40, true, 0, []byte("b"))), code: CloseProtocolError},
		{name: "fragmented ping", in: rawFrame(0x09, true, 0, nil), code: CloseProtocolError},
		{name: "fragmented close", in: rawFrame(0x08, true, 0, nil), code: CloseProtocolError},
		{name: "control 126", in: rawFrame(0x89, true, 2, []byte(mid[:126])), code: CloseProtocolError},
		{name: "control 16-bit length", in: rawFrame(0x8a, true, 2, []byte("x")), code: CloseProtocolError},
		{name: "continuation first", in: frame(true, OpContinuation, "x"), code: CloseProtocolError},
		{name: "continuation after message", in: cat(frame(true, OpText, "a"), frame(true, OpContinuation, "x")), msgs: []string{"text:a"}, code: CloseProtocolError},
		{name: "text inside fragmented", in: cat(frame(false, OpText, "a"), frame(true, OpText, "x")), code: CloseProtocolError},
		{name: "binary inside fragmented", in: cat(frame(false, OpBinary, "a"), frame(false, OpBinary, "x")), code: CloseProtocolError},
		{name: "length msb", in: []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}, code: CloseProtocolError},
		{name: "length near 2^63", in: []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, code: CloseMessageTooBig},

		{name: "at limit", limit: 5, in: frame(true, OpText, "12345"), msgs: []string{"text:12345"}},
		{name: "over limit", limit: 5, in: frame(true, OpText, "123456"), code: CloseMessageTooBig},
		{name: "over limit header only", limit: 100, in: frame(true, OpText, big)[:10], code: CloseMessageTooBig},
		{name: "fragments at limit", limit: 6, in: cat(frame(false, OpText, "123"), frame(true, OpContinuation, "456")), msgs: []string{"text:123456"}},
		{name: "fragments over limit", limit: 6, in: cat(frame(false, OpText, "123"), frame(false, OpContinuation, "45"), frame(true, OpContinuation, "67")), code: CloseMessageTooBig},
		{name: "limit leaves control frames alone", limit: 1, in: frame(true, OpPing, "ping!"), msgs: []string{"ping:ping!"}},

		{name: "text not UTF-8", in: frame(true, OpText, "a\xffb"), code: CloseInvalidPayload},
		{name: "text surrogate", in: frame(true, OpText, "\xed\xa0\x80"), code: CloseInvalidPayload},
		{name: "text truncated rune", in: frame(true, OpText, "é"[:1]), code: CloseInvalidPayload},
		{name: "binary not UTF-8", in: frame(true, OpBinary, "a\xffb"), msgs: []string{"binary:a\xffb"}},
		{name: "rune split across fragments", in: cat(frame(false, OpText, "\xe2\x9c"), frame(true, OpContinuation, "\x93")), msgs: []string{"text:✓"}},
		{name: "fragmented not UTF-8", in: cat(frame(false, OpText, "ok"), frame(true, OpContinuation, "\xc0\xaf")), code: CloseInvalidPayload},
		{name: "valid message then bad frame", in: cat(frame(true, OpText, "ok"), rawFrame(0x81, false, 0, nil)), msgs: []string{"text:ok"}, code: CloseProtocolError},

		{name: "close one byte", in: frame(true, OpClose, "\x03"), code: CloseProtocolError},
		{name: "close reason not UTF-8", in: frame(true, OpClose, closePayload(1000, "\xff")), code: CloseInvalidPayload},
		{name: "reserved opcode 3", in: rawFrame(0x83, true, 0, nil), code: CloseProtocolError},
	}
	for _, op := range []byte{4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cs = append(cs, readerCase{name: "reserved opcode " + Opcode(op).String(), in: rawFrame(0x80|op, true, 0, nil), code: CloseProtocolError})
	}
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		p := closePayload(code, "r")
		cs = append(cs, readerCase{name: "close code valid", in: frame(true, OpClose, p), msgs: []string{"close:" + p}})
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cs = append(cs, readerCase{name: "close code invalid", in: frame(true, OpClose, closePayload(code, "")), code: CloseProtocolError})
	}
	return cs
}

func TestReaderRules(t *testing.T) {
	for _, c := range readerCases() {
		want := outcome{msgs: c.msgs, code: c.code}
		got := drive(t, c.in, c.limit, nil, false)
		if !got.equal(want, false) {
			t.Errorf("%s: got %s, want %s", c.name, short(got.String()), short(want.String()))
		}
		if ref := reference(c.in, c.limit); !ref.equal(got, true) {
			t.Errorf("%s: reference %s, Reader %s", c.name, short(ref.String()), short(got.String()))
		}
	}
}

// TestReaderChunking parses every case byte by byte, in every split into
// two, and in a few other chunkings, with and without Compact: the result
// must not depend on how the bytes arrive.
func TestReaderChunking(t *testing.T) {
	for _, c := range readerCases() {
		want := drive(t, c.in, c.limit, nil, false)
		check := func(how string, sizes []int, compact bool) {
			t.Helper()
			got := drive(t, c.in, c.limit, sizes, compact)
			if !got.equal(want, !compact) {
				t.Fatalf("%s, %s (compact %v): got %s, want %s", c.name, how, compact, short(got.String()), short(want.String()))
			}
		}
		for _, compact := range []bool{false, true} {
			check("byte by byte", []int{1}, compact)
			check("3,1,7", []int{3, 1, 7}, compact)
			check("1000", []int{1000}, compact)
			if len(c.in) <= 400 {
				for i := 1; i < len(c.in); i++ {
					check("split", []int{i, len(c.in)}, compact)
				}
			}
		}
	}
}

// TestReaderInPlace checks the buffer contract directly: a fragmented
// message ends up contiguous at the front of the caller's buffer, control
// frames between its fragments come back with n == 0, and Compact leaves
// the payload so far followed by the unparsed rest.
func TestReaderInPlace(t *testing.T) {
	in := cat(frame(false, OpText, "abc"), frame(true, OpPing, "P"), frame(false, OpContinuation, "de"))
	tail := frame(true, OpContinuation, "f")
	buf := append(append([]byte(nil), in...), tail[:3]...)
	var r Reader
	n, m, err := r.Next(buf)
	if err != nil || n != 0 || msgString(m) != "ping:P" {
		t.Fatalf("got n=%d %q %v, want the ping with n=0", n, msgString(m), err)
	}
	if !r.InMessage() {
		t.Fatal("InMessage false inside a fragmented message")
	}
	if _, _, err := r.Next(buf); err != ErrNeedMore {
		t.Fatalf("got %v, want ErrNeedMore", err)
	}
	if !bytes.HasPrefix(buf, []byte("abcde")) {
		t.Fatalf("buffer starts %q, want the payload so far", buf[:5])
	}
	buf = buf[:r.Compact(buf)]
	if want := append([]byte("abcde"), tail[:3]...); !bytes.Equal(buf, want) {
		t.Fatalf("after Compact %q, want %q", buf, want)
	}
	if got := r.Compact(buf); got != len(buf) {
		t.Fatalf("second Compact: %d, want %d", got, len(buf))
	}
	buf = append(buf, tail[3:]...)
	n, m, err = r.Next(buf)
	if err != nil || n != len(buf) || msgString(m) != "text:abcdef" || &m.Payload[0] != &buf[0] {
		t.Fatalf("got n=%d %q %v, want the message at the front with n=%d", n, msgString(m), err, len(buf))
	}
	if r.InMessage() {
		t.Fatal("InMessage true after the message")
	}
	// Handed fewer bytes than it processed.
	r.Reset()
	buf = cat(frame(false, OpText, "abc"), frame(false, OpContinuation, "d"))
	if _, _, err := r.Next(buf); err != ErrNeedMore {
		t.Fatal(err)
	}
	if _, _, err := r.Next(buf[:3]); err != ErrBufferChanged {
		t.Fatalf("got %v, want ErrBufferChanged", err)
	}
}

func TestCloseStatus(t *testing.T) {
	code, reason := Message{Op: OpClose}.CloseStatus()
	if code != CloseNoStatus || reason != nil {
		t.Errorf("empty: %d %q", code, reason)
	}
	code, reason = Message{Op: OpClose, Payload: []byte(closePayload(4001, "why"))}.CloseStatus()
	if code != 4001 || string(reason) != "why" {
		t.Errorf("got %d %q", code, reason)
	}
}

func TestUnmask(t *testing.T) {
	for n := range 100 {
		b := make([]byte, n)
		want := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
			want[i] = b[i] ^ testKey[i%4]
		}
		unmask(testKey, b)
		if !bytes.Equal(b, want) {
			t.Fatalf("length %d: got %x, want %x", n, b, want)
		}
	}
}
