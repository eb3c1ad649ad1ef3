package gateway

import (
	"fmt"
	"slices"
	"testing"
)

// wanted keeps each named device once, in order, below and past the
// size where it starts keeping a set.
func TestWantedDevices(t *testing.T) {
	for _, n := range []int{1, wantedMapAt - 1, wantedMapAt, 3 * wantedMapAt} {
		var u wanted
		var want []string
		for i := range n {
			d := fmt.Sprintf("d%d", i)
			u.add(d)
			u.add(d) // named twice in one POST
			want = append(want, d)
			if i > 0 {
				u.add("d0")
			}
		}
		if !slices.Equal(u.order, want) {
			t.Fatalf("%d devices: order %v", n, u.order)
		}
		for _, d := range want {
			if !u.has(d) {
				t.Fatalf("%d devices: %s missing", n, d)
			}
		}
		if u.has("other") {
			t.Fatalf("%d devices: has a device never named", n)
		}
		if (u.devices != nil) != (n >= wantedMapAt) {
			t.Fatalf("%d devices: set kept %v", n, u.devices != nil)
		}
	}
}
