package wsproto

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		op   Opcode
		n    int
		want []byte
	}{
		{OpText, 0, []byte{0x81, 0}},
		{OpText, 125, []byte{0x81, 125}},
		{OpBinary, 126, []byte{0x82, 126, 0, 126}},
		{OpText, 65535, []byte{0x81, 126, 0xff, 0xff}},
		{OpText, 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{OpPing, 125, []byte{0x89, 125}},
		{OpPong, 0, []byte{0x8a, 0}},
		{OpClose, 2, []byte{0x88, 2}},
	} {
		if got := AppendHeader([]byte("x"), tc.op, tc.n); !bytes.Equal(got, append([]byte("x"), tc.want...)) {
			t.Errorf("%v %d: got %x, want %x", tc.op, tc.n, got[1:], tc.want)
		}
	}
	for _, tc := range []struct {
		op Opcode
		n  int
	}{{OpPing, 126}, {OpClose, 1000}, {OpContinuation, 1}, {Opcode(3), 1}, {OpText, -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%v %d: no panic", tc.op, tc.n)
				}
			}()
			AppendHeader(nil, tc.op, tc.n)
		}()
	}
}

// parseServerFrame decodes one unmasked, final frame.
func parseServerFrame(t *testing.T, b []byte) (Opcode, []byte) {
	t.Helper()
	if b[0]&0xf0 != 0x80 || b[1]&0x80 != 0 {
		t.Fatalf("header %x", b[:2])
	}
	n, h := int(b[1]), 2
	switch n {
	case 126:
		n, h = int(b[2])<<8|int(b[3]), 4
	case 127:
		n, h = 0, 10
		for _, c := range b[2:10] {
			n = n<<8 | int(c)
		}
	}
	if len(b) != h+n {
		t.Fatalf("frame of %d bytes, header says %d", len(b), h+n)
	}
	return Opcode(b[0] & 0xf), b[h:]
}

func TestAppendFrame(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 100000} {
		p := payloadOf(n)
		op, got := parseServerFrame(t, AppendFrame(nil, OpText, p))
		if op != OpText || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: %v %d", n, op, len(got))
		}
	}
	op, got := parseServerFrame(t, AppendPong(nil, []byte("ping data")))
	if op != OpPong || string(got) != "ping data" {
		t.Fatalf("pong %v %q", op, got)
	}
}

func TestAppendClose(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	for _, tc := range []struct {
		code   int
		reason string
		want   string
	}{
		{0, "ignored", ""},
		{CloseNoStatus, "", ""},
		{CloseNormal, "", "\x03\xe8"},
		{CloseMessageTooBig, "too big", "\x03\xf1too big"},
		{4000, "a\xffb", "\x0f\xa0a\uFFFDb"},
		{CloseGoingAway, long, "\x03\xe9" + long[:122]}, // 123 would split a rune
	} {
		op, got := parseServerFrame(t, AppendClose(nil, tc.code, tc.reason))
		if op != OpClose || string(got) != tc.want {
			t.Errorf("%d %q: got %q, want %q", tc.code, tc.reason, got, tc.want)
		}
		if len(got) > MaxControlPayload || !utf8.Valid(got[min(2, len(got)):]) || checkOK(got) != 0 {
			t.Errorf("%d: close payload %q is not valid", tc.code, got)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("AppendClose(1006) did not panic")
		}
	}()
	AppendClose(nil, CloseAbnormal, "")
}

func checkOK(p []byte) int { code, _ := checkClose(p); return code }
