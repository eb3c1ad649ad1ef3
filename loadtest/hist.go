package main

import (
	"math"
	"math/bits"
	"time"
)

// hist is a log-linear histogram of durations in microseconds, as HDR
// histograms keep them: values under 128 µs are exact, larger ones fall
// into 64 buckets per power of two (relative error under 1.6%), up to
// 2^40 µs. It is a value without pointers; the zero value is empty. Not
// safe for concurrent use.
type hist struct {
	counts [histBuckets]uint32
	n      uint64
	max    int64 // µs
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits // buckets per power of two
	histBuckets = histSub * 37     // up to 2^40 µs
)

// histIndex returns the bucket of v µs.
func histIndex(v int64) int {
	if v < 2*histSub {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - (histSubBits + 1)
	i := (shift+1)*histSub + int(v>>shift) - histSub
	return min(i, histBuckets-1)
}

// histUpper returns the largest value that falls into bucket i.
func histUpper(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	m := int64(i%histSub + histSub)
	return (m+1)<<shift - 1
}

// add records d (negative counts as 0).
func (h *hist) add(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.counts[histIndex(us)]++
	h.n++
	h.max = max(h.max, us)
}

// merge adds o's counts to h.
func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding it, never above the largest value seen. 0 when empty.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += uint64(c)
		if cum >= rank {
			return time.Duration(min(histUpper(i), h.max)) * time.Microsecond
		}
	}
	return time.Duration(h.max) * time.Microsecond
}

// quantiles is h's count, p50, p99, p99.9 and max for reports.
func (h *hist) quantiles() quantiles {
	return quantiles{Count: h.n, P50: ms(h.quantile(0.5)), P99: ms(h.quantile(0.99)), P999: ms(h.quantile(0.999)), Max: ms(h.quantile(1))}
}

// ms converts a duration to float milliseconds for reports.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
