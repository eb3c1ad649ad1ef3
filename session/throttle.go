package session

import (
	"net/netip"
	"sync"
	"time"
)

// throttle slows repeated failed logins per user and per source address,
// without touching other users: after maxFails failures within the window,
// further attempts for that user (or from that address) fail at once with
// temporary-auth-failure until the window passes.
type throttle struct {
	mu    sync.Mutex
	users map[string]*failures
	addrs map[netip.Addr]*failures
	last  time.Time
}

type failures struct {
	n     int
	since time.Time
}

const (
	maxUserFails = 5
	maxAddrFails = 20
	failWindow   = time.Minute
)

func newThrottle() *throttle {
	return &throttle{users: map[string]*failures{}, addrs: map[netip.Addr]*failures{}}
}

func (t *throttle) allow(app, user string, addr netip.Addr) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	if f := t.users[app+"\x00"+user]; f != nil && f.n >= maxUserFails && now.Sub(f.since) < failWindow {
		return false
	}
	if f := t.addrs[addr]; addr.IsValid() && f != nil && f.n >= maxAddrFails && now.Sub(f.since) < failWindow {
		return false
	}
	return true
}

func (t *throttle) fail(app, user string, addr netip.Addr) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	bump := func(f *failures) *failures {
		if f == nil || now.Sub(f.since) >= failWindow {
			return &failures{n: 1, since: now}
		}
		f.n++
		return f
	}
	k := app + "\x00" + user
	t.users[k] = bump(t.users[k])
	if addr.IsValid() {
		t.addrs[addr] = bump(t.addrs[addr])
	}
}

func (t *throttle) succeed(app, user string) {
	t.mu.Lock()
	delete(t.users, app+"\x00"+user)
	t.mu.Unlock()
}

// sweep drops expired entries once a window, so the maps stay small.
func (t *throttle) sweep(now time.Time) {
	if now.Sub(t.last) < failWindow {
		return
	}
	t.last = now
	for k, f := range t.users {
		if now.Sub(f.since) >= failWindow {
			delete(t.users, k)
		}
	}
	for k, f := range t.addrs {
		if now.Sub(f.since) >= failWindow {
			delete(t.addrs, k)
		}
	}
}
