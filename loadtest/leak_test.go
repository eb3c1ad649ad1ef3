package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// The leak check does not count the goroutines of the gateway's bounded
// pools (testdata/goroutines.txt is a dump taken after a soak with kills).
func TestPooledGoroutines(t *testing.T) {
	dump, err := os.ReadFile("testdata/goroutines.txt")
	require.NoError(t, err)
	// 64 wake workers + 64 session workers + 56 + 56 outbound connection
	// loops; not Pebble's cleanup loop, not main.
	require.Equal(t, 64+64+56+56, pooledGoroutines(dump))
	require.Zero(t, pooledGoroutines([]byte("3 @ 0x1 0x2\n#\t0x1\ttether/session.(*Session).loop+0x1\tsession/session.go:1\n")))
}
