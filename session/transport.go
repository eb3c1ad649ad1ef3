package session

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"tether/internal/bufpool"
	"tether/internal/readbuf"
	"tether/internal/xmppxml"
	"tether/sdkproto"
)

// transport hides XMPP over TCP (a stream of bytes with a <stream:stream>
// root) versus WebSocket (RFC 7395: one element per frame, <open/> and
// <close/>). Reads happen only on the session's reader goroutine; writes
// only on its flusher, one at a time.
type transport interface {
	// next returns the next top-level element. A stream header (or
	// WebSocket <open/>) comes back with name.Local "stream" or "open".
	next() (*element, error)
	// write sends complete elements; over WebSocket each is one frame.
	write(frames [][]byte) error
	// restart expects a new stream header (after STARTTLS or SASL).
	restart()
	// streamHeader returns the opening the server sends in answer to a
	// header (with the given id), and streamClose the closing.
	streamHeader(domain, id string) []byte
	streamClose() []byte
	// setReadDeadline bounds the next read; setWriteDeadline the writes.
	setReadDeadline(t time.Time)
	setWriteDeadline(t time.Time)
	// extendWriteDeadline bounds the writes to come by about writeTimeout.
	extendWriteDeadline(now time.Time)
	close() error
	remoteAddr() net.Addr
	kind() string
	secure() bool
}

// readBufSize is the TCP read buffer. It comes from a pool while a stanza
// is being read and goes back between stanzas: an idle session holds none.
// A stanza larger than the buffer grows a private one (doubling, up to
// maxReadBuf), dropped once the stanza is parsed.
const (
	readBufSize = 1024
	maxReadBuf  = sdkproto.MaxStanzaBytes + readBufSize
)

var readBufPool = readbuf.NewPool(readBufSize)

var errLimit = errors.New("session: stanza over the size limit")

// poolReader buffers the connection's input for the parser: Buf[R:W] is
// read and not yet parsed. The buffer is taken from readBufPool while
// there is input, and given back when the session waits for its next
// stanza (waitIdle), which blocks on a one-byte read.
type poolReader struct {
	readbuf.Buffer
	src io.Reader
	// squeeze, if set, may shorten a full buffer's bytes in place (the
	// WebSocket reader drops processed frame headers from a fragmented
	// message) before fill grows it.
	squeeze func(buf []byte) int
	one     [1]byte
}

func (p *poolReader) take()    { p.Take(readBufPool) }
func (p *poolReader) release() { p.Release(readBufPool) }

// fill reads more input after what is buffered, growing the buffer when
// it is full; errLimit once it would pass maxReadBuf.
func (p *poolReader) fill() error {
	p.take()
	p.Compact()
	if p.W == len(p.Buf) && p.squeeze != nil {
		p.W = p.squeeze(p.Buf[:p.W])
	}
	if !p.MakeRoom(readBufPool, maxReadBuf) {
		return errLimit
	}
	n, err := p.src.Read(p.Buf[p.W:])
	p.W += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// waitIdle blocks until a byte is available, holding no buffer meanwhile.
func (p *poolReader) waitIdle() error {
	if p.Buf != nil && p.R < p.W {
		return nil
	}
	p.release()
	n, err := p.src.Read(p.one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	p.take()
	p.Buf[0], p.R, p.W = p.one[0], 0, 1
	return nil
}

// connReader is the reading side the TCP and WebSocket transports share:
// the socket (a *tls.Conn once secure), the pooled read buffer, the read
// deadline, and what parking needs (park.go).
type connReader struct {
	conn net.Conn
	br   poolReader
	// dl is the read deadline last set, in Unix nanoseconds (0: none):
	// parking restores it after probing, and arms the idle timer with it.
	dl atomic.Int64
	// wdl is the write deadline last set, in Unix nanoseconds (0: none).
	wdl atomic.Int64
	raw syscall.RawConn // the socket, once the session parked
}

func (c *connReader) reader() *connReader { return c }

func (c *connReader) setReadDeadline(d time.Time) {
	c.dl.Store(deadlineNanos(d))
	c.conn.SetReadDeadline(d)
}

// deadlineNanos is d in Unix nanoseconds, 0 for no deadline.
func deadlineNanos(d time.Time) int64 {
	if d.IsZero() {
		return 0
	}
	return d.UnixNano()
}

// readErr maps a read error: the size limit, or the connection's own
// (EOF, a timeout, a reset), where EOF inside a stanza is a dropped
// connection (which stream management may resume), not malformed XML.
func (c *connReader) readErr(err error) error {
	switch {
	case errors.Is(err, errLimit):
		return errTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF):
		return io.EOF
	}
	return err
}

func (c *connReader) remoteAddr() net.Addr { return c.conn.RemoteAddr() }

func (c *connReader) setWriteDeadline(d time.Time) {
	c.wdl.Store(deadlineNanos(d))
	c.conn.SetWriteDeadline(d)
}

// extendWriteDeadline bounds the writes to come by writeTimeout from now,
// give or take a quarter of it: the deadline moves only when it is a
// quarter of writeTimeout behind. Moving the runtime's timer on every
// flush was 1.5 % of the gateway's CPU in the soak.
func (c *connReader) extendWriteDeadline(now time.Time) {
	d := now.Add(writeTimeout)
	if w := c.wdl.Load(); w == 0 || d.UnixNano()-w >= int64(writeTimeout/4) {
		c.setWriteDeadline(d)
	}
}

type tcpTransport struct {
	connReader
	tls bool
	xs  xmppxml.Stream
}

func newTCPTransport(c net.Conn, isTLS bool) *tcpTransport {
	t := &tcpTransport{connReader: connReader{conn: c}, tls: isTLS}
	t.restart()
	return t
}

func (t *tcpTransport) restart() {
	t.br.release()
	t.br.src = t.conn
	t.xs.Reset()
}

// startTLS upgrades the connection; the caller then restarts the stream.
func (t *tcpTransport) startTLS(cfg *tls.Config, timeout time.Duration) error {
	tc := tls.Server(t.conn, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	t.conn, t.tls = tc, true
	t.restart()
	return nil
}

// next returns the next top-level item: the stream header, a stanza,
// keepalive for whitespace (which counts as traffic as soon as it is
// read), or errStreamEnd.
func (t *tcpTransport) next() (*element, error) {
	if err := t.br.waitIdle(); err != nil {
		return nil, t.readErr(err)
	}
	for {
		n, kind, e, err := t.xs.Next(t.br.Buf[t.br.R:t.br.W])
		if errors.Is(err, xmppxml.ErrNeedMore) {
			if t.br.W-t.br.R > sdkproto.MaxStanzaBytes {
				return nil, errTooLarge
			}
			if err := t.br.fill(); err != nil {
				return nil, t.readErr(err)
			}
			continue
		}
		if errors.Is(err, xmppxml.ErrTooManyNamespaces) {
			return nil, errTooLarge // a resource limit: policy-violation
		}
		if err != nil {
			return nil, errNotWellFormed
		}
		if kind == xmppxml.KindElement && n > sdkproto.MaxStanzaBytes {
			// Complete in one read but over the limit (SPEC §6).
			return nil, errTooLarge
		}
		t.br.R += n
		switch kind {
		case xmppxml.KindHeader, xmppxml.KindElement:
			return e, nil
		case xmppxml.KindWhitespace:
			return keepalive, nil
		default: // KindEnd
			return nil, errStreamEnd
		}
	}
}

func (t *tcpTransport) write(frames [][]byte) error { return t.writeAll(frames) }

// writeAll writes frames back to back: one writev on plain TCP, joined
// into few records over TLS.
func (t *connReader) writeAll(frames [][]byte) error {
	if len(frames) == 1 {
		_, err := t.conn.Write(frames[0])
		return err
	}
	if _, plain := t.conn.(*net.TCPConn); plain {
		bufs := net.Buffers(frames)
		_, err := bufs.WriteTo(t.conn) // one writev
		return err
	}
	// TLS: tls.Conn has no writev, and writing the frames one by one makes
	// one record (a seal and a write system call) per stanza. Joined, the
	// stanzas queued since the last flush share records and calls.
	bp := writeBufs.Get()
	defer writeBufs.Put(bp)
	for len(frames) > 0 {
		b := (*bp)[:0]
		for len(frames) > 0 && (len(b) == 0 || len(b)+len(frames[0]) <= maxPooledWriteBuf) {
			b = append(b, frames[0]...)
			frames = frames[1:]
		}
		*bp = b
		if _, err := t.conn.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// maxPooledWriteBuf bounds one joined write (and the buffers kept for it).
const maxPooledWriteBuf = 64 << 10

var writeBufs = bufpool.New(4096, maxPooledWriteBuf)

func (t *tcpTransport) streamHeader(domain, id string) []byte {
	var b xmlBuf
	b.WriteString("<?xml version='1.0'?><stream:stream")
	b.attr("from", domain)
	b.attr("id", id)
	b.WriteString(" version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
	return b.Bytes()
}

func (t *tcpTransport) streamClose() []byte { return []byte("</stream:stream>") }
func (t *tcpTransport) close() error        { return t.conn.Close() }
func (t *tcpTransport) secure() bool        { return t.tls }
func (t *tcpTransport) kind() string {
	return "tcp"
}
