package session

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"tether/internal/wsproto"
	"tether/sdkproto"
)

// wsTransport is XMPP over WebSocket (RFC 7395) on internal/wsproto: one
// element per text message, <open/> and <close/> for the stream. It reads
// through the same pooled buffer as the TCP transport and parks the same
// way; github.com/coder/websocket, which kept net/http's 4 KiB bufio reader
// and writer for the connection's life and a goroutine in Read (24 KiB per
// idle session, measured), remains the client side only.
type wsTransport struct {
	connReader
	tls  bool
	addr net.Addr
	rd   wsproto.Reader

	wmu       sync.Mutex // frames go out whole: the flusher's and the reader's answers
	closeCode int        // under wmu: the close status to send; 0: normal closure
	closed    bool       // under wmu: the close frame went out
}

func newWSTransport(c net.Conn, pending []byte, secure bool, addr net.Addr) *wsTransport {
	t := &wsTransport{connReader: connReader{conn: c}, tls: secure, addr: addr}
	t.rd.MaxMessage = sdkproto.MaxStanzaBytes
	t.br.src = c
	t.br.squeeze = t.rd.Compact
	if len(pending) > 0 {
		// Bytes the client sent right behind its upgrade request.
		if len(pending) <= readBufSize {
			t.br.take()
			t.br.W = copy(t.br.Buf, pending)
		} else {
			t.br.Buf, t.br.W = pending, len(pending)
		}
	}
	return t
}

// next returns the next element: <open/>, a stanza, keepalive for a ping
// or pong (answered here), errStreamEnd for <close/>, io.EOF for a close
// frame.
func (t *wsTransport) next() (*element, error) {
	if err := t.br.waitIdle(); err != nil {
		return nil, t.readErr(err)
	}
	for {
		n, m, err := t.rd.Next(t.br.Buf[t.br.R:t.br.W])
		if errors.Is(err, wsproto.ErrNeedMore) {
			if err := t.br.fill(); err != nil {
				return nil, t.readErr(err)
			}
			continue
		}
		var ce *wsproto.CloseError
		if errors.As(err, &ce) {
			t.setCloseCode(ce.Code)
			if ce.Code == wsproto.CloseMessageTooBig {
				return nil, errTooLarge
			}
			return nil, errNotWellFormed
		}
		if err != nil {
			return nil, errNotWellFormed
		}
		switch m.Op {
		case wsproto.OpText:
			e, err := parseFrame(m.Payload)
			t.br.R += n
			if err != nil {
				return nil, err
			}
			if e.Name.Space == sdkproto.NSFraming && e.Name.Local == "close" {
				return nil, errStreamEnd
			}
			return e, nil
		case wsproto.OpPing:
			pong := wsproto.AppendPong(nil, m.Payload)
			t.br.R += n // 0 between the fragments of a message
			t.writeControl(pong)
			return keepalive, nil
		case wsproto.OpPong:
			t.br.R += n
			return keepalive, nil
		case wsproto.OpClose:
			t.br.R += n
			code, _ := m.CloseStatus()
			if code == wsproto.CloseNoStatus {
				code = wsproto.CloseNormal
			}
			t.setCloseCode(code) // echoed (RFC 6455 5.5.1)
			return nil, io.EOF
		default: // binary: RFC 7395 3.2 wants text
			t.setCloseCode(wsproto.CloseUnsupportedData)
			return nil, errNotWellFormed
		}
	}
}

func (t *wsTransport) setCloseCode(code int) {
	t.wmu.Lock()
	t.closeCode = code
	t.wmu.Unlock()
}

// writeControl writes a control frame between the flusher's writes.
func (t *wsTransport) writeControl(frame []byte) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if !t.closed {
		t.setWriteDeadline(time.Now().Add(writeTimeout))
		t.conn.Write(frame)
	}
}

// write sends each element as one text message: the headers and the
// elements go out together (one writev on plain TCP).
func (t *wsTransport) write(frames [][]byte) error {
	hdrs := make([]byte, 0, wsproto.MaxHeader*len(frames))
	bufs := make([][]byte, 0, 2*len(frames))
	for _, f := range frames {
		at := len(hdrs)
		hdrs = wsproto.AppendHeader(hdrs, wsproto.OpText, len(f)) // within capacity: no move
		bufs = append(bufs, hdrs[at:], f)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.closed {
		return net.ErrClosed
	}
	return t.writeAll(bufs)
}

func (t *wsTransport) restart() {}

func (t *wsTransport) streamHeader(domain, id string) []byte {
	var b xmlBuf
	b.WriteString("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
	b.attr("from", domain)
	b.attr("id", id)
	b.WriteString(" version='1.0' xml:lang='en'/>")
	return b.Bytes()
}

func (t *wsTransport) streamClose() []byte {
	return []byte("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
}

// close sends the close frame (the peer's code echoed, the protocol error
// found, or a normal closure) and closes the connection without waiting
// for the peer's answer.
func (t *wsTransport) close() error {
	t.wmu.Lock()
	failed := false
	if !t.closed {
		t.closed = true
		code := t.closeCode
		if code == 0 {
			code = wsproto.CloseNormal
		}
		failed = code != wsproto.CloseNormal && code != wsproto.CloseGoingAway
		t.setWriteDeadline(time.Now().Add(time.Second))
		t.conn.Write(wsproto.AppendClose(nil, code, ""))
	}
	t.wmu.Unlock()
	if failed {
		// The peer may still be sending (the rest of a frame found too
		// big): closing with input unread would reset the connection,
		// and the reset can destroy the stream error and the close frame
		// before the peer reads them. Read and drop its input for a
		// moment first, as HTTP servers linger.
		t.conn.SetReadDeadline(time.Now().Add(lingerTime))
		io.CopyN(io.Discard, t.conn, lingerBytes)
	}
	return t.conn.Close()
}

// A failed WebSocket lingers at most lingerTime or lingerBytes of input.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

func (t *wsTransport) remoteAddr() net.Addr { return t.addr }
func (t *wsTransport) secure() bool         { return t.tls }
func (t *wsTransport) kind() string         { return "websocket" }
