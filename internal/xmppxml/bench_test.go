package xmppxml_test

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"

	"tether/internal/xmppxml"
)

var benchStanzas = []struct {
	name, stanza string
}{
	{"ack", "<a xmlns='urn:xmpp:sm:3' h='12'/>"},
	{"receipt", "<message to='bob@acme.localhost/phone' id='r7f3a' type='chat'><received xmlns='urn:xmpp:receipts' id='m1d2c3b4'/><store xmlns='urn:xmpp:hints'/></message>"},
	{"message1k", "<message to='bob@acme.localhost' id='m1d2c3b4' type='chat'><body>" + strings.Repeat("Lorem ipsum dolor sit amet, &amp; consectetur. ", 20)[:900] + "</body><request xmlns='urn:xmpp:receipts'/><data xmlns='urn:tether:data:0'>{\"k\":1}</data></message>"},
}

// BenchmarkStream parses one stanza with Stream.Next, the header already
// read, and releases the tree (as the session package does) or not.
func BenchmarkStream(b *testing.B) {
	for _, bs := range benchStanzas {
		for _, release := range []bool{false, true} {
			b.Run(bs.name+map[bool]string{false: "", true: "/released"}[release], func(b *testing.B) {
				var s xmppxml.Stream
				if _, _, _, err := s.Next([]byte(header)); err != nil {
					b.Fatal(err)
				}
				in := []byte(bs.stanza)
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				for b.Loop() {
					n, kind, e, err := s.Next(in)
					if err != nil || kind != xmppxml.KindElement || n != len(in) {
						b.Fatal(n, kind, err)
					}
					if release {
						e.Release()
					}
				}
			})
		}
	}
}

// BenchmarkStreamTrickle reads the 1 KiB message 64 bytes at a time.
func BenchmarkStreamTrickle(b *testing.B) {
	var s xmppxml.Stream
	if _, _, _, err := s.Next([]byte(header)); err != nil {
		b.Fatal(err)
	}
	in := []byte(benchStanzas[2].stanza)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		for have := 64; ; have += 64 {
			_, _, _, err := s.Next(in[:min(have, len(in))])
			if err == nil {
				break
			}
			if err != xmppxml.ErrNeedMore {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkParseFrame parses one stanza as a WebSocket frame and releases
// the tree.
func BenchmarkParseFrame(b *testing.B) {
	for _, bs := range benchStanzas {
		b.Run(bs.name, func(b *testing.B) {
			in := []byte(bs.stanza)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				e, err := xmppxml.ParseFrame(in)
				if err != nil {
					b.Fatal(err)
				}
				e.Release()
			}
		})
	}
}

// BenchmarkEncodingXMLPerStanza is encoding/xml with a new Decoder per
// stanza, as the session package parses WebSocket frames.
func BenchmarkEncodingXMLPerStanza(b *testing.B) {
	for _, bs := range benchStanzas {
		b.Run(bs.name, func(b *testing.B) {
			in := []byte(bs.stanza)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			var r bytes.Reader
			for b.Loop() {
				r.Reset(in)
				d := xml.NewDecoder(&r)
				d.Strict = true
				tok, err := d.Token()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decodeElement(d, tok.(xml.StartElement).Copy()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodingXMLStream is encoding/xml with one long-lived Decoder
// on the stream, as the session package reads XMPP over TCP.
func BenchmarkEncodingXMLStream(b *testing.B) {
	for _, bs := range benchStanzas {
		b.Run(bs.name, func(b *testing.B) {
			r := &loopReader{head: []byte(header), body: []byte(bs.stanza)}
			d := xml.NewDecoder(r)
			d.Strict = true
			for {
				tok, err := d.Token()
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := tok.(xml.StartElement); ok {
					break // the header
				}
			}
			b.SetBytes(int64(len(bs.stanza)))
			b.ReportAllocs()
			for b.Loop() {
				tok, err := d.Token()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decodeElement(d, tok.(xml.StartElement).Copy()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// loopReader reads head, then body over and over, a byte at a time
// through ReadByte as the session's poolReader offers it.
type loopReader struct {
	head, body []byte
	i          int
}

func (l *loopReader) ReadByte() (byte, error) {
	if len(l.head) > 0 {
		c := l.head[0]
		l.head = l.head[1:]
		return c, nil
	}
	c := l.body[l.i]
	l.i = (l.i + 1) % len(l.body)
	return c, nil
}

func (l *loopReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i], _ = l.ReadByte()
	}
	return len(p), nil
}

// decodeElement is the session package's tree builder over encoding/xml.
func decodeElement(d *xml.Decoder, start xml.StartElement) (*xmppxml.Element, error) {
	e := &xmppxml.Element{Name: start.Name, Attrs: start.Attr}
	var text strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			c, err := decodeElement(d, t.Copy())
			if err != nil {
				return nil, err
			}
			e.Children = append(e.Children, c)
		case xml.EndElement:
			e.Text = text.String()
			return e, nil
		case xml.CharData:
			text.Write(t)
		}
	}
}
