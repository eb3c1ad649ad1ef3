package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// config is the parsed command line. Shares are fractions in [0, 1].
type config struct {
	// Load shape.
	sessions, users       int
	tlsShare, startTLS    float64 // transport shares; WebSocket gets the rest
	wsShare               float64
	loginRate             float64 // logins per second during the ramp
	rate                  float64 // messages (recipient entries) per second
	fanout                int     // recipients of a fan-out POST
	fanoutShare           float64 // share of POSTs that fan out
	userShare             float64 // share of recipients addressed as a whole user
	readShare             float64 // share of received messages marked read
	inboundRate           float64 // device-to-backend messages per second
	expireShare           float64 // share of POSTs with a short expiry
	expireIn              int     // their expires_in, seconds
	offline               float64 // share of devices that stay offline until woken
	onlinePush            bool    // online devices also register push tokens
	wakeDelayMin          time.Duration
	wakeDelayMax          time.Duration
	wakeQuiet             time.Duration // a woken device closes after this long without a message
	wakeInterval          int           // the app's defaults.wake_interval, seconds
	wakeGrace             time.Duration // a wake this soon after a connect raced it
	churn                 float64       // percent of online sessions dropped per minute
	resumeShare           float64       // share of churned sessions that resume (XEP-0198)
	killEvery             time.Duration // kill -9 the gateway about this often (0: never)
	killMax               int           // at most this many kills (0: no limit)
	duration, drain       time.Duration
	deadline              time.Duration // hard limit of the whole run (0: derived)
	postConns             int
	checkMax              int // at most this many REST status checks
	sloP99                time.Duration
	window                time.Duration // -window: the report's figures per window of the traffic
	rateSteps             []float64     // -rate-steps: offered rates in turn, each for -d / len
	progress              time.Duration
	seed                  uint64
	workers, perWorker    int
	app                   string
	keep                  bool
	webhook               bool // the app posts its events to a receiver the harness runs; the verdict checks inbound messages
	out                   string
	gatewayBin            string
	gatewayLogLevel       string
	addr, startTLSAddr    string // remote gateway: XMPP direct TLS and STARTTLS
	baseURL, metricsURL   string // remote gateway: REST base URL and /metrics
	adminToken, caFile    string
	insecure              bool
	remote                bool
	worker                bool // hidden: run as a worker process
	seedSet, deadlineAuto bool
	flagValues            map[string]string // every flag's value as parsed, for the report
	cpuProfile            string
	push                  string // push providers of the devices: "apns,fcm", "apns" or "fcm"
	repeat                int
}

// flagDefaults are the full default soak (make soak): the 18,000
// sessions at 5,000 messages/s, for 60 s.
func newFlagSet(cfg *config, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&cfg.sessions, "sessions", 18000, "device sessions (N devices)")
	fs.IntVar(&cfg.users, "users", 6000, "users the devices belong to (device k is user k mod users's)")
	fs.Float64Var(&cfg.tlsShare, "tls", 0.5, "share of devices on direct TLS (port 5223)")
	fs.Float64Var(&cfg.startTLS, "starttls", 0.2, "share of devices on STARTTLS (port 5222)")
	fs.Float64Var(&cfg.wsShare, "ws", 0.3, "share of devices on WebSocket (/xmpp-websocket)")
	fs.Float64Var(&cfg.loginRate, "login-rate", 1500, "logins per second while sessions ramp up")
	fs.Float64Var(&cfg.rate, "rate", 5000, "messages per second posted through REST (a fan-out POST counts each recipient)")
	fs.IntVar(&cfg.fanout, "fanout", 10, "recipients of a fan-out POST")
	fs.Float64Var(&cfg.fanoutShare, "fanout-share", 0.05, "share of POSTs that fan out")
	fs.Float64Var(&cfg.userShare, "user-share", 0.3, "share of recipients addressed as a user (all its devices) rather than user/device")
	fs.Float64Var(&cfg.readShare, "read-share", 0.2, "share of received messages the device marks read (all are acknowledged)")
	fs.Float64Var(&cfg.inboundRate, "inbound-rate", 50, "inbound (device to backend) messages per second")
	fs.Float64Var(&cfg.expireShare, "expire-share", 0.01, "share of POSTs with a short expiry (-expire-in)")
	fs.IntVar(&cfg.expireIn, "expire-in", 3, "expires_in of the short-lived messages, seconds")
	fs.Float64Var(&cfg.offline, "offline", 0.1, "share of devices that stay offline with push registrations until woken")
	fs.StringVar(&cfg.push, "push", "", `push providers the devices register with: "apns,fcm", "apns" or "fcm" (default "apns,fcm"; "fcm" for a remote gateway, which must trust the APNs fake's certificate for APNs: see README.md)`)
	fs.BoolVar(&cfg.onlinePush, "online-push", true, "online devices register push tokens too (so a wake to an online device would show)")
	fs.DurationVar(&cfg.wakeDelayMin, "wake-delay-min", 100*time.Millisecond, "shortest delay between a wake and the device connecting")
	fs.DurationVar(&cfg.wakeDelayMax, "wake-delay-max", 2*time.Second, "longest delay between a wake and the device connecting")
	fs.DurationVar(&cfg.wakeQuiet, "wake-quiet", time.Second, "a woken device disconnects after this long without a message")
	fs.IntVar(&cfg.wakeInterval, "wake-interval", 2, "the app's defaults.wake_interval in seconds (first repeat of an unanswered wake)")
	fs.DurationVar(&cfg.wakeGrace, "wake-grace", time.Second, "a wake arriving within this long after its device connected raced the connect and is not counted as a wake to an online device")
	fs.Float64Var(&cfg.churn, "churn", 5, "percent of online sessions that drop and reconnect per minute")
	fs.Float64Var(&cfg.resumeShare, "resume-share", 0.5, "share of churned sessions that resume with stream management (the others bind afresh)")
	fs.DurationVar(&cfg.killEvery, "kill-every", 0, "kill -9 the gateway this harness started about this often, and restart it (0: never)")
	fs.IntVar(&cfg.killMax, "kill-max", 0, "at most this many kills (0: no limit)")
	fs.DurationVar(&cfg.duration, "d", 5*time.Minute, "traffic duration")
	fs.DurationVar(&cfg.drain, "drain", 60*time.Second, "longest wait after traffic stops for the last deliveries (ends sooner once all are in or nothing moves for 10 s)")
	fs.DurationVar(&cfg.deadline, "deadline", 0, "hard limit of the whole run; 0 derives it from the phases")
	fs.IntVar(&cfg.postConns, "post-conns", 64, "concurrent REST connections of the message generator")
	fs.IntVar(&cfg.checkMax, "check-max", 50000, "at most this many REST status checks of messages not seen (more count as unverified)")
	fs.DurationVar(&cfg.window, "window", time.Minute, "the report also gives the figures of each window this long of the traffic, from its start (0: none)")
	fs.DurationVar(&cfg.sloP99, "slo-p99", 0, "fail the run if the online end-to-end p99 exceeds this (0: report only); with -rate-steps it picks the highest step that meets it instead")
	fs.Func("rate-steps", "offer these rates in turn (messages per second, comma-separated, e.g. 1000,2000,3000), each for -d divided by their number, instead of -rate; the report gives each step's figures", func(s string) error {
		cfg.rateSteps = nil
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("%q is not a positive rate", f)
			}
			cfg.rateSteps = append(cfg.rateSteps, v)
		}
		return nil
	})
	fs.DurationVar(&cfg.progress, "progress", 5*time.Second, "progress line interval")
	fs.Func("seed", "random seed (default: random, printed)", func(s string) error {
		_, err := fmt.Sscan(s, &cfg.seed)
		cfg.seedSet = true
		return err
	})
	fs.IntVar(&cfg.workers, "workers", 0, "worker processes for the sessions (0: only as many as the file limit needs, none if the harness can hold them all)")
	fs.IntVar(&cfg.perWorker, "per-worker", 0, "most sessions per worker process (0: from the file limit)")
	fs.StringVar(&cfg.app, "app", "", "app id to create (default soak-<random>)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary data dir, and the app on a remote gateway")
	fs.BoolVar(&cfg.webhook, "webhook", false, "point the app's webhook at a receiver the harness runs (signatures checked) and check that every inbound message the gateway confirmed to its device reached it, once; adds the webhook's load to the gateway and the harness")
	fs.StringVar(&cfg.out, "out", "loadtest/out", "directory for report.json, report.html and report.txt (empty: none)")
	fs.StringVar(&cfg.gatewayBin, "gateway-bin", "", "gateway binary to run (default: go build tether/cmd/gateway into a temp dir)")
	fs.StringVar(&cfg.gatewayLogLevel, "gateway-log-level", "warn", "log level of the gateway this harness starts (its log is gateway.log in -out)")
	fs.StringVar(&cfg.addr, "addr", "", "remote gateway: XMPP direct TLS host:port (loopback only); needs -url and -admin-token")
	fs.StringVar(&cfg.startTLSAddr, "starttls-addr", "", "remote gateway: XMPP STARTTLS host:port (default: no STARTTLS sessions)")
	fs.StringVar(&cfg.baseURL, "url", "", "remote gateway: REST base URL, http://127.0.0.1:8080 (also serves WebSocket)")
	fs.StringVar(&cfg.metricsURL, "metrics-url", "", "remote gateway: its /metrics URL, for RSS and CPU")
	fs.StringVar(&cfg.adminToken, "admin-token", "", "remote gateway: admin token")
	fs.StringVar(&cfg.caFile, "ca-file", "", "remote gateway: PEM to verify its TLS certificate (default: not verified, loopback only)")
	fs.IntVar(&cfg.repeat, "repeat", 1, "run the soak this many times (each with a fresh gateway and, without -seed, a new seed; reports in -out/run-N); the exit status is the worst")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the harness's CPU profile of the traffic phase to this file; each worker process writes its own to this file's name plus .worker-N")
	fs.BoolVar(&cfg.worker, "worker", false, "internal: run as a worker process (JSON lines on stdin/stdout)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./loadtest [flags]\n\nThe soak harness (loadtest/README.md). Flags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "worker" {
				return
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(fs.Output(), "  -%s\n    \t%s%s\n", f.Name, f.Usage, def)
		})
	}
	return fs
}

// parseFlags parses and validates the command line.
func parseFlags(args []string, out io.Writer) (*config, error) {
	cfg := &config{}
	fs := newFlagSet(cfg, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.flagValues = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { cfg.flagValues[f.Name] = f.Value.String() })
	if cfg.worker {
		return cfg, nil
	}
	return cfg, cfg.validate()
}

// validate checks the flags and derives the remote/local mode; every
// problem is reported at once.
func (c *config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.sessions < 1 || c.sessions > 1_000_000 {
		bad("-sessions must be from 1 to 1000000")
	}
	if c.users < 1 || c.users > c.sessions {
		bad("-users must be from 1 to -sessions")
	} else if (c.sessions+c.users-1)/c.users > maxDevicesPerUser {
		bad("-users: at most %d devices per user (raise -users to at least %d)", maxDevicesPerUser, (c.sessions+maxDevicesPerUser-1)/maxDevicesPerUser)
	}
	for _, s := range []struct {
		name string
		v    float64
	}{{"tls", c.tlsShare}, {"starttls", c.startTLS}, {"ws", c.wsShare}, {"fanout-share", c.fanoutShare},
		{"user-share", c.userShare}, {"read-share", c.readShare}, {"expire-share", c.expireShare},
		{"offline", c.offline}, {"resume-share", c.resumeShare}} {
		if s.v < 0 || s.v > 1 {
			bad("-%s must be a share from 0 to 1", s.name)
		}
	}
	if sum := c.tlsShare + c.startTLS + c.wsShare; sum <= 0 {
		bad("-tls, -starttls and -ws must not all be 0")
	}
	if len(c.rateSteps) > 0 {
		c.rate = c.rateSteps[0]
		if len(c.rateSteps) > 20 {
			bad("-rate-steps: at most 20 steps")
		} else if c.duration/time.Duration(len(c.rateSteps)) < 10*time.Second {
			bad("-rate-steps: each step needs at least 10 s of -d (%v for %d steps)", c.duration, len(c.rateSteps))
		}
	}
	if c.loginRate <= 0 || c.rate < 0 || c.inboundRate < 0 {
		bad("-login-rate must be positive, -rate and -inbound-rate not negative")
	}
	if c.fanout < 1 || c.fanout > 10000 {
		bad("-fanout must be from 1 to 10000")
	} else if c.fanoutShare > 0 && c.fanout > c.users {
		bad("-fanout must not exceed -users (a POST names each user once)")
	}
	if c.expireIn < 1 {
		bad("-expire-in must be at least 1 second")
	}
	if c.wakeDelayMin < 0 || c.wakeDelayMax < c.wakeDelayMin {
		bad("-wake-delay-min must be >= 0 and <= -wake-delay-max")
	}
	if c.wakeQuiet < 100*time.Millisecond || c.wakeQuiet > time.Minute {
		bad("-wake-quiet must be from 100ms to 1m")
	}
	if c.wakeInterval < 1 || c.wakeInterval > 1800 {
		bad("-wake-interval must be from 1 to 1800 seconds")
	}
	if c.churn < 0 || c.churn > 6000 {
		bad("-churn must be from 0 to 6000 percent per minute")
	}
	if c.killEvery < 0 || (c.killEvery > 0 && c.killEvery < 2*time.Second) {
		bad("-kill-every must be 0 or at least 2s")
	}
	if c.duration <= 0 || c.duration > 24*time.Hour {
		bad("-d must be positive and at most 24h")
	}
	if c.drain < time.Second {
		bad("-drain must be at least 1s")
	}
	if c.postConns < 1 || c.postConns > 4096 {
		bad("-post-conns must be from 1 to 4096")
	}
	if c.progress < 500*time.Millisecond {
		bad("-progress must be at least 500ms")
	}
	if c.repeat < 1 || c.repeat > 1000 {
		bad("-repeat must be from 1 to 1000")
	}
	if c.repeat > 1 && c.remote && c.app != "" {
		bad("-repeat against a remote gateway needs a fresh app each time: leave -app empty")
	}
	if c.workers < 0 || c.perWorker < 0 {
		bad("-workers and -per-worker must not be negative")
	}
	if c.app != "" && !appIDOK(c.app) {
		bad("-app must match ^[a-z0-9][a-z0-9-]{0,62}$")
	}
	c.remote = c.addr != "" || c.baseURL != ""
	if c.remote {
		if c.addr == "" || c.baseURL == "" || c.adminToken == "" {
			bad("a remote gateway needs -addr, -url and -admin-token")
		}
		if c.killEvery > 0 {
			bad("-kill-every only applies to a gateway this harness starts")
		}
		if c.gatewayBin != "" {
			bad("-gateway-bin and -addr/-url are exclusive")
		}
		for _, a := range []struct{ name, v string }{{"addr", c.addr}, {"starttls-addr", c.startTLSAddr}} {
			if a.v == "" {
				continue
			}
			host, _, err := net.SplitHostPort(a.v)
			if err != nil {
				bad("-%s: %v", a.name, err)
			} else if err := checkLoopback(host); err != nil {
				bad("-%s: %v", a.name, err)
			}
		}
		for _, u := range []struct{ name, v string }{{"url", c.baseURL}, {"metrics-url", c.metricsURL}} {
			if u.v == "" {
				continue
			}
			pu, err := url.Parse(u.v)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				bad("-%s: want an http:// or https:// URL", u.name)
				continue
			}
			if err := checkLoopback(pu.Hostname()); err != nil {
				bad("-%s: %v", u.name, err)
			}
		}
		c.baseURL = strings.TrimRight(c.baseURL, "/")
		if c.caFile == "" {
			c.insecure = true
		}
	} else if c.startTLSAddr != "" || c.metricsURL != "" || c.adminToken != "" || c.caFile != "" {
		bad("-starttls-addr, -metrics-url, -admin-token and -ca-file apply to a remote gateway (-addr, -url)")
	}
	switch c.push {
	case "":
		c.push = "apns,fcm"
		if c.remote {
			c.push = "fcm"
		}
	case "apns,fcm", "fcm,apns":
		c.push = "apns,fcm"
	case "apns", "fcm":
	default:
		bad(`-push must be "apns,fcm", "apns" or "fcm"`)
	}
	if c.remote && c.startTLSAddr == "" && c.startTLS > 0 {
		c.tlsShare += c.startTLS // no STARTTLS listener given: those devices use direct TLS
		c.startTLS = 0
	}
	if c.deadline == 0 {
		c.deadlineAuto = true
		ramp := time.Duration(float64(c.sessions)/c.loginRate*float64(time.Second)) * 3
		// The sweep's time grows with the offline devices' backlogs, that
		// is with the run's length: a tenth of it after 20 minutes.
		sweep := c.duration / 4
		c.deadline = 5*time.Minute + ramp + c.duration + sweep + c.drain*2 + time.Duration(c.sessions)*time.Millisecond
	}
	return errors.Join(errs...)
}

// maxDevicesPerUser bounds devices per user: a message's targets are kept
// as a 64-bit mask (collector.go).
const maxDevicesPerUser = 64

func appIDOK(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' && i > 0)
		if !ok {
			return false
		}
	}
	return true
}

// checkLoopback refuses a host that is not a loopback address: the harness
// opens thousands of connections and posts thousands of messages a second,
// which it must never aim at another machine. "localhost" and names that
// resolve only to loopback addresses pass.
func checkLoopback(host string) error {
	if host == "" {
		return errors.New("empty host (a listener on every interface is not a loopback target; name 127.0.0.1)")
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address: the harness targets loopback only", host)
		}
		return nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return fmt.Errorf("%s resolves to no address", host)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s resolves to %s, not a loopback address: the harness targets loopback only", host, ip)
		}
	}
	return nil
}
