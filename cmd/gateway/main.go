// Command gateway runs a Tether node: see SPEC section 2 for its flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tether/gateway"
)

func main() {
	cfg, logger, err := parseFlags(os.Args[1:], os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	}
	defer logger.Sync()
	cfg.Banner = os.Stderr
	g, err := gateway.New(cfg)
	if err != nil {
		logger.Fatal(err.Error())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go reloadOnHUP(ctx, g, logger)
	if err := g.Run(ctx); err != nil {
		logger.Fatal(err.Error())
	}
}
