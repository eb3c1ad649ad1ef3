package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"tether/gateway"
)

// setting is one configuration key: a flag, its environment variable and
// its key in the config file, all with the same name.
type setting struct {
	name, env, def, usage string
	secret                bool
	bool                  bool
	dst                   *string
}

// options is the parsed command line.
type options struct {
	cfg         gateway.Config
	logLevel    string
	numbers     struct{ rate, perUser, total, gc, procs string }
	configFile  string
	printConfig bool
	checkConfig bool
	settings    []setting
	source      map[string]string // where each setting's value came from
}

func (o *options) list() []setting {
	c := &o.cfg
	return []setting{
		{name: "data-dir", env: "TETHER_DATA_DIR", def: gateway.DefaultDataDir, usage: "Pebble store, generated TLS cert, admin token file", dst: &c.DataDir},
		{name: "domain", env: "TETHER_DOMAIN", def: gateway.DefaultDomain, usage: "base XMPP domain; apps are <app>.<domain>", dst: &c.Domain},
		{name: "http-addr", env: "TETHER_HTTP_ADDR", def: gateway.DefaultHTTPAddr, usage: "REST API, WebSocket and device pull over plain HTTP (empty disables)", dst: &c.HTTPAddr},
		{name: "https-addr", env: "TETHER_HTTPS_ADDR", def: gateway.DefaultHTTPSAddr, usage: "the same over TLS (empty disables)", dst: &c.HTTPSAddr},
		{name: "xmpp-addr", env: "TETHER_XMPP_ADDR", def: gateway.DefaultXMPPAddr, usage: "XMPP c2s, STARTTLS required (empty disables)", dst: &c.XMPPAddr},
		{name: "xmpps-addr", env: "TETHER_XMPPS_ADDR", def: gateway.DefaultXMPPSAddr, usage: "XMPP c2s, direct TLS (empty disables)", dst: &c.XMPPSAddr},
		{name: "metrics-addr", env: "TETHER_METRICS_ADDR", def: gateway.DefaultMetricsAddr, usage: "/metrics and /debug/pprof (empty disables)", dst: &c.MetricsAddr},
		{name: "tls-cert", env: "TETHER_TLS_CERT", usage: "PEM certificate (default: generated, self-signed)", dst: &c.TLSCert},
		{name: "tls-key", env: "TETHER_TLS_KEY", usage: "PEM private key", dst: &c.TLSKey},
		{name: "admin-token", env: "TETHER_ADMIN_TOKEN", usage: "admin bearer token (default: generated into <data-dir>/admin-token)", secret: true, dst: &c.AdminToken},
		{name: "provider-ca-file", env: "TETHER_PROVIDER_CA_FILE", usage: "PEM CA certificates trusted, with the system's, for push and SMS provider endpoints (private relays)", dst: &c.ProviderCAFile},
		{name: "app-rate-limit", env: "TETHER_APP_RATE_LIMIT", def: "0", usage: "REST requests per second per app API key, bursts of twice that; 0: no limit", dst: &o.numbers.rate},
		{name: "max-sessions-per-user", env: "TETHER_MAX_SESSIONS_PER_USER", def: "0", usage: "devices of one user online at once; 0: no cap", dst: &o.numbers.perUser},
		{name: "max-sessions", env: "TETHER_MAX_SESSIONS", def: "0", usage: "sessions on this node; 0: no cap", dst: &o.numbers.total},
		{name: "gc-percent", env: "TETHER_GC_PERCENT", def: "0", usage: "garbage collector target, process-wide (as GOGC); 0: 50, or GOGC if set; -1: the runtime's own", dst: &o.numbers.gc},
		{name: "procs", env: "TETHER_PROCS", def: "0", usage: "goroutines running Go code at once, process-wide (as GOMAXPROCS); 0: the CPUs the process may use plus a spare one, or GOMAXPROCS if set, or the runtime's choice under a CPU quota; -1: the runtime's own", dst: &o.numbers.procs},
		{name: "dev", env: "TETHER_DEV", def: "false", usage: "ensure an app demo exists and print its API key", bool: true},
		{name: "log-level", env: "TETHER_LOG_LEVEL", def: "info", usage: "debug, info, warn or error", dst: &o.logLevel},
	}
}

// strFlag is a string flag that records whether it was set.
type strFlag struct {
	p   *string
	set bool
}

func (f *strFlag) String() string {
	if f == nil || f.p == nil { // the flag package's zero value, for the defaults
		return ""
	}
	return *f.p
}
func (f *strFlag) Set(v string) error { *f.p, f.set = v, true; return nil }

// parseFlags builds the configuration. Each setting is, in order of
// precedence: its flag, its environment variable (an empty value disables
// a listener), its key in the --config file, its default (SPEC section 2).
// Every problem is reported at once.
func parseFlags(args []string, getenv func(string) (string, bool)) (*options, error) {
	o := &options{source: map[string]string{}}
	o.settings = o.list()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var devStr string
	flags := map[string]*strFlag{}
	for i := range o.settings {
		s := &o.settings[i]
		if s.bool {
			s.dst = &devStr
		}
		f := &strFlag{p: s.dst}
		flags[s.name] = f
		if s.bool {
			fs.Var(boolFlag{f}, s.name, s.usage+" (env "+s.env+")")
		} else {
			fs.Var(f, s.name, s.usage+" (env "+s.env+")")
		}
	}
	fs.StringVar(&o.configFile, "config", "", "YAML config file with the same keys as the flags (env TETHER_CONFIG)")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective configuration, with defaults, and exit")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate the configuration, report every error, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.configFile == "" {
		o.configFile, _ = getenv("TETHER_CONFIG")
	}
	var errs []error
	file := map[string]any{}
	if o.configFile != "" {
		b, err := os.ReadFile(o.configFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("config file: %w", err))
		} else if err := yaml.Unmarshal(b, &file); err != nil {
			errs = append(errs, fmt.Errorf("config file %s: %w", o.configFile, err))
		}
	}
	known := map[string]bool{}
	for i := range o.settings {
		s := &o.settings[i]
		known[s.name] = true
		switch {
		case flags[s.name].set:
			o.source[s.name] = "flag"
		case envSet(getenv, s.env, s.dst):
			o.source[s.name] = "env " + s.env
		case file[s.name] != nil:
			v, err := scalar(file[s.name])
			if err != nil {
				errs = append(errs, fmt.Errorf("config file: %s: %w", s.name, err))
			}
			*s.dst = v
			o.source[s.name] = "file"
		default:
			*s.dst = s.def
			o.source[s.name] = "default"
		}
	}
	for k := range file {
		if !known[k] {
			errs = append(errs, fmt.Errorf("config file: unknown key %q", k))
		}
	}
	switch strings.ToLower(devStr) {
	case "true", "1", "yes", "on":
		o.cfg.Dev = true
	case "false", "0", "no", "off", "":
	default:
		errs = append(errs, fmt.Errorf("dev: %q is not a boolean", devStr))
	}
	if v, err := strconv.ParseFloat(o.numbers.rate, 64); err != nil || v < 0 {
		errs = append(errs, fmt.Errorf("app-rate-limit: %q is not a non-negative number", o.numbers.rate))
	} else {
		o.cfg.AppRateLimit = v
	}
	for _, n := range []struct {
		name string
		v    string
		dst  *int
		// runtime: a runtime setting, where any negative value means
		// leave the runtime's own
		runtime bool
	}{
		{"max-sessions-per-user", o.numbers.perUser, &o.cfg.MaxSessionsPerUser, false},
		{"max-sessions", o.numbers.total, &o.cfg.MaxSessions, false},
		{"gc-percent", o.numbers.gc, &o.cfg.GCPercent, true},
		{"procs", o.numbers.procs, &o.cfg.Procs, true},
	} {
		v, err := strconv.Atoi(n.v)
		switch {
		case n.runtime && err != nil:
			errs = append(errs, fmt.Errorf("%s: %q is not an integer", n.name, n.v))
			continue
		case n.runtime && v < 0:
			v = -1 // any negative: leave the runtime alone
		case err != nil || v < 0:
			errs = append(errs, fmt.Errorf("%s: %q is not a non-negative integer", n.name, n.v))
			continue
		}
		*n.dst = v
	}
	if _, err := zapcore.ParseLevel(o.logLevel); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %w", err))
	}
	if err := o.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

// envSet applies an environment variable if it is set (even to "").
func envSet(getenv func(string) (string, bool), name string, dst *string) bool {
	v, ok := getenv(name)
	if ok {
		*dst = v
	}
	return ok
}

// scalar turns a YAML value into the flag's string form.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool, int, int64, float64:
		return fmt.Sprint(x), nil
	}
	return "", fmt.Errorf("want a string, number or boolean, not %T", v)
}

type boolFlag struct{ *strFlag }

func (boolFlag) IsBoolFlag() bool { return true }

// logger builds the zap logger: JSON in production, console in --dev.
func (o *options) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(o.logLevel)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	if o.cfg.Dev {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	return zc.Build()
}

// print writes the effective configuration as YAML a config file can
// take, with where each value came from; secrets are not shown.
func (o *options) print(w io.Writer) {
	for _, st := range o.settings {
		v := *st.dst
		shown, _ := yaml.Marshal(v)
		val := strings.TrimSpace(string(shown))
		switch {
		case st.bool:
			val = fmt.Sprint(o.cfg.Dev)
		case st.secret && v != "":
			val = `"<set>"`
		}
		fmt.Fprintf(w, "%s: %s   # %s\n", st.name, val, o.source[st.name])
	}
}

// reloadOnHUP reloads the TLS certificate on SIGHUP.
func reloadOnHUP(ctx context.Context, g *gateway.Gateway, logger *zap.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := g.ReloadTLS(); err != nil {
				logger.Error("TLS reload failed; keeping the old certificate", zap.Error(err))
			} else {
				logger.Info("TLS certificate reloaded")
			}
		}
	}
}
