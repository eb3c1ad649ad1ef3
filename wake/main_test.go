package wake_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines. The fakes close their clients'
// idle HTTP/2 connections and their servers in t.Cleanup, so no
// connection goroutine needs to be ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
