package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"tether/gateway/api"
)

// appLimiter holds one token bucket per app (Config.AppRateLimit).
type appLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

func newAppLimiter(perSecond float64) *appLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &appLimiter{limit: rate.Limit(perSecond), burst: max(int(2*perSecond), 1), m: map[string]*rate.Limiter{}}
}

// allow takes a token for app; when none is left it returns how long to
// wait for one.
func (l *appLimiter) allow(app string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	lim, ok := l.m[app]
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[app] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimited answers 429 with Retry-After in whole seconds (at least 1).
func (g *Gateway) rateLimited(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(wait, time.Second).Seconds()))))
	g.writeError(w, r, apiError(api.CodeRateLimited, "", "the app's request rate limit is reached; retry after %s", wait.Round(time.Millisecond)))
}
