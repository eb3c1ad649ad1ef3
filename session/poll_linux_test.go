//go:build linux

package session

import (
	"testing"
	"time"
)

// The ready queue starts at most its limit of readers, serves sessions
// oldest first, and starts one reader over the limit per readyOverdue
// while the oldest session has waited that long (the readers may all be
// blocked).
func TestReadyQueueLimitsReaders(t *testing.T) {
	r := &readyQueue{limit: 4}
	t0 := time.Unix(1000, 0)
	ss := make([]*Session, 10)
	for i := range ss {
		ss[i] = &Session{id: uint64(i)}
	}
	check := func(at time.Duration, readable []*Session, wantStart, wantWait int) {
		t.Helper()
		start, first, wait := r.dispatch(t0.Add(at), readable)
		if start != wantStart || wait != wantWait {
			t.Fatalf("at %v: dispatch started %d readers, wait %d ms; want %d, %d ms", at, start, wait, wantStart, wantWait)
		}
		if start > 0 && first != ss[r.head] {
			t.Fatalf("at %v: readers start on the workers of session %d, not the oldest's", at, first.id)
		}
	}
	check(0, ss, 4, 10)                    // the limit; six wait, overdue in 10 ms
	check(5*time.Millisecond, nil, 0, 5)   // four readers run (blocked, say)
	check(10*time.Millisecond, nil, 1, 10) // overdue: one more, over the limit
	check(12*time.Millisecond, nil, 0, 8)  // no second one within readyOverdue
	check(20*time.Millisecond, nil, 1, 10) // and another after it
	if r.running != 6 {
		t.Fatalf("running %d, want 6", r.running)
	}

	for i, want := range ss {
		if got := r.pop(); got != want {
			t.Fatalf("pop %d: got session %v, want %d (oldest first)", i, got, want.id)
		}
	}
	for i := range 6 {
		if got := r.pop(); got != nil {
			t.Fatalf("pop from an empty queue returned session %d", got.id)
		}
		if r.running != 5-i {
			t.Fatalf("after %d readers found the queue empty, running %d; want %d", i+1, r.running, 5-i)
		}
	}
	check(30*time.Millisecond, nil, 0, -1) // nothing waits: epoll_wait blocks

	// A reader that finds the queue empty stops; the next session starts
	// a new one at once.
	check(40*time.Millisecond, ss[:1], 1, -1)
	if got := r.pop(); got != ss[0] {
		t.Fatalf("pop: got %v, want session 0", got)
	}
	if got := r.pop(); got != nil || r.running != 0 {
		t.Fatalf("pop: got %v, running %d; want nil, 0", got, r.running)
	}
}

// The queue's backing array does not grow without bound while readers
// keep up with a steady trickle.
func TestReadyQueueReusesItsArray(t *testing.T) {
	r := &readyQueue{limit: 1}
	now := time.Unix(1000, 0)
	s := &Session{}
	r.dispatch(now, []*Session{s})
	for range 100000 {
		r.dispatch(now, []*Session{s, s})
		if r.pop() != s || r.pop() != s {
			t.Fatal("lost a session")
		}
	}
	if c := cap(r.q); c > 256 {
		t.Fatalf("queue array grew to %d entries for at most 3 waiting", c)
	}
}
