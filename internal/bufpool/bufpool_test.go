package bufpool_test

import (
	"testing"

	"tether/internal/bufpool"
)

// A buffer comes empty with the starting capacity, however it was left;
// one grown past the bound is not handed out again.
func TestPool(t *testing.T) {
	p := bufpool.New(64, 128)
	b := p.Get()
	if len(*b) != 0 || cap(*b) < 64 {
		t.Fatalf("new buffer: len %d cap %d", len(*b), cap(*b))
	}
	*b = append(*b, "left over"...)
	p.Put(b)
	for range 10 {
		c := p.Get()
		if len(*c) != 0 || cap(*c) < 64 {
			t.Fatalf("reused buffer: len %d cap %d", len(*c), cap(*c))
		}
		*c = append(*c, make([]byte, 1000)...) // grown past 128
		p.Put(c)
		if d := p.Get(); cap(*d) > 128 {
			t.Fatalf("a buffer grown to %d came back from a pool bounded at 128", cap(*d))
		}
	}
}
