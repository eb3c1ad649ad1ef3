package sdkproto

import (
	"math/rand/v2"
	"time"
)

// Reconnect backoff defaults.
const (
	DefaultReconnectMin = 500 * time.Millisecond
	DefaultReconnectMax = 30 * time.Second
)

// Backoff computes jittered exponential reconnect delays. Attempt n (from
// 0) waits a uniformly random time in [Min, min(Max, Min·2^(n+1))): the
// ceiling doubles per failed attempt up to Max, and the whole span above the
// floor is jittered, so that many clients dropped at once (a gateway
// restart) spread their returns instead of arriving in waves. The floor
// keeps a flapping link from spinning.
//
// A Backoff is a value; Delay is safe for concurrent use.
type Backoff struct {
	Min time.Duration // zero means DefaultReconnectMin
	Max time.Duration // zero means DefaultReconnectMax
}

// Delay returns the wait before reconnect attempt n (0 for the first).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultReconnectMin
	}
	if hi <= 0 {
		hi = DefaultReconnectMax
	}
	if hi <= lo {
		return lo
	}
	ceil := lo
	for i := 0; i <= n && ceil < hi; i++ {
		ceil *= 2 // cannot overflow: ceil < hi before doubling
	}
	ceil = min(ceil, hi)
	return lo + rand.N(ceil-lo)
}
