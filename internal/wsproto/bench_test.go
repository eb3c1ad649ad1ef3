package wsproto

import (
	"strings"
	"testing"
)

func benchReader(b *testing.B, in []byte, want int) {
	buf := make([]byte, len(in))
	var r Reader
	r.MaxMessage = 1 << 20
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, in) // Next unmasks in place
		n, m, err := r.Next(buf)
		if err != nil || n != len(in) || len(m.Payload) != want {
			b.Fatalf("n=%d len=%d %v", n, len(m.Payload), err)
		}
	}
}

// BenchmarkReaderText100 parses a masked 100-byte text frame, the size of
// a small stanza.
func BenchmarkReaderText100(b *testing.B) {
	benchReader(b, frame(true, OpText, strings.Repeat("<a/>", 25)), 100)
}

func BenchmarkReaderText16K(b *testing.B) {
	benchReader(b, frame(true, OpText, strings.Repeat("<a/>", 4096)), 16384)
}

// BenchmarkReaderFragmented100 parses 100 bytes sent as four frames.
func BenchmarkReaderFragmented100(b *testing.B) {
	p := strings.Repeat("<a/>", 25)
	in := cat(frame(false, OpText, p[:25]), frame(false, OpContinuation, p[25:50]),
		frame(false, OpContinuation, p[50:75]), frame(true, OpContinuation, p[75:]))
	benchReader(b, in, 100)
}

func BenchmarkAppendFrame100(b *testing.B) {
	p := []byte(strings.Repeat("<a/>", 25))
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], OpText, p)
	}
}
