package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistIndexMonotonicAndBounded(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<22; v += 1 + v/97 {
		i := histIndex(v)
		if i < prev {
			t.Fatalf("histIndex(%d) = %d < %d: not monotonic", v, i, prev)
		}
		if up := histUpper(i); up < v {
			t.Fatalf("histUpper(histIndex(%d)) = %d < value", v, up)
		}
		if i > 0 {
			if lo := histUpper(i-1) + 1; lo > v {
				t.Fatalf("value %d below its bucket's lower bound %d", v, lo)
			}
		}
		prev = i
	}
	if i := histIndex(1 << 50); i != histBuckets-1 {
		t.Fatalf("huge value: bucket %d, want the last", i)
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram: want 0")
	}
	r := rand.New(rand.NewPCG(1, 2))
	var vals []int64
	for range 100000 {
		v := int64(r.ExpFloat64() * 3000) // µs, mean 3 ms
		vals = append(vals, v)
		h.add(time.Duration(v) * time.Microsecond)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := vals[min(int(q*float64(len(vals))), len(vals)-1)]
		got := h.quantile(q).Microseconds()
		if got < want-1 || float64(got) > float64(want)*1.02+2 {
			t.Errorf("q%.3f = %d µs, want about %d", q, got, want)
		}
	}
	var m hist
	m.merge(&h)
	m.merge(&h)
	if m.n != 2*h.n || m.quantile(0.99) != h.quantile(0.99) {
		t.Errorf("merge: n %d, p99 %v vs %v", m.n, m.quantile(0.99), h.quantile(0.99))
	}
}
