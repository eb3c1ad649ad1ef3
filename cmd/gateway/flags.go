package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"tether/gateway"
)

// parseFlags builds the configuration: each flag's default comes from its
// environment variable when set (an empty value disables a listener),
// else from SPEC section 2.
func parseFlags(args []string, getenv func(string) (string, bool)) (gateway.Config, *zap.Logger, error) {
	var cfg gateway.Config
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	str := func(p *string, name, env, def, usage string) {
		if v, ok := lookup(getenv, env); ok {
			def = v
		}
		fs.StringVar(p, name, def, usage+" (env "+env+")")
	}
	str(&cfg.DataDir, "data-dir", "TETHER_DATA_DIR", gateway.DefaultDataDir, "Pebble store, generated TLS cert, admin token file")
	str(&cfg.Domain, "domain", "TETHER_DOMAIN", gateway.DefaultDomain, "base XMPP domain; apps are <app>.<domain>")
	str(&cfg.HTTPAddr, "http-addr", "TETHER_HTTP_ADDR", gateway.DefaultHTTPAddr, "REST API, WebSocket and device pull over plain HTTP (empty disables)")
	str(&cfg.HTTPSAddr, "https-addr", "TETHER_HTTPS_ADDR", gateway.DefaultHTTPSAddr, "the same over TLS (empty disables)")
	str(&cfg.XMPPAddr, "xmpp-addr", "TETHER_XMPP_ADDR", gateway.DefaultXMPPAddr, "XMPP c2s, STARTTLS required (empty disables)")
	str(&cfg.XMPPSAddr, "xmpps-addr", "TETHER_XMPPS_ADDR", gateway.DefaultXMPPSAddr, "XMPP c2s, direct TLS (empty disables)")
	str(&cfg.MetricsAddr, "metrics-addr", "TETHER_METRICS_ADDR", gateway.DefaultMetricsAddr, "/metrics and /debug/pprof (empty disables)")
	str(&cfg.TLSCert, "tls-cert", "TETHER_TLS_CERT", "", "PEM certificate (default: generated, self-signed)")
	str(&cfg.TLSKey, "tls-key", "TETHER_TLS_KEY", "", "PEM private key")
	str(&cfg.AdminToken, "admin-token", "TETHER_ADMIN_TOKEN", "", "admin bearer token (default: generated into <data-dir>/admin-token)")
	dev := false
	if v, ok := lookup(getenv, "TETHER_DEV"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, nil, fmt.Errorf("TETHER_DEV=%q: %v", v, err)
		}
		dev = b
	}
	fs.BoolVar(&cfg.Dev, "dev", dev, "ensure an app demo exists and print its API key (env TETHER_DEV)")
	var level string
	str(&level, "log-level", "TETHER_LOG_LEVEL", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, nil, err
	}
	if fs.NArg() > 0 {
		return cfg, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return cfg, nil, err
	}
	zc := zap.NewProductionConfig()
	if cfg.Dev {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	logger, err := zc.Build()
	if err != nil {
		return cfg, nil, err
	}
	cfg.Logger = logger
	return cfg, logger, nil
}

func lookup(lookupEnv func(string) (string, bool), name string) (string, bool) {
	return lookupEnv(name)
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
