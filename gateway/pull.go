package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"tether/gateway/api"
	"tether/queue"
)

// The device HTTP pull API (SPEC section 3): for clients that cannot hold a
// connection. It has the queue semantics of a session without stream
// management: messages returned are "sent", and stay pending until
// acknowledged.

const maxPullWait = 60

// deviceAuth authenticates HTTP Basic "user@app" with the user's password
// and the Tether-Device header.
func (g *Gateway) deviceAuth(r *http.Request) (queue.DeviceRef, *api.Error) {
	login, pass, ok := r.BasicAuth()
	if !ok {
		return queue.DeviceRef{}, apiError(api.CodeUnauthenticated, "", "HTTP Basic auth as user@app is required")
	}
	at := strings.LastIndexByte(login, '@')
	if at <= 0 {
		return queue.DeviceRef{}, apiError(api.CodeUnauthenticated, "", "the login must be user@app")
	}
	user, app := login[:at], login[at+1:]
	device := r.Header.Get("Tether-Device")
	if !validDevice(device) {
		return queue.DeviceRef{}, apiError(api.CodeInvalidArgument, "Tether-Device", "header Tether-Device must be a device id")
	}
	if !validUser(user) || !validApp(app) || !(directory{g}).AppExists(app) {
		return queue.DeviceRef{}, apiError(api.CodeUnauthenticated, "", "wrong user, app or password")
	}
	addr := remoteAddr(r)
	if !g.sessions.AllowLogin(app, user, addr) {
		return queue.DeviceRef{}, apiError(api.CodeRateLimited, "", "too many failed logins; retry in a minute")
	}
	ok = (directory{g}).CheckPassword(app, user, pass)
	g.sessions.LoginResult(app, user, addr, ok)
	if !ok {
		return queue.DeviceRef{}, apiError(api.CodeUnauthenticated, "", "wrong user, app or password")
	}
	return queue.DeviceRef{App: app, User: user, Device: device}, nil
}

func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// pullSink wakes a long-polling pull when a message arrives.
type pullSink struct{ ch chan struct{} }

func (p pullSink) Deliver(*queue.Message, bool) queue.Writer {
	select {
	case p.ch <- struct{}{}:
	default:
	}
	return nil
}
func (p pullSink) Withdraw(uint64) {}

func (g *Gateway) pullMessages(w http.ResponseWriter, r *http.Request) {
	dev, aerr := g.deviceAuth(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	wait, aerr := queryInt(r, "wait", 0, 0, maxPullWait)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	limit, aerr := queryInt(r, "limit", 100, 1, 1000)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	ctx := r.Context()
	if wait > 0 {
		// Live from now: a message enqueued before the subscription below
		// is found by the read after it, and needs no wake.
		k := wakeKey{dev.App, dev.User, dev.Device}
		g.pullStarted(k)
		defer g.pullEnded(k)
	}
	g.touchDevice(ctx, dev, "http")
	sink := pullSink{ch: make(chan struct{}, 1)}
	var sub *queue.Subscription
	if wait > 0 {
		sub = g.q.Subscribe(dev.App, dev.User, dev.Device, sink)
		defer sub.Close()
	}
	deadline := time.NewTimer(time.Duration(wait) * time.Second)
	defer deadline.Stop()
	var msgs []*queue.Message
	for {
		var err error
		msgs, err = g.q.Pending(ctx, dev, 0, int(limit))
		if err != nil {
			g.writeError(w, r, err)
			return
		}
		if len(msgs) > 0 || wait == 0 {
			break
		}
		select {
		case <-sink.ch:
			continue
		case <-deadline.C:
		case <-ctx.Done():
		case <-g.draining.Done(): // shutting down: answer now
		}
		break
	}
	out := api.PullResponse{Messages: make([]api.PulledMessage, 0, len(msgs))}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		out.Messages = append(out.Messages, api.PulledMessage{
			ID: m.ID, Body: m.Body, Data: m.Data, Channel: m.Channel, Priority: m.Priority.String(),
			CreatedAt: m.CreatedAt, ExpiresAt: m.ExpiresAt,
		})
		ids = append(ids, m.ID)
	}
	if len(ids) > 0 {
		if err := g.q.MarkSent(ctx, dev, ids...); err != nil {
			g.writeError(w, r, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (g *Gateway) pullAcks(w http.ResponseWriter, r *http.Request) {
	dev, aerr := g.deviceAuth(r)
	if aerr != nil {
		g.writeError(w, r, aerr)
		return
	}
	var req api.AcksRequest
	if err := g.decodeJSON(w, r, &req); err != nil {
		g.writeError(w, r, err)
		return
	}
	if len(req.Delivered)+len(req.Read) > 1000 {
		g.writeError(w, r, apiError(api.CodeInvalidArgument, "delivered", "at most 1000 ids per request"))
		return
	}
	ctx := r.Context()
	if err := g.q.MarkDelivered(ctx, dev, req.Delivered...); err != nil {
		g.writeError(w, r, err)
		return
	}
	if err := g.q.MarkRead(ctx, dev, req.Read...); err != nil {
		g.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// touchDevice records that a device was seen.
func (g *Gateway) touchDevice(ctx context.Context, dev queue.DeviceRef, transport string) {
	if err := g.q.TouchDevice(ctx, dev, transport); err != nil && !errors.Is(err, context.Canceled) {
		g.log.Warn("device record", zapApp(dev.App))
	}
}

// pullStarted and pullEnded count a device's long polls. A device waiting
// in one is live, and so is one whose poll ended within the lost-wake
// grace (a pull client polls again at once): it gets its messages without
// a wake push. When the grace has passed, the waker looks again (as for a
// lost XMPP connection) and wakes it if messages still wait.
func (g *Gateway) pullStarted(k wakeKey) {
	g.pullMu.Lock()
	if g.pulling == nil {
		g.pulling, g.polled = map[wakeKey]int{}, map[wakeKey]time.Time{}
	}
	g.pulling[k]++
	g.pullMu.Unlock()
}

func (g *Gateway) pullEnded(k wakeKey) {
	g.pullMu.Lock()
	g.pulling[k]--
	last := g.pulling[k] <= 0
	if last {
		delete(g.pulling, k)
		g.polled[k] = time.Now()
	}
	g.pullMu.Unlock()
	if w := g.waker; last && w != nil {
		w.lost(k)
	}
}

// live reports whether a device can get a message now without a wake: an
// XMPP session is live, it waits in a long poll, or its last poll ended
// within the lost-wake grace.
func (g *Gateway) live(app, user, device string) bool {
	if g.sessions.Live(app, user, device) {
		return true
	}
	k := wakeKey{app, user, device}
	g.pullMu.Lock()
	defer g.pullMu.Unlock()
	if g.pulling[k] > 0 {
		return true
	}
	if at, ok := g.polled[k]; ok {
		if time.Since(at) < g.sessions.LostWakeGrace() {
			return true
		}
		delete(g.polled, k)
	}
	return false
}
