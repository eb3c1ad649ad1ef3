package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tether/gateway/api"
)

// generator posts messages through REST on an open-loop schedule: message
// i is due at start + i/rate, whichever sender takes it. A POST carries one
// recipient, or -fanout for -fanout-share of them; each recipient is a
// user (all its devices) or one device, users distinct within a POST. The
// data holds the send time and the POST's sequence. A POST that fails on
// the network, with 429 or with 5xx is retried with the same
// Idempotency-Key (for up to 20 s), so a gateway killed after committing
// but before answering must answer the retry with the first answer's ids.
type generator struct {
	cfg   *config
	f     *fleet
	col   *collector
	api   *api.Client
	app   string
	runID string

	mu    sync.Mutex
	start time.Time // of the schedule at the current rate
	rate  float64   // messages per second (-rate, or the current -rate-steps step)
	sched float64   // messages scheduled at this rate so far

	offered, skipped, retries, attempts atomic.Uint64
	status4xx                           atomic.Uint64
}

// run posts until dur has passed since it started; POSTs in flight finish
// (with their retries) under ctx.
func (g *generator) run(ctx context.Context, dur time.Duration) {
	if g.cfg.rate <= 0 {
		sleepCtx(ctx, dur)
		return
	}
	g.setRate(g.cfg.rate)
	end := g.start.Add(dur)
	var wg sync.WaitGroup
	for i := range g.cfg.postConns {
		rng := rand.New(rand.NewPCG(g.f.Seed, uint64(i)+1))
		wg.Go(func() { g.sender(ctx, rng, end) })
	}
	wg.Wait()
}

// setRate starts a new open-loop schedule at rate from now: a sender
// waiting for a message due on the old one still sends it.
func (g *generator) setRate(rate float64) {
	g.mu.Lock()
	g.start, g.rate, g.sched = time.Now(), rate, 0
	g.mu.Unlock()
}

func (g *generator) sender(ctx context.Context, rng *rand.Rand, end time.Time) {
	const maxLag = 2 * time.Second
	for ctx.Err() == nil {
		n := 1
		if g.cfg.fanout > 1 && rng.Float64() < g.cfg.fanoutShare {
			n = g.cfg.fanout
		}
		g.mu.Lock()
		due := g.start.Add(time.Duration(g.sched / g.rate * float64(time.Second)))
		g.sched += float64(n)
		g.mu.Unlock()
		if !due.Before(end) {
			return
		}
		g.offered.Add(uint64(n))
		if !sleepCtx(ctx, time.Until(due)) {
			return
		}
		if time.Since(due) > maxLag {
			g.skipped.Add(uint64(n)) // every sender is busy (retrying, or the gateway is slow)
			continue
		}
		g.postOne(ctx, rng, n)
	}
}

// pick returns n recipients of distinct users.
func (g *generator) pick(rng *rand.Rand, n int) []recipient {
	out := make([]recipient, 0, n)
	used := make(map[int32]bool, n)
	for tries := 0; len(out) < n; tries++ {
		u := int32(rng.IntN(g.f.Users))
		if tries > 20*n { // unlucky draws (n is at most -users): take the next free user
			for used[u] {
				u = (u + 1) % int32(g.f.Users)
			}
		}
		if used[u] {
			continue
		}
		used[u] = true
		r := recipient{user: u, dev: -1}
		if rng.Float64() >= g.cfg.userShare {
			j := rng.IntN(g.f.devicesOf(int(u)))
			r.dev = u + int32(j*g.f.Users)
		}
		out = append(out, r)
	}
	return out
}

func recipientString(r recipient) string {
	if r.dev < 0 {
		return userName(int(r.user))
	}
	return userName(int(r.user)) + "/" + deviceName(int(r.dev))
}

// postRetryWindow is how long after its first attempt a POST is retried.
const postRetryWindow = 20 * time.Second

func (g *generator) postOne(ctx context.Context, rng *rand.Rand, n int) {
	recips := g.pick(rng, n)
	to := make([]string, n)
	for i, r := range recips {
		to[i] = recipientString(r)
	}
	now := time.Now()
	seq := g.col.newPost(now, n)
	req := api.SendRequest{To: to, Data: json.RawMessage(`{"ts":` + strconv.FormatInt(now.UnixNano(), 10) + `,"seq":` + strconv.FormatUint(uint64(seq), 10) + `}`)}
	expiring := g.cfg.expireShare > 0 && rng.Float64() < g.cfg.expireShare
	if expiring {
		e := int64(g.cfg.expireIn)
		req.ExpiresIn = &e
	}
	key := "soak-" + g.runID + "-" + strconv.FormatUint(uint64(seq), 10)
	giveUp := now.Add(postRetryWindow)
	for attempt := 0; ; attempt++ {
		g.attempts.Add(1)
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := g.api.Send(actx, g.app, req, key)
		cancel()
		if err == nil {
			if why := checkSendResponse(resp, to); why != "" {
				g.col.badPost(seq, why)
				return
			}
			ids := make([]string, n)
			for i, m := range resp.Messages {
				ids[i] = m.ID
			}
			g.col.accept(seq, recips, ids, expiring)
			return
		}
		var ae *api.Error
		final := errors.As(err, &ae) && ae.Status < 500 && ae.Status != 429
		if final {
			g.status4xx.Add(1)
		}
		if final || ctx.Err() != nil || attempt >= 8 || time.Now().After(giveUp) {
			g.col.failPost(seq)
			if final {
				g.col.mu.Lock()
				g.col.example("post_refused", "POST %d: %v", seq, err)
				g.col.mu.Unlock()
			}
			return
		}
		g.retries.Add(1)
		if !sleepCtx(ctx, min(100*time.Millisecond<<attempt, 2*time.Second)) {
			g.col.failPost(seq)
			return
		}
	}
}

// checkSendResponse returns why a 202 does not answer the POST, or "".
func checkSendResponse(resp *api.SendResponse, to []string) string {
	if len(resp.Messages) != len(to) {
		return fmt.Sprintf("%d messages in the answer for %d recipients", len(resp.Messages), len(to))
	}
	for i, m := range resp.Messages {
		if m.To != to[i] {
			return fmt.Sprintf("answer %d is for %q, not %q", i, m.To, to[i])
		}
		if m.ID == "" {
			return fmt.Sprintf("answer %d has no id", i)
		}
	}
	return ""
}

// sleepCtx sleeps d unless ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
