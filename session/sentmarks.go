package session

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Marking messages "sent" waits: a device's receipt or XEP-0198 ack comes
// a few milliseconds after the message, and the queue records "delivered"
// with the "sent" it implies in one commit (queue.MarkDelivered), where
// marking "sent" at once cost a commit and a rewrite of the status record
// of its own per message: 6 % of the gateway's CPU in the soak. What is
// not acknowledged within sentDelay is marked "sent" then, by one
// goroutine that runs while marks wait; a session that ends marks its own
// at once. A crash loses only the "sent" of messages in flight, which the
// queue sends again anyway.
//
// Each session keeps the ids written and not yet marked or acknowledged
// (Session.sentWait, under its mu); sentMarks lists the sessions whose ids
// began to wait, with the time, oldest first.
type sentMarks struct {
	mu      sync.Mutex
	due     []dueMarks
	running bool
	quit    <-chan struct{} // closed by Shutdown
}

type dueMarks struct {
	s     *Session
	since int64 // unix ns
}

// sentDelay is how long a written message waits for its acknowledgement
// before it is marked "sent" on its own.
const sentDelay = 500 * time.Millisecond

// sentWritten records ids as written to s's device now.
func (s *Session) sentWritten(ids []string) {
	s.mu.Lock()
	first := len(s.sentWait) == 0
	s.sentWait = append(s.sentWait, ids...)
	s.mu.Unlock()
	if first {
		s.srv.sent.add(s)
	}
}

// sentAckedLocked drops id from the ids waiting: the queue marks it delivered,
// which implies sent. It holds s.mu.
func (s *Session) sentAckedLocked(id string) {
	for i, w := range s.sentWait {
		if w == id {
			s.sentWait = append(s.sentWait[:i], s.sentWait[i+1:]...)
			break
		}
	}
	if len(s.sentWait) == 0 {
		s.sentWait = nil
	}
}

// markSentNow marks the ids waiting on s sent.
func (s *Session) markSentNow() {
	s.mu.Lock()
	ids := s.sentWait
	s.sentWait = nil
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := s.srv.q.MarkSent(context.Background(), s.ref(), ids...); err != nil {
		s.log.Warn("mark sent", zap.Error(err))
	}
}

func (m *sentMarks) add(s *Session) {
	m.mu.Lock()
	m.due = append(m.due, dueMarks{s, time.Now().UnixNano()})
	start := !m.running
	m.running = true
	m.mu.Unlock()
	if start {
		go m.run()
	}
}

// run marks what waited sentDelay, until nothing waits or the server
// shuts down (its sessions mark their own as they end).
func (m *sentMarks) run() {
	t := time.NewTimer(sentDelay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.quit:
			m.mu.Lock()
			m.running = false
			due := m.due
			m.due = nil
			m.mu.Unlock()
			for _, d := range due {
				d.s.markSentNow()
			}
			return
		}
		limit := time.Now().Add(-sentDelay).UnixNano()
		m.mu.Lock()
		n := 0
		for n < len(m.due) && m.due[n].since <= limit {
			n++
		}
		ready := make([]*Session, n)
		for i := range n {
			ready[i] = m.due[i].s
		}
		clear(m.due[:n])
		m.due = m.due[n:]
		if len(m.due) == 0 {
			m.due = nil
			m.running = false
			m.mu.Unlock()
			for _, s := range ready {
				s.markSentNow()
			}
			return
		}
		next := time.Duration(m.due[0].since - limit)
		m.mu.Unlock()
		for _, s := range ready {
			s.markSentNow()
		}
		t.Reset(max(next, time.Millisecond))
	}
}
