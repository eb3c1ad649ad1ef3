// Package bufpool pools byte buffers taken for one piece of work (a
// write, an encoding, a request body) and given back after it, so that
// work on a hot path allocates no buffer and an idle connection holds
// none. It imports nothing of Tether's.
package bufpool

import "sync"

// Pool hands out empty buffers of a starting capacity and takes back those
// that did not grow past a bound: one large item does not pin its size in
// the pool.
type Pool struct {
	p   sync.Pool
	max int
}

// New returns a pool of buffers of capacity size that keeps those of
// capacity up to max.
func New(size, max int) *Pool {
	p := &Pool{max: max}
	p.p.New = func() any { b := make([]byte, 0, size); return &b }
	return p
}

// Get returns an empty buffer. The caller may grow *b (keeping the grown
// slice in *b) and gives b back with Put.
func (p *Pool) Get() *[]byte {
	b := p.p.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// Put gives b back, unless it grew past the pool's bound. The caller does
// not use b after.
func (p *Pool) Put(b *[]byte) {
	if cap(*b) > p.max {
		return
	}
	*b = (*b)[:0]
	p.p.Put(b)
}
