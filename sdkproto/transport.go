package sdkproto

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"tether/internal/bufpool"
)

// Transport selects how a Client reaches the gateway.
type Transport int

// Transports.
const (
	// TransportTLS is XMPP over TCP with TLS from the first byte (XEP-0368,
	// the gateway's port 5223). The zero value.
	TransportTLS Transport = iota
	// TransportStartTLS is XMPP over TCP upgraded with STARTTLS (port
	// 5222).
	TransportStartTLS
	// TransportWebSocket is XMPP over WebSocket (RFC 7395) at Config.URL.
	TransportWebSocket
)

// String returns "tls", "starttls" or "websocket".
func (t Transport) String() string {
	switch t {
	case TransportTLS:
		return "tls"
	case TransportStartTLS:
		return "starttls"
	case TransportWebSocket:
		return "websocket"
	}
	return fmt.Sprintf("Transport(%d)", int(t))
}

// transport is one connection to the gateway, carrying one XMPP stream
// (restarted after STARTTLS and SASL). next is called by one goroutine at a
// time; write is serialised by the Client's mutex; drop and close may be
// called from any goroutine.
type transport interface {
	// writeHeader starts a new stream (stream header or <open/>) and
	// sends the frames of then right after it, in the same write where
	// the transport allows.
	writeHeader(to string, then ...[]byte) error
	// restart prepares to read a new stream from the server.
	restart()
	// next returns the next element from the server: its stream header
	// (as an Element named stream:stream or framing open), then top-level
	// elements; io.EOF when the server ends the stream.
	next() (*Element, error)
	// write sends the frames and flushes them.
	write(frames ...[]byte) error
	// writeClose ends our side of the stream.
	writeClose() error
	// startTLS upgrades the connection (TCP only).
	startTLS(ctx context.Context, cfg *tls.Config) error
	// secure reports whether the connection is encrypted.
	secure() bool
	// setReadDeadline bounds reads during negotiation (zero clears it).
	setReadDeadline(t time.Time)
	// close closes the connection, politely where the transport has a
	// closing handshake.
	close() error
	// drop closes the socket without any closing handshake.
	drop() error
}

func isHeader(e *Element) bool {
	return e.Name.Local == "stream" && (e.Name.Space == NSStream || e.Name.Space == "stream") ||
		e.Is(NSFraming, "open")
}

// framePool holds write buffers, so an idle Client holds none.
var framePool = bufpool.New(1024, 64<<10)

// tcpTransport is XMPP over TCP, with TLS.
type tcpTransport struct {
	raw          net.Conn // the TCP connection
	conn         net.Conn // raw, or TLS over it
	rd           Reader   // reads conn in blocks, with a pooled buffer
	tls          bool
	writeTimeout time.Duration
}

func dialTCP(ctx context.Context, cfg *Config, tlsCfg *tls.Config) (*tcpTransport, error) {
	d := net.Dialer{LocalAddr: cfg.localAddr()}
	raw, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	if cfg.WrapConn != nil {
		raw = cfg.WrapConn(raw)
	}
	t := &tcpTransport{raw: raw, conn: raw, writeTimeout: cfg.WriteTimeout}
	if cfg.Transport == TransportTLS {
		if err := t.startTLS(ctx, tlsCfg); err != nil {
			raw.Close()
			return nil, err
		}
	} else {
		t.rd.Reset(raw)
	}
	return t, nil
}

func (t *tcpTransport) startTLS(ctx context.Context, cfg *tls.Config) error {
	if t.rd.buffered() > 0 {
		return fmt.Errorf("%w: data after <proceed/>", ErrProtocol)
	}
	tc := tls.Client(t.raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("sdkproto: TLS handshake: %w", err)
	}
	t.conn = tc
	t.tls = true
	t.rd.Reset(tc)
	return nil
}

func (t *tcpTransport) writeHeader(to string, then ...[]byte) error {
	b := framePool.Get()
	defer framePool.Put(b)
	*b = append(*b, "<?xml version='1.0'?><stream:stream to='"...)
	*b = appendEscaped(*b, to, true)
	*b = append(*b, "' version='1.0' xmlns='"+NSClient+"' xmlns:stream='"+NSStream+"'>"...)
	for _, f := range then {
		*b = append(*b, f...)
	}
	return t.write(*b)
}

func (t *tcpTransport) restart()                    { t.rd.restart() }
func (t *tcpTransport) next() (*Element, error)     { return t.rd.Next() }
func (t *tcpTransport) secure() bool                { return t.tls }
func (t *tcpTransport) setReadDeadline(d time.Time) { t.conn.SetReadDeadline(d) }
func (t *tcpTransport) writeClose() error           { return t.write([]byte("</stream:stream>")) }
func (t *tcpTransport) close() error                { return t.conn.Close() }
func (t *tcpTransport) drop() error                 { return t.raw.Close() }

func (t *tcpTransport) write(frames ...[]byte) error {
	if t.writeTimeout > 0 {
		t.conn.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	}
	if len(frames) == 1 {
		_, err := t.conn.Write(frames[0])
		return err
	}
	// One Write per batch: one TLS record (or a few), one syscall.
	b := framePool.Get()
	defer framePool.Put(b)
	for _, f := range frames {
		*b = append(*b, f...)
	}
	_, err := t.conn.Write(*b)
	return err
}

// wsTransport is XMPP over WebSocket, RFC 7395: one element per text frame.
type wsTransport struct {
	c            *websocket.Conn
	raw          net.Conn
	tls          bool
	writeTimeout time.Duration
	hc           *http.Transport

	mu       sync.Mutex
	deadline time.Time
}

func dialWS(ctx context.Context, cfg *Config, tlsCfg *tls.Config) (*wsTransport, error) {
	t := &wsTransport{writeTimeout: cfg.WriteTimeout, tls: strings.HasPrefix(cfg.URL, "wss:")}
	d := &net.Dialer{LocalAddr: cfg.localAddr()}
	var rawMu sync.Mutex
	t.hc = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil && cfg.WrapConn != nil {
				c = cfg.WrapConn(c)
			}
			if err == nil {
				rawMu.Lock()
				t.raw = c
				rawMu.Unlock()
			}
			return c, err
		},
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c, resp, err := websocket.Dial(ctx, cfg.URL, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: t.hc},
		Subprotocols: []string{WebSocketProtocol},
	})
	if resp != nil && resp.Body != nil && err != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.hc.CloseIdleConnections()
		return nil, fmt.Errorf("sdkproto: websocket dial: %w", err)
	}
	if c.Subprotocol() != WebSocketProtocol {
		c.CloseNow()
		return nil, fmt.Errorf("%w: server did not accept the %q subprotocol", ErrProtocol, WebSocketProtocol)
	}
	c.SetReadLimit(MaxReceivedStanzaBytes)
	rawMu.Lock()
	defer rawMu.Unlock()
	t.c = c
	return t, nil
}

func (t *wsTransport) writeHeader(to string, then ...[]byte) error {
	b := framePool.Get()
	defer framePool.Put(b)
	*b = append(*b, "<open xmlns='"+NSFraming+"' to='"...)
	*b = appendEscaped(*b, to, true)
	*b = append(*b, "' version='1.0'/>"...)
	return t.write(append([][]byte{*b}, then...)...)
}

func (t *wsTransport) restart()     {}
func (t *wsTransport) secure() bool { return t.tls }

func (t *wsTransport) setReadDeadline(d time.Time) {
	t.mu.Lock()
	t.deadline = d
	t.mu.Unlock()
}

func (t *wsTransport) next() (*Element, error) {
	ctx := context.Background()
	t.mu.Lock()
	d := t.deadline
	t.mu.Unlock()
	if !d.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	for {
		typ, r, err := t.c.Reader(ctx)
		if err != nil {
			switch websocket.CloseStatus(err) {
			case websocket.StatusNormalClosure, websocket.StatusGoingAway:
				return nil, io.EOF
			}
			return nil, err
		}
		if typ != websocket.MessageText {
			return nil, fmt.Errorf("%w: binary WebSocket frame", ErrProtocol)
		}
		e, err := parseMessage(r)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue // whitespace keepalive
		}
		if e.Is(NSFraming, "close") {
			return nil, io.EOF
		}
		return e, nil
	}
}

// parseMessage reads one WebSocket message into a pooled buffer (a larger
// one of its own if it does not fit; the connection's read limit bounds
// it) and parses it; nil for whitespace.
func parseMessage(r io.Reader) (*Element, error) {
	var in inBuf
	in.take()
	defer in.drop()
	for {
		if in.W == len(in.Buf) {
			in.Grow(readBufPool, 2*len(in.Buf))
		}
		n, err := r.Read(in.Buf[in.W:])
		in.W += n
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	b := in.Pending()
	if isSpace(b) {
		return nil, nil
	}
	return ParseElement(b)
}

func (t *wsTransport) write(frames ...[]byte) error {
	ctx := context.Background()
	if t.writeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.writeTimeout)
		defer cancel()
	}
	for _, f := range frames {
		if err := t.c.Write(ctx, websocket.MessageText, f); err != nil {
			return err
		}
	}
	return nil
}

func (t *wsTransport) writeClose() error {
	return t.write([]byte("<close xmlns='" + NSFraming + "'/>"))
}

func (t *wsTransport) startTLS(context.Context, *tls.Config) error {
	return fmt.Errorf("%w: STARTTLS over WebSocket", ErrProtocol)
}

func (t *wsTransport) close() error {
	err := t.c.Close(websocket.StatusNormalClosure, "")
	t.hc.CloseIdleConnections()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (t *wsTransport) drop() error {
	if t.raw != nil {
		return t.raw.Close()
	}
	return t.c.CloseNow()
}
