//go:build linux

package session

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// poller parks idle TLS sessions without a goroutine: the session's socket
// is watched by an epoll set of our own (one-shot, level-triggered), and
// when it becomes readable the session waits in the ready queue for one of
// a few readers.
//
// Why: a goroutine blocked in a read keeps its stack (4 KiB at least once
// TLS and the state machine ran on it), the largest single item of an idle
// session's memory. Go's own netpoller cannot be asked "tell me when this
// socket is readable" without a goroutine waiting in a Read, so we keep a
// second registration of the descriptor: the runtime's (edge-triggered, for
// the reads and writes the session does) and ours (one-shot, only while
// parked). The kernel drops both when the descriptor is closed.
//
// One poller serves the process, started on first use, like the runtime's
// own netpoller; it blocks one thread in epoll_wait.
type poller struct {
	epfd int
	// The parked sessions by id, sharded: every park and wake-up takes a
	// shard's lock, thousands of times a second, and one lock was a point
	// of contention (a holder preempted by the OS holds it up for all).
	shards [pollShards]pollShard

	// Sessions found readable wait here for a reader (see readyQueue).
	ready readyQueue
}

type pollShard struct {
	mu     sync.Mutex
	parked map[uint64]*Session
	_      [48]byte // a cache line each
}

const pollShards = 64

func (p *poller) shard(id uint64) *pollShard { return &p.shards[id%pollShards] }

var (
	pollOnce sync.Once
	thePoll  *poller
)

// getPoller returns the process's poller, or nil when epoll is unavailable
// (sessions then keep their reader goroutine).
func getPoller() *poller {
	pollOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		thePoll = &poller{epfd: fd, ready: readyQueue{limit: readyReaders()}}
		for i := range thePoll.shards {
			thePoll.shards[i].parked = map[uint64]*Session{}
		}
		go thePoll.loop()
	})
	return thePoll
}

// loop runs for the life of the process, waking parked sessions.
func (p *poller) loop() {
	events := make([]syscall.EpollEvent, 256)
	readable := make([]*Session, 0, len(events))
	wait := -1 // milliseconds; -1: until an event
	for {
		n, err := syscall.EpollWait(p.epfd, events, wait)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return // EBADF and the like: nothing can be watched any more
		}
		readable = readable[:0]
		for i := range events[:n] {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			sh := p.shard(id)
			sh.mu.Lock()
			s := sh.parked[id]
			sh.mu.Unlock()
			if s != nil && s.reclaim() {
				readable = append(readable, s)
			}
		}
		var start int
		var first *Session
		start, first, wait = p.ready.dispatch(time.Now(), readable)
		clear(readable)
		for range start {
			first.srv.work.run(task{kind: taskReady, s: first}) // its server's workers
		}
	}
}

// readyQueue hands the sessions the poller found readable to at most
// limit readers at a time, first come first served; a reader serves one
// session after another until the queue is empty.
//
// Why: what wakes a parked session is nearly always a device's receipt
// or acknowledgement. Giving each its own goroutine at once (up to 256 per
// epoll_wait) filled the scheduler's run queues: in the soak's steady mix
// 31 of these readers were runnable on average, each waiting about 2 ms
// for a CPU, and every goroutine on a message's way to a device (the REST
// handler, the store's commit and its waiters, the session's writer)
// queued behind them. With a few readers the receipts wait here instead,
// and the rest of the gateway runs first. Measured in docs/benchmarks.md
// ("Session 24"): e2e p99 in the steady mix with no limit against 2 and
// 4 readers, alternating.
//
// A reader may block (an inbound message waits for its commit): if the
// oldest session has waited readyOverdue, one more reader starts even
// over the limit, and another each readyOverdue while it lasts, so a
// queue behind blocked readers still moves.
type readyQueue struct {
	mu      sync.Mutex
	q       []readySession // q[head:] wait, oldest first
	head    int
	running int       // readers draining the queue
	extra   time.Time // when the last reader over the limit started
	limit   int
}

type readySession struct {
	s  *Session
	at time.Time
}

// readyOverdue is how long the oldest readable session waits before a
// reader starts over the limit.
const readyOverdue = 10 * time.Millisecond

// readyReaders is the queue's limit: two readers per CPU the scheduler
// uses. In the steady mix 2 and 4 did as well on two CPUs, and 16 as
// badly as none.
func readyReaders() int { return max(2*runtime.GOMAXPROCS(0), 2) }

// pop returns the oldest waiting session, or nil (the reader then stops
// counting as running).
func (r *readyQueue) pop() *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head == len(r.q) {
		r.running--
		return nil
	}
	s := r.q[r.head].s
	r.q[r.head] = readySession{}
	r.head++
	if r.head == len(r.q) {
		r.q, r.head = r.q[:0], 0
	} else if r.head >= 64 && 2*r.head >= len(r.q) {
		r.q, r.head = r.q[:copy(r.q, r.q[r.head:])], 0
	}
	return s
}

// dispatch queues the sessions found readable now, counts the readers
// the queue may start (the caller starts them, on the workers of first's
// server) and returns how long the poller may wait for events before
// looking again (ms; -1 when nothing waits without a reader to come).
func (r *readyQueue) dispatch(now time.Time, readable []*Session) (start int, first *Session, wait int) {
	r.mu.Lock()
	for _, s := range readable {
		r.q = append(r.q, readySession{s, now})
	}
	waiting := len(r.q) - r.head
	start = min(max(r.limit-r.running, 0), waiting)
	var oldest time.Time
	if waiting > 0 {
		oldest = r.q[r.head].at
	}
	if waiting > start && now.Sub(oldest) >= readyOverdue && now.Sub(r.extra) >= readyOverdue {
		start++
		r.extra = now
	}
	r.running += start
	if start > 0 {
		first = r.q[r.head].s
	}
	wait = -1
	if waiting > start {
		// Until the next reader over the limit may start.
		next := oldest.Add(readyOverdue)
		if e := r.extra.Add(readyOverdue); e.After(next) {
			next = e
		}
		wait = max(int((next.Sub(now)+time.Millisecond-1)/time.Millisecond), 1)
	}
	r.mu.Unlock()
	return start, first, wait
}

// drainReady serves readable sessions until none waits.
func (p *poller) drainReady() {
	for s := p.ready.pop(); s != nil; s = p.ready.pop() {
		s.readable = true
		s.serve()
	}
}

// watch arms the one-shot registration of fd for session s, which must be
// in p.parked already (an event may come before watch returns).
func (p *poller) watch(fd int, id uint64) error {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	if errors.Is(err, syscall.ENOENT) {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	}
	return err
}

func (p *poller) add(s *Session) {
	sh := p.shard(s.id)
	sh.mu.Lock()
	sh.parked[s.id] = s
	sh.mu.Unlock()
}

func (p *poller) remove(s *Session) {
	sh := p.shard(s.id)
	sh.mu.Lock()
	delete(sh.parked, s.id)
	sh.mu.Unlock()
}

// parkedCount is for tests and metrics.
func (p *poller) parkedCount() int {
	n := 0
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		n += len(sh.parked)
		sh.mu.Unlock()
	}
	return n
}
