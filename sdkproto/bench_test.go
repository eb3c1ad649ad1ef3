package sdkproto_test

import (
	"bytes"
	"strings"
	"testing"

	"tether/sdkproto"
)

// BenchmarkReaderMessage decodes gateway messages from a stream, as the
// client's reader goroutine does, for several body sizes.
func BenchmarkReaderMessage(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		b.Run("body="+itoa(size)+"b", func(b *testing.B) {
			msg := strings.Replace(gatewayMessage, "text &amp; more", strings.Repeat("x", size), 1)
			const n = 64
			stream := []byte(streamHeader + strings.Repeat(msg, n))
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			rd := sdkproto.NewReader(bytes.NewReader(stream))
			i := 0
			for b.Loop() {
				if i%n == 0 {
					rd.Reset(bytes.NewReader(stream))
					if _, err := rd.Next(); err != nil { // header
						b.Fatal(err)
					}
				}
				e, err := rd.Next()
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := sdkproto.ParseMessage(e); !ok {
					b.Fatal("not a message")
				}
				i++
			}
		})
	}
}

// BenchmarkAppendXML encodes a message element.
func BenchmarkAppendXML(b *testing.B) {
	e, err := sdkproto.ParseElement([]byte(gatewayMessage))
	if err != nil {
		b.Fatal(err)
	}
	buf := e.AppendXML(nil, sdkproto.NSClient)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendXML(buf[:0], sdkproto.NSClient)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}
