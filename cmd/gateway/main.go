// Command gateway runs a Tether node: see SPEC section 2 for its flags,
// which a YAML file (--config) and TETHER_* variables can also set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"tether/gateway"
)

func main() {
	o, err := parseFlags(os.Args[1:], os.LookupEnv)
	switch {
	case o != nil && o.printConfig:
		o.print(os.Stdout)
		exitOn(err)
		return
	case o != nil && o.checkConfig:
		exitOn(err)
		fmt.Println("configuration OK")
		return
	}
	exitOn(err)
	logger, err := o.logger()
	exitOn(err)
	defer logger.Sync()
	o.cfg.Logger, o.cfg.Banner = logger, os.Stderr
	g, err := gateway.New(o.cfg)
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

func exitOn(err error) {
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0) // the usage is printed; asking for it is not an error
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	}
}
