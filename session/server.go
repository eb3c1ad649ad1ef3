package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"tether/internal/wsproto"
	"tether/queue"
	"tether/sdkproto"
)

// Queue is what a session needs of the queue; *queue.Queue implements it.
type Queue interface {
	Subscribe(app, user, device string, sink queue.Sink) *queue.Subscription
	Pending(ctx context.Context, dev queue.DeviceRef, after uint64, limit int) ([]*queue.Message, error)
	MarkSent(ctx context.Context, dev queue.DeviceRef, ids ...string) error
	MarkDelivered(ctx context.Context, dev queue.DeviceRef, ids ...string) error
	MarkRead(ctx context.Context, dev queue.DeviceRef, ids ...string) error
	Inbound(ctx context.Context, dev queue.DeviceRef, e *queue.Event) error
	AppendEvent(ctx context.Context, e *queue.Event) error
	UpdateDevice(ctx context.Context, dev queue.DeviceRef, fn func(d *queue.Device) *queue.Device) (bool, error)
	DeviceBound(ctx context.Context, dev queue.DeviceRef, transport string) error
	DeviceUnbound(ctx context.Context, dev queue.DeviceRef) error
	// Now is the time expiry is measured on.
	Now() time.Time
}

// Directory answers what a session needs of apps and users; the gateway
// implements it.
type Directory interface {
	// AppExists reports whether app exists.
	AppExists(app string) bool
	// SaltedCredentials returns the SCRAM key of a user for mechanism
	// ("SCRAM-SHA-1" or "SCRAM-SHA-256").
	SaltedCredentials(app, user, mechanism string) (salt, salted []byte, iterations int, err error)
	// CheckPassword verifies a clear-text password (SASL PLAIN).
	CheckPassword(app, user, password string) bool
	// ClientConfig returns the app's client_config JSON (nil if none).
	ClientConfig(app string) json.RawMessage
	// PushAllowed reports whether a push token may be registered for app
	// (the provider has not reported it invalid to that app).
	PushAllowed(app, provider, token string) bool
}

// Zero values of Config's timeouts.
const (
	DefaultAckTimeout    = 60 * time.Second
	DefaultLostWakeGrace = 5 * time.Second
)

// Config configures a Server. Zero values are defaults.
type Config struct {
	// Domain is the base domain: app domains are "<app>.<Domain>".
	Domain string
	// TLS serves STARTTLS and direct TLS. Required.
	TLS *tls.Config
	// Queue and Directory. Required.
	Queue     Queue
	Directory Directory
	// Logger. Nil means no logging.
	Logger *zap.Logger
	// AuthTimeout: TLS and authentication must finish by then. Zero value:
	// sdkproto.AuthTimeout (10 s).
	AuthTimeout time.Duration
	// IdleTimeout closes a session without traffic. Zero value:
	// sdkproto.IdleTimeout (15 min).
	IdleTimeout time.Duration
	// AckTimeout treats a connection as lost when nothing at all comes
	// from the device within it after the gateway asked for an XEP-0198
	// acknowledgement (<r/>): a device gone without closing its TCP
	// connection (a phone out of coverage, a suspended app, a stuck
	// client) would otherwise keep its messages "sent" into the void, and
	// get no wake, until the idle timeout. The session is then kept for
	// resumption, as for any lost connection, its messages go out again on
	// the next session, and the device counts as offline. Zero value:
	// 60 s.
	AckTimeout time.Duration
	// LostWakeGrace is how long a session whose connection was lost (kept
	// for resumption) still counts as live for wakes (Live): a device on a
	// network blip resumes within it, one suspended or out of coverage
	// does not and is woken. Zero value: 5 s.
	LostWakeGrace time.Duration
	// OnLost, if set, is called (without locks held, and must not block)
	// when a device's session loses its connection or ends while messages
	// to it are unacknowledged, or when a message reaches a session that
	// waits for resumption: the gateway then wakes the device if it is not
	// live again after LostWakeGrace.
	OnLost func(app, user, device string)
	// OnBound, if set, is called (without locks held, and must not block)
	// when a device's session is bound or resumed: the device is online
	// (the gateway's waker ends an outstanding wake).
	OnBound func(app, user, device string)
	// ResumeWindow keeps a dropped session with stream management for
	// resumption. Zero value: sdkproto.ResumeWindow (300 s).
	ResumeWindow time.Duration
	// Window is how many messages may be unacknowledged on a session with
	// stream management before the queue stops handing out more. Zero
	// value: 256.
	Window int
	// MaxOutboundBytes closes a session whose unsent output exceeds it
	// (a slow consumer; its messages stay in the durable queue). Queued
	// messages are kept under half of it (with stream management, the
	// ones in flight, which a resumption sends again at once), so a
	// backlog of large messages flows at the pace the device reads. Zero
	// value: 1 MiB.
	MaxOutboundBytes int
	// MaxSessionsPerUser caps the devices of one user online at once; a
	// bind beyond it gets <resource-constraint/>. Zero: no cap.
	MaxSessionsPerUser int
	// MaxSessions caps the sessions of the whole node. Zero: no cap.
	MaxSessions int
	// InsecureWebSocketFromAny allows SASL over plain ws:// from any
	// address, for deployments behind a TLS-terminating proxy. Default:
	// only from loopback.
	InsecureWebSocketFromAny bool
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = sdkproto.AuthTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = sdkproto.IdleTimeout
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.LostWakeGrace == 0 {
		c.LostWakeGrace = DefaultLostWakeGrace
	}
	if c.ResumeWindow == 0 {
		c.ResumeWindow = sdkproto.ResumeWindow
	}
	if c.Window == 0 {
		c.Window = 256
	}
	if c.MaxOutboundBytes == 0 {
		c.MaxOutboundBytes = 1 << 20
	}
}

// Server accepts device connections and runs their sessions. All methods
// are safe for concurrent use.
type Server struct {
	nextID atomic.Uint64
	cfg    Config
	log    *zap.Logger
	q      Queue
	dir    Directory
	thr    *throttle
	m      *metrics
	poll   *poller // nil: sessions do not park
	parked atomic.Int64
	work   *workers
	sent   sentMarks
	fake   [32]byte // the key of the made-up SCRAM salts of unknown users

	mu        sync.Mutex
	bound     map[deviceKey]*Session // bound sessions by device (including detached ones)
	perUser   map[userKey]int        // bound sessions per user
	byKind    map[string]int64       // bound sessions per transport (Counts), kept by setBoundLocked and unbind
	resumable map[string]*Session    // detached or live sessions by stream-management id
	all       map[*Session]struct{}
	draining  bool
	wg        sync.WaitGroup
}

type deviceKey struct{ app, user, device string }

// New returns a Server.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg: cfg, log: cfg.Logger, q: cfg.Queue, dir: cfg.Directory,
		thr:       newThrottle(),
		poll:      getPoller(),
		work:      newWorkers(),
		m:         newMetrics(),
		bound:     map[deviceKey]*Session{},
		perUser:   map[userKey]int{},
		byKind:    map[string]int64{},
		resumable: map[string]*Session{},
		all:       map[*Session]struct{}{},
	}
	s.sent.quit = s.work.quit
	randRead(s.fake[:])
	return s
}

// fakeCredentials returns SCRAM credentials for a user that does not
// exist: a salt derived from the user id (the same at every try, as a real
// user's is) and a salted password no proof matches.
func (s *Server) fakeCredentials(app, user string) (salt, salted []byte, iter int) {
	m := hmac.New(sha256.New, s.fake[:])
	m.Write([]byte(app))
	m.Write([]byte{0})
	m.Write([]byte(user))
	sum := m.Sum(nil)
	salted = make([]byte, 32)
	randRead(salted)
	return sum[:16], salted, fakeSCRAMIterations
}

// fakeSCRAMIterations is the iteration count shown for unknown users: the
// one the gateway stores keys with.
const fakeSCRAMIterations = 4096

// Collectors returns the session metrics for the gateway to register.
func (s *Server) Collectors() []prometheus.Collector { return s.m.collectors(s) }

// ServeTCP accepts XMPP c2s connections on ln until it is closed: with
// directTLS, TLS from the first byte (XEP-0368); without, STARTTLS is
// required before SASL. It returns when ln is closed.
func (s *Server) ServeTCP(ln net.Listener, directTLS bool) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors (EMFILE), or any other accept
			// failure: back off and keep serving, as net/http does; the
			// sessions already open are unaffected.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
			time.Sleep(delay) // accept backoff
			continue
		}
		delay = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c, directTLS)
		}()
	}
}

func (s *Server) serveConn(c net.Conn, directTLS bool) {
	if directTLS {
		c.SetDeadline(time.Now().Add(s.cfg.AuthTimeout))
		tc := tls.Server(c, s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			s.m.handshakes.WithLabelValues("tls", "tls_failed").Inc()
			c.Close()
			return
		}
		c = tc
	}
	kind := "starttls"
	if directTLS {
		kind = "tls"
	}
	sess := s.newSession(newTCPTransport(c, directTLS), kind)
	// A fresh goroutine for the session: the handshake grew this one's
	// stack (crypto), and an idle session should park on a small one.
	s.wg.Add(1) // given back by the session when it ends
	go sess.run()
}

// ServeHTTP accepts an RFC 7395 WebSocket connection (subprotocol "xmpp").
// Over plain ws:// SASL is allowed only from loopback unless configured.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, pending, proto, err := wsproto.Upgrade(w, r, []string{sdkproto.WebSocketProtocol})
	if err != nil {
		return // Upgrade answered the request
	}
	if proto != sdkproto.WebSocketProtocol {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.Write(wsproto.AppendClose(nil, wsproto.ClosePolicyViolation, "the xmpp subprotocol is required"))
		c.Close()
		return
	}
	secure := r.TLS != nil || s.cfg.InsecureWebSocketFromAny
	addr, _ := netip.ParseAddrPort(r.RemoteAddr)
	if addr.Addr().IsLoopback() {
		secure = true
	}
	var ra net.Addr = net.TCPAddrFromAddrPort(addr)
	sess := s.newSession(newWSTransport(c, pending, secure, ra), "websocket")
	// The connection is hijacked: serve it from a fresh goroutine and let
	// net/http's (with its grown stack and request state) go.
	s.wg.Add(1) // given back by the session when it ends
	go sess.run()
}

func (s *Server) newSession(t transport, kind string) *Session {
	sess := &Session{srv: s, t: t, id: s.nextID.Add(1), kind: kind, log: s.log}
	s.mu.Lock()
	s.all[sess] = struct{}{}
	draining := s.draining
	s.mu.Unlock()
	if draining {
		sess.closeReason = ReasonShutdown
	}
	s.m.connections.WithLabelValues(kind).Inc()
	return sess
}

func (s *Server) forget(sess *Session) {
	s.mu.Lock()
	delete(s.all, sess)
	s.mu.Unlock()
	s.m.connections.WithLabelValues(sess.kind).Dec()
}

// bind registers sess as the session of its device, replacing (with
// <conflict/>) an older one.
// It reports false, binding nothing, when a new device would exceed
// MaxSessionsPerUser or MaxSessions.
func (s *Server) bind(sess *Session) bool {
	k := deviceKey{sess.app, sess.user, sess.device}
	u := userKey{sess.app, sess.user}
	s.mu.Lock()
	old := s.bound[k]
	if old == nil {
		if c := s.cfg.MaxSessionsPerUser; c > 0 && s.perUser[u] >= c {
			s.mu.Unlock()
			s.m.refused.WithLabelValues("user_cap").Inc()
			return false
		}
		if c := s.cfg.MaxSessions; c > 0 && len(s.bound) >= c {
			s.mu.Unlock()
			s.m.refused.WithLabelValues("total_cap").Inc()
			return false
		}
		s.perUser[u]++
	}
	s.setBoundLocked(k, sess)
	s.mu.Unlock()
	if old != nil && old != sess {
		old.terminate(ReasonReplaced)
	}
	return true
}

type userKey struct{ app, user string }

// setBoundLocked makes sess the bound session of k, counting it by
// transport; s.mu is held.
func (s *Server) setBoundLocked(k deviceKey, sess *Session) {
	if old := s.bound[k]; old != nil {
		s.byKind[old.kind]--
	}
	s.bound[k] = sess
	s.byKind[sess.kind]++
}

// unbind forgets sess; it reports whether sess was still the device's
// session (not replaced by a newer one).
func (s *Server) unbind(sess *Session) bool {
	k := deviceKey{sess.app, sess.user, sess.device}
	s.mu.Lock()
	defer s.mu.Unlock()
	current := s.bound[k] == sess
	if current {
		delete(s.bound, k)
		s.byKind[sess.kind]--
		u := userKey{sess.app, sess.user}
		if s.perUser[u]--; s.perUser[u] <= 0 {
			delete(s.perUser, u)
		}
	}
	if sess.smID != "" && s.resumable[sess.smID] == sess {
		delete(s.resumable, sess.smID)
	}
	return current
}

// AllowLogin reports whether a password login for app/user from addr may
// be tried now (failed logins are throttled per user and per address); it
// lets other front doors (the device HTTP pull) share the sessions'
// throttle. LoginResult records the outcome.
func (s *Server) AllowLogin(app, user string, addr netip.Addr) bool {
	return s.thr.allow(app, user, addr)
}

// LoginResult records a password login's outcome for the throttle.
func (s *Server) LoginResult(app, user string, addr netip.Addr, ok bool) {
	if ok {
		s.thr.succeed(app, user)
	} else {
		s.thr.fail(app, user, addr)
	}
}

// Live reports whether a device has a session that is connected, or that
// lost its connection less than LostWakeGrace ago and may resume: whether
// a wake would be redundant. (Online also counts sessions waiting longer
// for resumption.)
func (s *Server) Live(app, user, device string) bool {
	s.mu.Lock()
	sess := s.bound[deviceKey{app, user, device}]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return !sess.closed && (sess.t != nil || time.Since(sess.detachedAt) < s.cfg.LostWakeGrace)
}

// LostWakeGrace returns Config.LostWakeGrace (with its default).
func (s *Server) LostWakeGrace() time.Duration { return s.cfg.LostWakeGrace }

// notifyBound calls OnBound for sess's device.
func (s *Server) notifyBound(sess *Session) {
	if f := s.cfg.OnBound; f != nil {
		f(sess.app, sess.user, sess.device)
	}
}

// lost calls OnLost for sess's device.
func (s *Server) lost(sess *Session) {
	if f := s.cfg.OnLost; f != nil {
		f(sess.app, sess.user, sess.device)
	}
}

// Online reports whether a device has a bound session.
func (s *Server) Online(app, user, device string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.bound[deviceKey{app, user, device}]
	return ok
}

// Counts returns the number of bound sessions by transport.
func (s *Server) Counts() map[string]int64 {
	out := map[string]int64{"tls": 0, "starttls": 0, "websocket": 0}
	s.mu.Lock()
	defer s.mu.Unlock()
	for kind, n := range s.byKind {
		out[kind] = n
	}
	return out
}

// KickUser ends every session of a user (the user was deleted).
func (s *Server) KickUser(app, user string) {
	s.kick(func(k deviceKey) bool { return k.app == app && k.user == user })
}

// KickApp ends every session of an app (the app was deleted).
func (s *Server) KickApp(app string) {
	s.kick(func(k deviceKey) bool { return k.app == app })
}

func (s *Server) kick(match func(deviceKey) bool) {
	var list []*Session
	s.mu.Lock()
	for k, sess := range s.bound {
		if match(k) {
			list = append(list, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range list {
		sess.terminate(ReasonNotAuthorized)
	}
}

// Shutdown sends <system-shutdown/> to every session, closes them, and
// waits for their goroutines or ctx. Listeners must be closed first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	list := make([]*Session, 0, len(s.all)+len(s.resumable))
	for sess := range s.all {
		list = append(list, sess)
	}
	for _, sess := range s.resumable {
		list = append(list, sess)
	}
	s.mu.Unlock()
	for _, sess := range list {
		sess.terminate(ReasonShutdown)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.work.stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
