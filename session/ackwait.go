package session

import (
	"time"

	"go.uber.org/zap"
)

// A device that stops reading without closing its connection (out of
// coverage, suspended, stuck) leaves the socket open: the gateway's writes
// fill the kernel's buffers without an error, its messages are reported
// "sent", and, the device looking online, no wake goes out, until TCP
// gives up or the idle timeout (15 min) ends the session. So, like other
// XMPP servers with XEP-0198 (ejabberd's ack_timeout), the gateway ends a
// session from which nothing at all came within AckTimeout of an <r/>:
// as a lost connection, it stays resumable, its unacknowledged messages
// stay pending for the next session, and the device is offline (woken if
// it has a push registration).
//
// Only the first <r/> since the last read arms the timer; any element
// read disarms it (Session.loop), but not a whitespace keepalive, which a
// client's timer may send while its reader is stuck.

// ackRequestedLocked notes that an <r/> goes out now. It holds s.mu.
func (s *Session) ackRequestedLocked() {
	if s.t == nil || s.ackAsked.Load() != 0 {
		return // an earlier request is still unanswered: its time counts
	}
	now := time.Now()
	s.ackAsked.Store(now.UnixNano())
	if s.ackTmr == nil {
		s.ackTmr = time.AfterFunc(s.srv.cfg.AckTimeout, s.ackExpired)
	} else {
		s.ackTmr.Reset(s.srv.cfg.AckTimeout)
	}
}

// ackExpired runs AckTimeout after an <r/>: if nothing came since, the
// connection counts as lost.
func (s *Session) ackExpired() {
	asked := s.ackAsked.Load()
	if asked == 0 {
		return // answered
	}
	s.mu.Lock()
	if s.closed || s.t == nil {
		s.mu.Unlock()
		return // ended, or detached and waiting for resumption already
	}
	if wait := s.srv.cfg.AckTimeout - time.Since(time.Unix(0, asked)); wait > 0 {
		// Answered, then asked again after this timer was set: wait for
		// the new request's time.
		s.ackTmr.Reset(wait)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.srv.m.ackTimeouts.Inc()
	s.log.Debug("no answer to an ack request: connection lost",
		zap.String("user", s.user), zap.String("device", s.device), zap.Duration("after", s.srv.cfg.AckTimeout))
	s.terminate(ReasonConnLost)
}
