//go:build linux

package session

import (
	"errors"
	"sync"
	"syscall"
)

// poller parks idle TLS sessions without a goroutine: the session's socket
// is watched by an epoll set of our own (one-shot, level-triggered), and
// when it becomes readable the session gets a fresh reader goroutine.
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
		thePoll = &poller{epfd: fd}
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
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return // EBADF and the like: nothing can be watched any more
		}
		for i := range events[:n] {
			id := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			sh := p.shard(id)
			sh.mu.Lock()
			s := sh.parked[id]
			sh.mu.Unlock()
			if s != nil {
				s.unpark(true)
			}
		}
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
