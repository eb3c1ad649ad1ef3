package session

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers runs a session's reader after it is unparked or handed off, and
// its flusher, on goroutines that outlive a single task. A goroutine
// started for each of them begins on the smallest stack, and the queue's
// store calls under a message, a receipt or a write grow it by copying,
// several times per task: 8 % of the gateway's CPU in the soak. A worker
// keeps the stack it grew (until the collector shrinks an idle one), so
// the copies happen once per worker rather than once per task.
//
// Work goes to an idle worker if one is waiting, else to a new goroutine
// that joins the pool when done. At most maxIdleWorkers wait; a worker
// finding that many already waiting exits, so a burst leaves no more than
// that behind (8–32 KiB of stack each), and a worker idle for
// idleWorkerTimeout exits too. The idle workers end at Shutdown. With 64
// the soak's bursts of deliveries and acknowledgements (tasks waiting on
// the store's commits) exhausted the pool: about half the tasks started a
// goroutine, and stack growth was back at 3.5 % of the CPU; with 256 it is
// 2 %.
type workers struct {
	work chan task
	quit chan struct{}
	once sync.Once
	idle atomic.Int32
}

const (
	maxIdleWorkers    = 256
	idleWorkerTimeout = 10 * time.Second
)

type taskKind uint8

const (
	taskServe taskKind = iota // Session.serve: the read loop
	taskFlush                 // Session.flush: write what is queued
	taskReady                 // serve the poller's readable sessions (readyQueue)
)

type task struct {
	s    *Session
	kind taskKind
}

func newWorkers() *workers {
	return &workers{work: make(chan task), quit: make(chan struct{})}
}

func (w *workers) run(t task) {
	select {
	case w.work <- t:
	default:
		go w.loop(t)
	}
}

func (w *workers) loop(t task) {
	idle := time.NewTimer(idleWorkerTimeout)
	defer idle.Stop()
	for {
		switch t.kind {
		case taskServe:
			t.s.serve()
		case taskFlush:
			t.s.flush()
		case taskReady:
			t.s.srv.poll.drainReady()
		}
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		idle.Reset(idleWorkerTimeout)
		select {
		case t = <-w.work:
			w.idle.Add(-1)
		case <-idle.C:
			w.idle.Add(-1)
			return
		case <-w.quit:
			w.idle.Add(-1)
			return
		}
	}
}

// stop ends the idle workers; work handed over later runs on goroutines
// that end with it.
func (w *workers) stop() { w.once.Do(func() { close(w.quit) }) }
