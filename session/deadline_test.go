package session

import (
	"net"
	"testing"
	"time"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(d time.Time) error {
	c.set = append(c.set, d)
	return nil
}

// A flush moves the write deadline only once it is a quarter of
// writeTimeout behind; a deadline set another way (none, after STARTTLS;
// a second, at close) is known, so the next flush sets a fresh one.
func TestExtendWriteDeadline(t *testing.T) {
	dc := &deadlineConn{}
	c := &connReader{conn: dc}
	t0 := time.Unix(1000, 0)
	step := func(at time.Duration, wantSet bool) {
		t.Helper()
		n := len(dc.set)
		c.extendWriteDeadline(t0.Add(at))
		switch {
		case wantSet && len(dc.set) != n+1:
			t.Fatalf("at %v: deadline not moved", at)
		case wantSet && !dc.set[n].Equal(t0.Add(at+writeTimeout)):
			t.Fatalf("at %v: deadline %v, want %v", at, dc.set[n], t0.Add(at+writeTimeout))
		case !wantSet && len(dc.set) != n:
			t.Fatalf("at %v: deadline moved to %v, still within a quarter of writeTimeout", at, dc.set[n])
		}
	}
	step(0, true) // none set yet
	step(writeTimeout/8, false)
	step(writeTimeout/4-time.Nanosecond, false)
	step(writeTimeout/4, true)
	c.setWriteDeadline(time.Time{}) // none, as after STARTTLS
	step(writeTimeout/4+time.Millisecond, true)
	c.setWriteDeadline(t0.Add(writeTimeout/4 + time.Second)) // closing
	step(writeTimeout/4+2*time.Millisecond, true)
}
