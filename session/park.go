package session

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// Parking: once a session is ready and nothing is waiting to be read, its
// reader goroutine exits and the socket is handed to the poller (see
// poll_linux.go); readable input, a close from another goroutine (kick,
// replacement, shutdown, a slow consumer, a failed write) or the idle
// deadline gives the session a new reader goroutine. Every transport that
// reads through a connReader parks.
//
// The session's WaitGroup ticket (Server.wg) stays with the session while
// it is parked, so Shutdown still waits for every session to end.

var errNoPoller = errors.New("session: no poller on this platform")

// longAgo is a read deadline already past: a read with it returns at once.
var longAgo = time.Unix(1, 0)

// tryPark parks the session if nothing is waiting to be read. It reports
// true when the calling reader goroutine must return without touching the
// session again; err is a read error met while looking.
func (s *Session) tryPark(t *connReader) (parked bool, err error) {
	p := s.srv.poll
	if p == nil {
		return false, nil
	}
	if s.readable {
		// The poller saw input: read it. (A read with a deadline past
		// returns before looking at the socket, so probing now would
		// find nothing and park again.)
		s.readable = false
		return false, nil
	}
	dl := t.deadline()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return false, nil // past the deadline: the read times out
	}
	idle, err := t.probe()
	if err != nil || !idle {
		return false, err
	}
	// The idle timer is armed before the session is published as parked:
	// from then on another goroutine may own it.
	if !dl.IsZero() {
		if s.idleTmr == nil {
			s.idleTmr = time.AfterFunc(time.Until(dl), func() { s.unpark() })
		} else {
			s.idleTmr.Reset(time.Until(dl))
		}
	}
	s.parked.Store(true)
	s.srv.parked.Add(1)
	p.add(s)
	if err := t.control(func(fd int) error { return p.watch(fd, s.id) }); err != nil {
		// Closed under us, or not a socket epoll takes: read as usual.
		return !s.reclaim(), nil
	}
	// A close asked for before the session was parked did not find it
	// parked (terminate then only sets the read deadline): look again.
	s.mu.Lock()
	closing := s.closeReason != ""
	s.mu.Unlock()
	if closing {
		return !s.reclaim(), nil
	}
	return true, nil
}

// reclaim takes a parked session back for the calling goroutine; false
// when someone else unparked it first (and runs its reader now).
func (s *Session) reclaim() bool {
	if !s.parked.CompareAndSwap(true, false) {
		return false
	}
	s.srv.poll.remove(s)
	s.srv.parked.Add(-1)
	return true
}

// unpark gives a parked session a reader goroutine again, to look at its
// state (a close, the idle deadline); false if it was not parked. Input
// goes through the poller's ready queue instead.
func (s *Session) unpark() bool {
	if !s.reclaim() {
		return false
	}
	s.readable = false
	s.srv.work.run(task{s, taskServe})
	return true
}

// wakeReader makes the reader look at the session's state now: a parked
// session gets a reader goroutine, a blocked read returns.
func (s *Session) wakeReader(t transport) {
	if !s.unpark() {
		t.setReadDeadline(time.Now())
	}
}

// probe reports whether no input is waiting: nothing in the read buffer
// and nothing decrypted or buffered in tls.Conn. It reads one byte with a
// deadline already past, which returns at once; tls.Conn treats a timeout
// as temporary and stays usable, and a partial record it holds completes
// when the rest arrives, which makes the socket readable.
func (t *connReader) probe() (idle bool, err error) {
	if t.br.Buf != nil && t.br.R < t.br.W {
		return false, nil
	}
	t.br.release()
	t.conn.SetReadDeadline(longAgo)
	n, err := t.br.src.Read(t.br.one[:])
	t.conn.SetReadDeadline(t.deadline())
	if n == 1 {
		t.br.take()
		t.br.Buf[0], t.br.R, t.br.W = t.br.one[0], 0, 1
		return false, nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return false, err
}

// deadline is the read deadline last set (zero: none).
func (t *connReader) deadline() time.Time {
	ns := t.dl.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// control runs f with the socket's descriptor, while it cannot be closed.
func (t *connReader) control(f func(fd int) error) error {
	if t.raw == nil {
		c := t.conn
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			return errNoPoller
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		t.raw = raw
	}
	var ferr error
	if err := t.raw.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// parkable is a transport that reads through a connReader.
type parkable interface{ reader() *connReader }
