package gateway_test

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"tether/gateway"
)

// childEnv, when set, makes the test binary run a gateway on the data dir it
// names instead of the tests: the crash test starts it as a child process
// and kills it with SIGKILL.
const childEnv = "TETHER_TEST_CHILD_DATA_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	if os.Getenv(clientsEnv) != "" {
		os.Exit(runClients())
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	logger, _ := zap.NewProduction()
	g, err := gateway.New(gateway.Config{
		DataDir:    dir,
		HTTPAddr:   "127.0.0.1:0",
		XMPPSAddr:  "127.0.0.1:0",
		AdminToken: "crash-test-admin-token",
		TLSCert:    os.Getenv("TETHER_TEST_CHILD_TLS_CERT"),
		TLSKey:     os.Getenv("TETHER_TEST_CHILD_TLS_KEY"),
		// The loopback APNs fake's certificate, for crash tests of wakes.
		ProviderCAFile: os.Getenv("TETHER_TEST_CHILD_PROVIDER_CA"),
		Logger:         logger,
	})
	if err != nil {
		logger.Error("child start", zap.Error(err))
		return 1
	}
	// Publish the address only once listening, atomically.
	addrFile := filepath.Join(dir, "addr")
	if err := os.WriteFile(addrFile+".tmp", []byte(g.Addr("http")+"\n"+g.Addr("xmpps")), 0o600); err != nil {
		return 1
	}
	if err := os.Rename(addrFile+".tmp", addrFile); err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // as cmd/gateway does
	go func() {
		for range hup {
			if err := g.ReloadTLS(); err != nil {
				logger.Error("reload", zap.Error(err))
			}
		}
	}()
	if err := g.Run(ctx); err != nil {
		logger.Error("child run", zap.Error(err))
		return 1
	}
	return 0
}
