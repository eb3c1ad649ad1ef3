package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// postTransport is the message generator's HTTP/1.1 transport: each
// request is written and its answer read on the goroutine that sends it,
// over a kept-alive connection it holds alone for the exchange.
//
// net/http's Transport runs two goroutines per connection (a read loop
// and a write loop) and hands every request and answer between them and
// the caller. On the machine the harness shares with the gateway it
// measures, each hand-off is a wait for a CPU, and the client was a fifth
// of the harness's CPU in the steady mix (docs/benchmarks.md, sessions 24
// and 25). The generator needs none of what those loops buy: no HTTP/2,
// no proxies, no redirects, one host, and a body it always reads to the
// end. The rest of the harness (setup, the verdict's reads, scrapes)
// keeps net/http.
//
// A request that fails on a reused connection before any of its answer
// was read is sent once more on a new one: the gateway closes idle
// connections, and a restarted gateway has closed them all. The
// generator's POSTs carry an Idempotency-Key, so a second send cannot
// enqueue twice.
type postTransport struct {
	dial    func(ctx context.Context) (net.Conn, error)
	idle    chan *postConn // kept-alive connections, most recently used last out
	slots   chan struct{}  // one per open connection, at most conns
	timeout time.Duration  // idle connections older than this are closed, not reused
}

// postConn is one kept-alive connection.
type postConn struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when its last answer was read
}

// newPostTransport returns a transport to addr (host:port) with at most
// conns connections, over TLS when tc is not nil.
func newPostTransport(addr string, tc *tls.Config, conns int) *postTransport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &postTransport{
		idle:    make(chan *postConn, conns),
		slots:   make(chan struct{}, conns),
		timeout: 30 * time.Second,
	}
	t.dial = func(ctx context.Context) (net.Conn, error) {
		if tc == nil {
			return d.DialContext(ctx, "tcp", addr)
		}
		td := &tls.Dialer{NetDialer: d, Config: tc}
		return td.DialContext(ctx, "tcp", addr)
	}
	return t
}

// RoundTrip sends req and reads its answer's head. The answer's body
// hands the connection back when it has been read to its end or closed.
func (t *postTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.get(ctx)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, sent, err := t.exchange(ctx, pc, req)
		if err == nil {
			return resp, nil
		}
		t.drop(pc)
		if !reused || sent || attempt > 0 || req.GetBody == nil || ctx.Err() != nil {
			closeBody(req)
			return nil, err
		}
		body, gerr := req.GetBody() // a stale kept-alive connection: once more on a new one
		if gerr != nil {
			return nil, err
		}
		req = req.Clone(ctx)
		req.Body = body
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// get returns an idle connection (reused) or, when none is idle, a new
// one once a slot is free. An idle one is taken first: with both ready, a
// select would pick at random and dial when it need not.
func (t *postTransport) get(ctx context.Context) (pc *postConn, reused bool, err error) {
	for {
		select {
		case pc = <-t.idle:
		default:
			select {
			case pc = <-t.idle:
			case t.slots <- struct{}{}:
				c, err := t.dial(ctx)
				if err != nil {
					<-t.slots
					return nil, false, err
				}
				return &postConn{c: c, br: bufio.NewReaderSize(c, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}, false, nil
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		if time.Since(pc.used) < t.timeout {
			return pc, true, nil
		}
		t.drop(pc) // idle too long: the gateway may have closed it
	}
}

// drop closes pc and frees its slot.
func (t *postTransport) drop(pc *postConn) {
	pc.c.Close()
	<-t.slots
}

// put keeps pc for the next request.
func (t *postTransport) put(pc *postConn) {
	pc.used = time.Now()
	select {
	case t.idle <- pc:
	default: // cannot happen: a slot per connection, room for every slot
		t.drop(pc)
	}
}

// exchange writes req on pc and reads the answer's head. sent reports
// whether any of the answer was read (the gateway has seen the request).
func (t *postTransport) exchange(ctx context.Context, pc *postConn, req *http.Request) (resp *http.Response, sent bool, err error) {
	if dl, ok := ctx.Deadline(); ok {
		pc.c.SetDeadline(dl)
	} else {
		pc.c.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if err != nil {
			stop()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
		}
	}()
	if err = req.Write(pc.bw); err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		return nil, false, fmt.Errorf("write request: %w", err)
	}
	if _, err = pc.br.Peek(1); err != nil {
		return nil, false, fmt.Errorf("read answer: %w", err)
	}
	if resp, err = http.ReadResponse(pc.br, req); err != nil {
		return nil, true, fmt.Errorf("read answer: %w", err)
	}
	resp.Body = &postBody{t: t, pc: pc, rc: resp.Body, stop: stop, keep: !resp.Close && !req.Close}
	return resp, true, nil
}

// postBody is an answer's body: read to its end it hands the connection
// back for the next request; closed before that, it closes it.
type postBody struct {
	t    *postTransport
	pc   *postConn
	rc   io.ReadCloser
	stop func() bool
	keep bool
	done bool
}

func (b *postBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(errors.Is(err, io.EOF))
	}
	return n, err
}

func (b *postBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the exchange once: the connection goes back to the pool
// when the body was read to its end (the close reads what is left of
// it) and both sides keep it alive.
func (b *postBody) finish(eof bool) {
	if b.done {
		return
	}
	b.done = true
	stopped := b.stop()
	drained := b.rc.Close() == nil || eof
	if drained && b.keep && stopped && b.pc.br.Buffered() == 0 {
		b.t.put(b.pc)
		return
	}
	b.t.drop(b.pc)
}
