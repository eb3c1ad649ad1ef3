package sdkproto_test

import (
	"io"
	"strings"
	"testing"

	"tether/sdkproto"
)

// BenchmarkReaderMessage decodes gateway messages from a stream, as the
// client's reader goroutine does (from a connection, a plain io.Reader),
// for several body sizes.
func BenchmarkReaderMessage(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		b.Run("body="+itoa(size)+"b", func(b *testing.B) {
			msg := strings.Replace(gatewayMessage, "text &amp; more", strings.Repeat("x", size), 1)
			const n = 64
			stream := []byte(streamHeader + strings.Repeat(msg, n))
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			rd, rewind := replay(b, stream, n)
			for b.Loop() {
				rewind()
				e, err := rd.Next()
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := sdkproto.ParseMessage(e); !ok {
					b.Fatal("not a message")
				}
			}
		})
	}
}

// BenchmarkReaderMessageFlow reads what the gateway sends a device per
// delivered message: the message stanza (with the soak harness's JSON
// data), the stream management request that follows it and the answer to
// the device's own request after its receipt, from a connection (a plain
// io.Reader, as a TLS connection is) that returns up to 16 KiB per read.
// One op is one message, parsed into a Message, plus the two SM elements.
func BenchmarkReaderMessageFlow(b *testing.B) {
	const n = 256
	var sb strings.Builder
	sb.WriteString(streamHeader)
	for i := range n {
		sb.WriteString("<message from='acme.localhost' to='u17@acme.localhost/d1' id='01JD7Q8ZQ6X2M3N4P5R6S7T8V" + itoa(i%10) + "' type='normal'>" +
			`<data xmlns='urn:tether:data:0'>{"ts":1764000000123456789,"seq":` + itoa(i+1) + `}</data>` +
			`<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>` +
			`<delay xmlns='urn:xmpp:delay' from='acme.localhost' stamp='2026-11-22T10:00:00Z'/>` +
			`<expire xmlns='urn:tether:expire:0' at='2026-11-29T10:00:00Z'/></message>` +
			`<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='` + itoa(i+1) + `'/>`)
	}
	stream := []byte(sb.String())
	b.SetBytes(int64(len(stream)-len(streamHeader)) / n)
	b.ReportAllocs()
	rd, rewind := replay(b, stream, n)
	for b.Loop() {
		rewind()
		for k := range 3 {
			e, err := rd.Next()
			if err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				if _, ok := sdkproto.ParseMessage(e); !ok {
					b.Fatal("not a message")
				}
			}
		}
	}
}

// replay returns a Reader over stream, which holds n ops, and the function
// each op calls first: before the first op and after every n it starts the
// stream again and reads its header.
func replay(b *testing.B, stream []byte, n int) (*sdkproto.Reader, func()) {
	conn := &connReader{}
	rd := sdkproto.NewReader(conn)
	i := 0
	return rd, func() {
		if i%n == 0 {
			conn.data = stream
			rd.Reset(conn)
			if _, err := rd.Next(); err != nil { // header
				b.Fatal(err)
			}
		}
		i++
	}
}

// connReader is a plain io.Reader (no ReadByte) over data, returning up to
// 16 KiB per Read.
type connReader struct{ data []byte }

func (c *connReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 16<<10)], c.data)
	c.data = c.data[n:]
	return n, nil
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
