package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"tether/gateway/api"
	"tether/internal/bufpool"
	"tether/queue"
	"tether/session"
	"tether/storage"
)

// Version is the gateway's version, set at link time.
var Version = "dev"

// Gateway is one Tether node: the store, the queue, the REST API and the
// listeners. New opens everything and binds the listeners; Run serves until
// its context ends and then shuts down gracefully.
type Gateway struct {
	ready atomic.Bool
	mux   *http.ServeMux // the routes, for the catch-all's 405

	cfg        Config
	log        *zap.Logger
	db         *storage.DB
	q          *queue.Queue
	apps       *apps
	users      users
	certs      *certStore
	adminToken string
	reg        *prometheus.Registry
	metrics    *httpMetrics
	sessions   *session.Server
	webhooks   *webhooks
	waker      *waker
	limiter    *appLimiter
	// draining ends when shutdown starts: long polls (device pull, event
	// feed) answer with what they have, rather than hold the HTTP
	// servers' graceful shutdown for up to their 60 s wait.
	draining   context.Context
	startDrain context.CancelFunc
	pullMu     sync.Mutex
	pulling    map[wakeKey]int       // devices waiting in a long poll (pull.go)
	polled     map[wakeKey]time.Time // when their last poll ended
	started    time.Time
	// startedAt is the start on cfg.Clock, the clock of the device
	// records' LastSeen (the waker's restart grace compares them).
	startedAt time.Time

	listeners map[string]net.Listener // by name: http, https, metrics
	servers   []*http.Server
	closeOnce sync.Once
	closeErr  error
}

// New opens the store in cfg.DataDir, loads or generates the TLS
// certificate and admin token, and binds every configured listener.
func New(cfg Config) (g *Gateway, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g = &Gateway{cfg: cfg, log: cfg.Logger, started: time.Now(), startedAt: cfg.Clock.Now(), listeners: map[string]net.Listener{}, limiter: newAppLimiter(cfg.AppRateLimit)}
	g.draining, g.startDrain = context.WithCancel(context.Background())
	switch {
	case cfg.GCPercent > 0:
		debug.SetGCPercent(cfg.GCPercent)
	case cfg.GCPercent == 0 && os.Getenv("GOGC") == "":
		debug.SetGCPercent(DefaultGCPercent)
	}
	if n := procs(cfg.Procs, os.Getenv("GOMAXPROCS") != ""); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	opened := g // a failing return sets g to nil before this runs
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: data dir: %w", err)
	}
	g.reg = prometheus.NewRegistry()
	// The scheduler's latency histogram (time goroutines spend runnable
	// before they run) tells a CPU-starved node from a slow store, and
	// the kernel's counts (cpuwait.go) the threads' own waits for a core.
	g.reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newCPUWaitCollector())
	commitHist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tether_store_commit_seconds",
		Help:    "Store batch commit latency; synced commits include the shared WAL fsync.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"sync"})
	g.reg.MustRegister(commitHist)
	syncObs, nosyncObs := commitHist.WithLabelValues("true"), commitHist.WithLabelValues("false")

	opening := time.Now()
	g.db, err = storage.Open(filepath.Join(cfg.DataDir, "store"), storage.Options{
		InMemory: cfg.InMemory,
		Logger:   cfg.Logger.Named("storage"),
		OnCommit: func(d time.Duration, sync bool) {
			if sync {
				syncObs.Observe(d.Seconds())
			} else {
				nosyncObs.Observe(d.Seconds())
			}
		},
	})
	if err != nil {
		return nil, err
	}
	// After a crash the store replays its WAL here: this is most of a
	// restart's time before the listeners open.
	cfg.Logger.Info("store opened", zap.Duration("took", time.Since(opening)))
	g.reg.MustRegister(g.db.Collector())
	if c := g.db.FsyncCollector(); c != nil {
		g.reg.MustRegister(c)
	}
	// The timers start once the gateway is built: a due fallback calls
	// the waker's SMS providers.
	g.q, err = queue.New(queue.Config{DB: g.db, Clock: cfg.Clock, Logger: cfg.Logger.Named("queue"), TimerInterval: cfg.TimerInterval,
		Fallback: fallback{g}, DeferTimers: true})
	if err != nil {
		return nil, err
	}
	g.reg.MustRegister(g.q.Collectors()...)
	g.apps, err = newApps(g.db, cfg.Clock.Now)
	if err != nil {
		return nil, err
	}
	g.users = users{db: g.db}
	if g.certs, err = loadCert(&cfg); err != nil {
		return nil, err
	}
	var generated bool
	if g.adminToken, generated, err = loadAdminToken(&cfg); err != nil {
		return nil, fmt.Errorf("gateway: admin token: %w", err)
	}
	if generated {
		g.log.Info("generated the admin token", zap.String("file", filepath.Join(cfg.DataDir, "admin-token")))
		g.banner("Tether admin token (saved in %s): %s\n", filepath.Join(cfg.DataDir, "admin-token"), g.adminToken)
	}
	g.metrics = newHTTPMetrics(g.reg)
	g.sessions = session.New(session.Config{
		Domain:    cfg.Domain,
		TLS:       g.certs.TLSConfig(),
		Queue:     g.q,
		Directory: directory{g},
		Logger:    cfg.Logger.Named("session"),

		AuthTimeout:  cfg.SessionAuthTimeout,
		IdleTimeout:  cfg.SessionIdleTimeout,
		ResumeWindow: cfg.SessionResumeWindow,
		AckTimeout:   cfg.SessionAckTimeout,

		LostWakeGrace: cfg.SessionLostWakeGrace,
		OnLost: func(app, user, device string) {
			if w := g.waker; w != nil {
				w.lost(wakeKey{app, user, device})
			}
		},
		OnBound: func(app, user, device string) {
			if w := g.waker; w != nil {
				w.connected(wakeKey{app, user, device})
			}
		},

		MaxSessionsPerUser: cfg.MaxSessionsPerUser,
		MaxSessions:        cfg.MaxSessions,
	})
	g.reg.MustRegister(g.sessions.Collectors()...)
	g.webhooks = newWebhooks(g)
	if cfg.ProviderCAFile != "" && cfg.ProviderHTTPClient == nil {
		hc, err := providerClient(cfg.ProviderCAFile)
		if err != nil {
			return nil, err
		}
		g.cfg.ProviderHTTPClient = func(string) *http.Client { return hc }
	}
	g.waker = newWaker(g)
	if err := g.listen(); err != nil {
		return nil, err
	}
	if cfg.Dev {
		if err := g.ensureDemo(); err != nil {
			return nil, err
		}
	}
	g.q.StartTimers()
	return g, nil
}

func (g *Gateway) listen() error {
	for _, l := range []struct{ name, addr string }{
		{"http", g.cfg.HTTPAddr}, {"https", g.cfg.HTTPSAddr}, {"metrics", g.cfg.MetricsAddr},
		{"xmpp", g.cfg.XMPPAddr}, {"xmpps", g.cfg.XMPPSAddr},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := listenConfig.Listen(context.Background(), "tcp", l.addr)
		if err != nil {
			return fmt.Errorf("gateway: listen %s on %s: %w", l.name, l.addr, err)
		}
		g.listeners[l.name] = ln
		g.log.Info("listening", zap.String("listener", l.name), zap.String("addr", ln.Addr().String()))
	}
	return nil
}

// listenConfig sets TCP keepalive for accepted connections to probe an
// idle peer after 5 minutes (Go's default is every 15 s, which at a
// million idle device sessions is tens of thousands of probes a second and
// wakes mobile radios); the session's own idle timeout and stream
// management cover the rest.
var listenConfig = net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
	Enable: true, Idle: 5 * time.Minute, Interval: 30 * time.Second, Count: 4,
}}

// Addr returns the bound address of a listener ("http", "https",
// "metrics", "xmpp", "xmpps"), or "" if it is disabled.
func (g *Gateway) Addr(name string) string {
	if ln, ok := g.listeners[name]; ok {
		return ln.Addr().String()
	}
	return ""
}

// AdminToken returns the admin bearer token in force.
func (g *Gateway) AdminToken() string { return g.adminToken }

// Queue returns the gateway's queue (for in-process tests and the soak
// harness).
func (g *Gateway) Queue() *queue.Queue { return g.q }

// Handler returns the REST API handler, with metrics.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	g.routes(mux)
	g.mux = mux
	return g.withBodyDeadline(g.metrics.wrap(mux))
}

// withBodyDeadline gives a request that carries a body bodyTime to send
// it: a client that trickles it in is cut off, whether the handler reads
// the body or refuses the request first (net/http then reads the rest to
// reuse the connection). The server's ReadHeaderTimeout covers only the
// headers.
func (g *Gateway) withBodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // -1: chunked
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyTime(r.ContentLength, g.cfg.MaxBodyBytes)))
		}
		next.ServeHTTP(w, r)
	})
}

// Run serves until ctx is done, then shuts down gracefully, all within
// ShutdownTimeout: readiness turns false, the XMPP listeners close, every
// session gets <system-shutdown/>, the HTTP servers stop accepting and
// in-flight requests finish, the webhook outboxes are posted, and the store
// is flushed and closed.
func (g *Gateway) Run(ctx context.Context) error {
	h := g.Handler()
	errc := make(chan error, len(g.listeners))
	for name, ln := range g.listeners {
		if name == "xmpp" || name == "xmpps" {
			go func() {
				if err := g.sessions.ServeTCP(ln, name == "xmpps"); err != nil {
					errc <- fmt.Errorf("gateway: %s listener: %w", name, err)
				}
			}()
			continue
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          zap.NewStdLog(g.log.Named("http")),
		}
		switch name {
		case "https":
			srv.TLSConfig = g.certs.TLSConfig("h2", "http/1.1")
			ln = tls.NewListener(ln, srv.TLSConfig)
		case "metrics":
			srv.Handler = g.metricsHandler()
		}
		g.servers = append(g.servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("gateway: %s server: %w", name, err)
			}
		}()
	}
	g.webhooks.sync()
	g.ready.Store(true)
	g.log.Info("ready", zap.Duration("since_start", time.Since(g.started)))
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	g.ready.Store(false)
	g.startDrain()
	g.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	for _, name := range []string{"xmpp", "xmpps"} {
		if ln, ok := g.listeners[name]; ok {
			ln.Close()
		}
	}
	if err := g.sessions.Shutdown(sctx); err != nil {
		g.log.Warn("shutdown: sessions still open at the deadline", zap.Error(err))
	}
	// All at once: one after another, the later ones kept accepting
	// requests while the first drained.
	var wg sync.WaitGroup
	for _, srv := range g.servers {
		wg.Go(func() {
			if err := srv.Shutdown(sctx); err != nil {
				g.log.Warn("shutdown: requests still running at the deadline", zap.Error(err))
			}
		})
	}
	wg.Wait()
	// Nothing appends events any more: post what the outboxes hold.
	g.webhooks.drain(sctx)
	return errors.Join(runErr, g.Close())
}

// Close releases everything New opened. Run calls it; call it directly
// only if Run was never called. Idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.startDrain()
		var errs []error
		for _, srv := range g.servers {
			srv.Close()
		}
		for _, ln := range g.listeners {
			ln.Close()
		}
		if g.webhooks != nil {
			g.webhooks.close()
		}
		if g.waker != nil {
			g.waker.close()
		}
		if g.q != nil {
			errs = append(errs, g.q.Close())
		}
		if g.db != nil {
			errs = append(errs, g.db.Close())
		}
		g.closeErr = errors.Join(errs...)
		g.log.Info("stopped")
	})
	return g.closeErr
}

// providerClient is an HTTP client (HTTP/2 when the server offers it)
// trusting the system roots and the CA certificates in caFile.
func providerClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: provider CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("gateway: provider CA file %s holds no PEM certificate", caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr}, nil
}

// ReloadTLS reads the certificate files again; new handshakes use the new
// certificate, open connections are untouched.
func (g *Gateway) ReloadTLS() error { return g.certs.Reload() }

func (g *Gateway) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{Registry: g.reg}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", g.healthz)
	return mux
}

// StoreStats returns the store's counters.
func (g *Gateway) StoreStats() storage.Stats { return g.db.Stats() }

// Registry returns the gateway's Prometheus registry.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// ensureDemo makes sure the app "demo" exists (--dev) and prints how to
// use it. Its API key is kept in DataDir/demo-api-key (dev only) so it can
// be shown again on the next start.
func (g *Gateway) ensureDemo() error {
	keyFile := filepath.Join(g.cfg.DataDir, "demo-api-key")
	var key string
	if _, ok := g.apps.get("demo"); !ok {
		_, k, err := g.apps.create("demo", "Demo")
		if err != nil {
			return err
		}
		key = k
		if err := writeFileAtomic(keyFile, []byte(key+"\n"), 0o600); err != nil {
			return err
		}
	} else if b, err := os.ReadFile(keyFile); err == nil && g.demoKeyWorks(strings.TrimSpace(string(b))) {
		key = strings.TrimSpace(string(b))
	} else {
		// No key file, or its key no longer opens the app (the app was
		// deleted and created again, or its key rotated): a new key.
		k, _, err := g.apps.rotate("demo")
		if err != nil {
			return err
		}
		key = k
		if err := writeFileAtomic(keyFile, []byte(key+"\n"), 0o600); err != nil {
			return err
		}
	}
	base := "http://" + g.Addr("http")
	g.log.Info("dev mode: app demo is ready",
		zap.String("app", "demo"),
		zap.String("api_key", key),
		zap.String("xmpp_domain", "demo."+g.cfg.Domain),
		zap.String("admin_token_file", filepath.Join(g.cfg.DataDir, "admin-token")))
	g.banner("\nTether dev mode\n  admin token: %s\n  app:         demo\n  API key:     %s\n  XMPP domain: demo.%s\n  try:\n    curl -s -X PUT -H 'Authorization: Bearer %s' %s/v1/apps/demo/users/alice\n    curl -s -H 'Authorization: Bearer %s' -d '{\"to\":[\"alice\"],\"body\":\"hello\"}' %s/v1/apps/demo/messages\n\n",
		g.adminToken, key, g.cfg.Domain, key, base, key, base)
	return nil
}

// demoKeyWorks reports whether key authenticates as app demo.
func (g *Gateway) demoKeyWorks(key string) bool {
	app, ok := g.apps.authenticate(key)
	return ok && app == "demo"
}

func (g *Gateway) banner(format string, args ...any) {
	if g.cfg.Banner != nil {
		fmt.Fprintf(g.cfg.Banner, format, args...)
	}
}

// onAppChange is called after an app's settings changed (PATCH).
func (g *Gateway) onAppChange(rec *appRecord) { g.webhooks.sync() }

// onUserDeleted is called after a user was deleted, to end its sessions.
func (g *Gateway) onUserDeleted(app, user string) {
	g.sessions.KickUser(app, user)
	if w := g.waker; w != nil {
		w.forget(app, user)
	}
}

// sessionCounts reports live sessions by transport.
func (g *Gateway) sessionCounts() map[string]int64 { return g.sessions.Counts() }

// Sessions returns the device session server.
func (g *Gateway) Sessions() *session.Server { return g.sessions }

func zapApp(app string) zap.Field { return zap.String("app", app) }

// readAll reads a size-limited body, mapping the limit to a 413.
// readBody reads a request body of at most MaxBodyBytes, within the
// deadline withBodyDeadline set.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *api.Error) {
	return g.readBodyInto(w, r, make([]byte, 0, 512))
}

// readBodyInto is readBody appending to buf[:0], grown as needed.
func (g *Gateway) readBodyInto(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, *api.Error) {
	bb := bytes.NewBuffer(buf[:0])
	_, err := bb.ReadFrom(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	b := bb.Bytes()
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, apiError(api.CodePayloadTooLarge, "", "request body over %d bytes", mbe.Limit)
		case errors.As(err, &ne) && ne.Timeout():
			w.Header().Set("Connection", "close")
			return nil, apiError(api.CodeInvalidArgument, "", "request body not received within %v", bodyTime(r.ContentLength, g.cfg.MaxBodyBytes))
		}
		return nil, apiError(api.CodeInvalidArgument, "", "reading the body: %v", err)
	}
	// net/http's background read, which watches for the client going
	// away while the handler runs, would otherwise run into the deadline.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	return b, nil
}

// bodyPool holds the buffers the bodies of POST .../messages, the request
// every message comes in by, are read into: the handler decodes what it
// keeps into copies and gives the buffer back. A fresh buffer per POST was
// 4 % of the gateway's allocations in the soak. Their 202 answers are
// encoded into one too.
var bodyPool = bufpool.New(1024, 64<<10)

// bodyTime is how long a request body of n bytes (-1: unknown, up to max)
// may take to arrive: 10 s, and 1 s more for every 64 KiB past the first.
func bodyTime(n, max int64) time.Duration {
	if n < 0 || n > max {
		n = max
	}
	return 10*time.Second + time.Duration(n>>16)*time.Second
}
