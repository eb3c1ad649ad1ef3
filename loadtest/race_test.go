//go:build race

package main

// raceEnabled reports whether the tests run with the race detector; the
// soak test then builds the harness with it too.
const raceEnabled = true
