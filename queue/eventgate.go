package queue

import (
	"slices"
	"sync"
)

// eventGate keeps feed readers from passing an event that is still being
// written. Event ids come from the store's one sequence when a change is
// built, and the change becomes visible when its batch commits, later: a
// large change (a fan-out, an ack of many messages) can hold a low id
// while smaller changes commit higher ones first. A reader that returned
// those and moved its cursor past them would never see the low one; the
// webhook worker, which reads the feed the same way, would never post it.
//
// So an event id is handed out under the gate and stays pending until its
// change has committed (or failed); a reader of an app reads only up to
// just below that app's oldest pending event, or up to the last id handed
// out when none is pending. Pending ids are per app: a slow change of one
// app does not hold back another's feed.
type eventGate struct {
	mu      sync.Mutex
	pending map[string][]uint64 // per app, ascending (ids are handed out in order under mu)
}

type eventRef struct {
	app string
	seq uint64
}

// next hands out an event id of app from alloc and marks it pending.
func (g *eventGate) next(app string, alloc func() (uint64, error)) (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	seq, err := alloc()
	if err != nil {
		return 0, err
	}
	if g.pending == nil {
		g.pending = make(map[string][]uint64)
	}
	g.pending[app] = append(g.pending[app], seq)
	return seq, nil
}

// done ends the pending state of evs: their change has committed (or
// never will). Call it before the feed's readers are notified.
func (g *eventGate) done(evs []eventRef) {
	if len(evs) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range evs {
		p := g.pending[e.app]
		if i, ok := slices.BinarySearch(p, e.seq); ok {
			p = slices.Delete(p, i, i+1)
		}
		if len(p) == 0 {
			delete(g.pending, e.app)
		} else {
			g.pending[e.app] = p
		}
	}
}

// limit returns the highest event id of app a reader may return now: below
// the app's oldest pending event, else the last id handed out (last).
func (g *eventGate) limit(app string, last func() uint64) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.pending[app]; len(p) > 0 {
		return p[0] - 1
	}
	return last()
}
