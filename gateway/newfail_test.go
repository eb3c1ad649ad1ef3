package gateway_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tether/gateway"
	"tether/internal/gatewaytest"
)

// TestNewFailsCleanly: a store another gateway holds open makes New fail
// with an error (and release what it opened), not panic.
func TestNewFailsCleanly(t *testing.T) {
	g := gatewaytest.Start(t)
	_, err := gateway.New(gateway.Config{DataDir: g.DataDir, HTTPAddr: "127.0.0.1:0"})
	require.Error(t, err)
}
