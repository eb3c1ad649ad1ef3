package session

import "sync"

// Message frames are rendered into pooled buffers. A frame is written by
// the flusher and kept by no one after that: a message in flight keeps
// its queue.Message, and a resumption renders it again. So the buffer
// goes back to the pool once the write returns, where each delivery
// allocated a fresh one (7 % of the gateway's allocations in the soak,
// and so of its garbage collections).
var framePool = sync.Pool{New: func() any { return new(xmlBuf) }}

// maxPooledFrame bounds the buffers kept: a rare large message does not
// pin its size in the pool.
const maxPooledFrame = 16 << 10

// releaseFrames gives written frames' buffers back to the pool.
func releaseFrames(bufs []*xmlBuf) {
	for _, b := range bufs {
		if b.Cap() > maxPooledFrame {
			continue
		}
		b.Reset()
		framePool.Put(b)
	}
}
