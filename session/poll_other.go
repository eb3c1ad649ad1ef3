//go:build !linux

package session

// poller is Linux-only (epoll); elsewhere sessions keep their reader
// goroutine while idle.
type poller struct{}

func getPoller() *poller                        { return nil }
func (p *poller) watch(fd int, id uint64) error { return errNoPoller }
func (p *poller) add(s *Session)                {}
func (p *poller) remove(s *Session)             {}
func (p *poller) parkedCount() int              { return 0 }
func (p *poller) drainReady()                   {}
