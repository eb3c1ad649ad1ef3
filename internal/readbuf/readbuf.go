// Package readbuf is the input buffer of a connection that holds many idle
// peers: a buffer taken from a pool only while read bytes are pending, given
// back when they are consumed, and grown (doubling, up to a limit the caller
// sets) for an item larger than it. The gateway's sessions and the client
// SDK both read through it. It imports nothing of Tether's.
package readbuf

import "sync"

// Pool hands out buffers of one size.
type Pool struct {
	size int
	p    sync.Pool
}

// NewPool returns a pool of buffers of size bytes.
func NewPool(size int) *Pool {
	p := &Pool{size: size}
	p.p.New = func() any { b := make([]byte, size); return &b }
	return p
}

// Buffer is read input: Buf[R:W] is read and not yet consumed. Buf is nil
// while the Buffer holds nothing from the pool. The zero value is empty.
type Buffer struct {
	Buf  []byte
	R, W int
	bp   *[]byte // Buf's pool entry; nil for a grown buffer
}

// Pending returns the bytes read and not consumed.
func (b *Buffer) Pending() []byte { return b.Buf[b.R:b.W] }

// Take gets a buffer from p if b has none.
func (b *Buffer) Take(p *Pool) {
	if b.Buf == nil {
		b.bp = p.p.Get().(*[]byte)
		b.Buf, b.R, b.W = *b.bp, 0, 0
	}
}

// Release gives the buffer back when nothing is pending.
func (b *Buffer) Release(p *Pool) {
	if b.Buf != nil && b.R == b.W {
		b.Drop(p)
	}
}

// Drop gives the buffer back, discarding what is pending. A grown buffer
// is left to the garbage collector.
func (b *Buffer) Drop(p *Pool) {
	if b.bp != nil {
		p.p.Put(b.bp)
	}
	b.Buf, b.bp, b.R, b.W = nil, nil, 0, 0
}

// Compact moves the pending bytes to the front of the buffer.
func (b *Buffer) Compact() {
	if b.R > 0 {
		b.W = copy(b.Buf, b.Buf[b.R:b.W])
		b.R = 0
	}
}

// Grow replaces the buffer with one of n bytes holding what it held (from
// the front, so Compact first); the pool's buffer goes back.
func (b *Buffer) Grow(p *Pool, n int) {
	nb := make([]byte, n)
	copy(nb, b.Buf[:b.W])
	if b.bp != nil {
		p.p.Put(b.bp)
	}
	b.Buf, b.bp = nb, nil
}

// MakeRoom compacts the pending bytes and, when the buffer is full,
// doubles it up to limit bytes; false when it is full at limit.
func (b *Buffer) MakeRoom(p *Pool, limit int) bool {
	b.Take(p)
	b.Compact()
	if b.W < len(b.Buf) {
		return true
	}
	if len(b.Buf) >= limit {
		return false
	}
	b.Grow(p, min(2*len(b.Buf), limit))
	return true
}
