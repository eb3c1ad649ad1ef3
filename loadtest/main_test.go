package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as a worker process: startProc
// re-executes os.Executable() with -worker, which is this binary in tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-worker" {
		os.Exit(workerMain(os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
