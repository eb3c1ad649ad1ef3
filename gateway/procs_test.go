package gateway

import "testing"

// TestProcsFor: the spare P is added only where nothing else chose the
// number: not over an explicit --procs, not over GOMAXPROCS in the
// environment, not under a CPU quota; and always to the runtime's
// choice at start, so that a second gateway in the process does not add
// another.
func TestProcsFor(t *testing.T) {
	for _, tc := range []struct {
		name               string
		want               int
		env                bool
		start, cpus, procs int
	}{
		{"default: a spare P", 0, false, 2, 2, 3},
		{"default on one CPU", 0, false, 1, 1, 2},
		{"explicit", 5, false, 2, 2, 5},
		{"explicit over GOMAXPROCS", 5, true, 2, 2, 5},
		{"GOMAXPROCS set", 0, true, 4, 8, 0},
		{"a CPU quota chose it", 0, false, 2, 8, 0},
		{"left alone", -1, false, 2, 2, 0},
	} {
		if got := procsFor(tc.want, tc.env, tc.start, tc.cpus); got != tc.procs {
			t.Errorf("%s: procsFor(%d, %v, %d, %d) = %d, want %d", tc.name, tc.want, tc.env, tc.start, tc.cpus, got, tc.procs)
		}
	}
}
