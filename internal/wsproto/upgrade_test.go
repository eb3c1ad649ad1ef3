package wsproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// serveConn is a small server loop over Upgrade, Reader and the Append
// functions, written as a session would: a read buffer that starts with
// the handshake's pending bytes and grows only as needed, messages echoed,
// pings answered, close frames answered (or, after "close-me", a close
// sent first and the client's answer awaited). It reports what it saw on
// events.
func serveConn(conn net.Conn, pending []byte, limit int, events chan<- string) {
	defer conn.Close()
	r := Reader{MaxMessage: limit}
	buf := make([]byte, 0, 512)
	buf = append(buf, pending...)
	closing := false
	for {
		n, m, err := r.Next(buf)
		if err == ErrNeedMore {
			buf = buf[:r.Compact(buf)]
			if len(buf) == cap(buf) {
				if cap(buf) >= BufferSize(limit) {
					events <- "buffer full"
					return
				}
				nb := make([]byte, len(buf), min(2*cap(buf), BufferSize(limit)))
				copy(nb, buf)
				buf = nb
			}
			k, rerr := conn.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+k]
			if rerr != nil {
				events <- "read: " + rerr.Error()
				return
			}
			continue
		}
		var ce *CloseError
		if errors.As(err, &ce) {
			events <- fmt.Sprintf("error %d", ce.Code)
			conn.Write(AppendClose(nil, ce.Code, ce.Reason))
			return
		}
		if err != nil {
			events <- "error: " + err.Error()
			return
		}
		switch m.Op {
		case OpText, OpBinary:
			if string(m.Payload) == "close-me" {
				conn.Write(AppendClose(nil, CloseNormal, "bye"))
				closing = true
				break
			}
			events <- fmt.Sprintf("%v %d", m.Op, len(m.Payload))
			conn.Write(AppendFrame(nil, m.Op, m.Payload))
		case OpPing:
			events <- "ping " + string(m.Payload)
			conn.Write(AppendPong(nil, m.Payload))
		case OpPong:
			events <- "pong"
		case OpClose:
			code, reason := m.CloseStatus()
			if closing {
				events <- fmt.Sprintf("close answered %d", code)
			} else {
				events <- fmt.Sprintf("close %d %s", code, reason)
				conn.Write(AppendClose(nil, code, string(reason)))
			}
			return
		}
		buf = buf[:copy(buf, buf[n:])]
	}
}

type testServer struct {
	*httptest.Server
	events chan string
	protos chan string
	conns  chan string
}

func newTestServer(t *testing.T, limit int, useTLS bool) *testServer {
	ts := &testServer{events: make(chan string, 100), protos: make(chan string, 10), conns: make(chan string, 10)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, pending, proto, err := Upgrade(w, r, []string{"other", "xmpp"})
		if err != nil {
			ts.events <- "upgrade: " + err.Error()
			return
		}
		ts.protos <- proto
		ts.conns <- fmt.Sprintf("%T", conn)
		go serveConn(conn, pending, limit, ts.events)
	})
	if useTLS {
		ts.Server = httptest.NewTLSServer(h)
	} else {
		ts.Server = httptest.NewServer(h)
	}
	t.Cleanup(ts.Close)
	return ts
}

func (ts *testServer) dial(t *testing.T, protos ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{Subprotocols: protos, HTTPClient: ts.Client()}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	return c
}

func (ts *testServer) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-ts.events:
		if got != want {
			t.Fatalf("server saw %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server saw nothing, want %q", want)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = "<xmpp/>✓"[i%7] // ASCII only: the first 7 bytes
	}
	return b
}

func TestClientEcho(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			ts := newTestServer(t, 1<<20, useTLS)
			c := ts.dial(t, "xmpp")
			defer c.CloseNow()
			if c.Subprotocol() != "xmpp" || <-ts.protos != "xmpp" {
				t.Fatalf("subprotocol %q", c.Subprotocol())
			}
			wantConn := "*net.TCPConn"
			if useTLS {
				wantConn = "*tls.Conn"
			}
			if got := <-ts.conns; got != wantConn {
				t.Fatalf("conn is %s, want %s", got, wantConn)
			}
			for _, n := range []int{0, 1, 100, 125, 126, 1000, 65535, 65536, 200000} {
				msg := payloadOf(n)
				if err := c.Write(ctx(t), websocket.MessageText, msg); err != nil {
					t.Fatal(err)
				}
				ts.expect(t, fmt.Sprintf("text %d", n))
				typ, got, err := c.Read(ctx(t))
				if err != nil || typ != websocket.MessageText || !bytes.Equal(got, msg) {
					t.Fatalf("size %d: echo %v %d bytes %v", n, typ, len(got), err)
				}
			}
			if err := c.Write(ctx(t), websocket.MessageBinary, []byte{0, 0xff}); err != nil {
				t.Fatal(err)
			}
			ts.expect(t, "binary 2")
			if typ, got, err := c.Read(ctx(t)); err != nil || typ != websocket.MessageBinary || !bytes.Equal(got, []byte{0, 0xff}) {
				t.Fatalf("binary echo %v %x %v", typ, got, err)
			}
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Fatal(err)
			}
			ts.expect(t, "close 1000 done")
		})
	}
}

// TestClientFragmented has the client write a message over 64 KiB in
// several frames (each Write of a Writer is a frame) with pings between
// them.
func TestClientFragmented(t *testing.T) {
	ts := newTestServer(t, 1<<20, false)
	c := ts.dial(t, "xmpp")
	defer c.CloseNow()
	reads := make(chan []byte, 1)
	go func() {
		_, b, err := c.Read(context.Background()) // also reads the pongs
		if err != nil {
			b = nil
		}
		reads <- b
	}()
	msg := payloadOf(150000)
	w, err := c.Writer(ctx(t), websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for i, part := range [][]byte{msg[:70000], msg[70000:70001], msg[70001:140000], msg[140000:]} {
		if _, err := w.Write(part); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// A ping waits for its pong: the server answers it while
			// the message is incomplete.
			if err := c.Ping(ctx(t)); err != nil {
				t.Fatal(err)
			}
			ts.expect(t, "ping 1") // coder/websocket numbers its pings
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ts.expect(t, "text 150000")
	select {
	case got := <-reads:
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes", len(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no echo")
	}
	c.Close(websocket.StatusNormalClosure, "")
	ts.expect(t, "close 1000 ")
}

func TestClientPing(t *testing.T) {
	ts := newTestServer(t, 1024, false)
	c := ts.dial(t, "xmpp")
	defer c.CloseNow()
	c.CloseRead(context.Background()) // reads the pongs
	for range 3 {
		if err := c.Ping(ctx(t)); err != nil {
			t.Fatal(err)
		}
		<-ts.events
	}
}

func TestServerClose(t *testing.T) {
	ts := newTestServer(t, 1024, false)
	c := ts.dial(t, "xmpp")
	defer c.CloseNow()
	if err := c.Write(ctx(t), websocket.MessageText, []byte("close-me")); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx(t))
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "bye" {
		t.Fatalf("client read %v, want close 1000 bye", err)
	}
	ts.expect(t, "close answered 1000")
}

func TestClientViolations(t *testing.T) {
	cases := []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
		code int
	}{
		{"too big", websocket.MessageText, payloadOf(1025), CloseMessageTooBig},
		{"not UTF-8", websocket.MessageText, []byte("a\xffb"), CloseInvalidPayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, 1024, false)
			c := ts.dial(t, "xmpp")
			defer c.CloseNow()
			if err := c.Write(ctx(t), tc.typ, tc.msg); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.Read(ctx(t))
			if got := websocket.CloseStatus(err); int(got) != tc.code {
				t.Fatalf("client read %v, want close %d", err, tc.code)
			}
			ts.expect(t, fmt.Sprintf("error %d", tc.code))
		})
	}
}

func TestSubprotocol(t *testing.T) {
	ts := newTestServer(t, 1024, false)
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{nil, ""},
		{[]string{"chat"}, ""},
		{[]string{"chat", "xmpp"}, "xmpp"},
		{[]string{"xmpp", "other"}, "other"}, // the server's preference
	} {
		c := ts.dial(t, tc.offer...)
		if got := <-ts.protos; got != tc.want || c.Subprotocol() != tc.want {
			t.Errorf("offer %q: server chose %q, client saw %q, want %q", tc.offer, got, c.Subprotocol(), tc.want)
		}
		<-ts.conns
		c.CloseNow()
	}
}

const sampleKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 section 1.3

func handshake(mod func(h http.Header)) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", sampleKey)
	if mod != nil {
		mod(r.Header)
	}
	return r
}

func TestUpgradeRefused(t *testing.T) {
	cases := []struct {
		name    string
		req     *http.Request
		status  int
		version bool
	}{
		{"POST", func() *http.Request { r := handshake(nil); r.Method = http.MethodPost; return r }(), 405, false},
		{"HTTP/1.0", func() *http.Request { r := handshake(nil); r.ProtoMinor = 0; return r }(), 400, false},
		{"HTTP/2", func() *http.Request { r := handshake(nil); r.ProtoMajor, r.ProtoMinor = 2, 0; return r }(), 400, false},
		{"no Upgrade", handshake(func(h http.Header) { h.Del("Upgrade") }), 426, false},
		{"Upgrade other", handshake(func(h http.Header) { h.Set("Upgrade", "h2c") }), 426, false},
		{"no Connection", handshake(func(h http.Header) { h.Del("Connection") }), 426, false},
		{"Connection close", handshake(func(h http.Header) { h.Set("Connection", "close") }), 426, false},
		{"no version", handshake(func(h http.Header) { h.Del("Sec-WebSocket-Version") }), 400, false},
		{"version 8", handshake(func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }), 426, true},
		{"two versions", handshake(func(h http.Header) { h.Add("Sec-WebSocket-Version", "8") }), 426, true},
		{"no key", handshake(func(h http.Header) { h.Del("Sec-WebSocket-Key") }), 400, false},
		{"key not base64", handshake(func(h http.Header) { h.Set("Sec-WebSocket-Key", "!GhlIHNhbXBsZSBub25jZQ==") }), 400, false},
		{"key 15 bytes", handshake(func(h http.Header) { h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ") }), 400, false},
		{"key 17 bytes", handshake(func(h http.Header) { h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZXg=") }), 400, false},
		{"two keys", handshake(func(h http.Header) { h.Add("Sec-WebSocket-Key", sampleKey) }), 400, false},
	}
	for _, tc := range cases {
		w := httptest.NewRecorder()
		_, _, _, err := Upgrade(w, tc.req, []string{"xmpp"})
		var he *HandshakeError
		if !errors.As(err, &he) || he.Status != tc.status || w.Code != tc.status {
			t.Errorf("%s: got %v, status %d, want %d", tc.name, err, w.Code, tc.status)
		}
		if got := w.Header().Get("Sec-WebSocket-Version"); tc.version != (got == "13") {
			t.Errorf("%s: Sec-WebSocket-Version %q", tc.name, got)
		}
		if tc.status == 426 && !tc.version && w.Header().Get("Upgrade") != "websocket" {
			t.Errorf("%s: 426 without Upgrade: websocket", tc.name)
		}
	}
}

// TestUpgradeAccepted checks the tolerated forms of a handshake and that
// a ResponseWriter that cannot be hijacked gives an error.
func TestUpgradeAccepted(t *testing.T) {
	r := handshake(func(h http.Header) {
		h.Set("Upgrade", "WebSocket")
		h.Set("Connection", "keep-alive, UPGRADE")
		h.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	})
	w := httptest.NewRecorder() // cannot be hijacked: the checks passed
	_, _, _, err := Upgrade(w, r, nil)
	var he *HandshakeError
	if err == nil || errors.As(err, &he) || w.Code != http.StatusInternalServerError {
		t.Fatalf("got %v, status %d", err, w.Code)
	}
}

// TestRawHandshake speaks to the server with hand-built bytes: the
// request and a first frame in one write (the frame is then among the
// bytes net/http read ahead), the RFC's sample key, and a fragmented
// message with a ping between its frames, sent one byte at a time.
func TestRawHandshake(t *testing.T) {
	pendings := make(chan int, 1)
	events := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, pending, proto, err := Upgrade(w, r, []string{"xmpp"})
		if err != nil {
			t.Error(err)
			return
		}
		if proto != "xmpp" {
			t.Errorf("protocol %q", proto)
		}
		pendings <- len(pending)
		go serveConn(conn, pending, 1024, events)
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + sampleKey + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, xmpp\r\n\r\n"
	first := frame(true, OpText, "<open/>")
	if _, err := c.Write(append([]byte(req), first...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" ||
		resp.Header.Get("Sec-WebSocket-Protocol") != "xmpp" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
	}
	if n := <-pendings; n != len(first) {
		t.Fatalf("pending %d bytes, want %d", n, len(first))
	}
	readFrame := func() (Opcode, string) {
		t.Helper()
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			t.Fatal(err)
		}
		if h[0]&0x80 == 0 || h[1]&0x80 != 0 || h[1] > 125 {
			t.Fatalf("header %x", h)
		}
		p := make([]byte, h[1])
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		return Opcode(h[0] & 0xf), string(p)
	}
	if op, p := readFrame(); op != OpText || p != "<open/>" {
		t.Fatalf("echo %v %q", op, p)
	}
	in := cat(frame(false, OpText, "<mess"), frame(true, OpPing, "hi"), frame(false, OpContinuation, "age/"),
		frame(true, OpContinuation, ">"), frame(true, OpClose, closePayload(1001, "")))
	for i := range in {
		if _, err := c.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"pong:hi", "text:<message/>", "close:" + closePayload(1001, "")} {
		if op, p := readFrame(); op.String()+":"+p != want {
			t.Fatalf("got %v:%q, want %q", op, p, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the close: %v, want EOF", err)
	}
}
