package sdkproto_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/sdkproto"
)

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for _, b := range []sdkproto.Backoff{
		{},
		{Min: 10 * time.Millisecond, Max: time.Second},
		{Min: time.Second, Max: time.Second},
		{Min: 2 * time.Second, Max: time.Second}, // inverted: the floor wins
	} {
		lo, hi := b.Min, b.Max
		if lo == 0 {
			lo, hi = sdkproto.DefaultReconnectMin, sdkproto.DefaultReconnectMax
		}
		for attempt := range 100 {
			ceil := lo
			for i := 0; i <= attempt && ceil < hi; i++ {
				ceil *= 2
			}
			ceil = min(ceil, hi)
			for range 50 {
				d := b.Delay(attempt)
				require.GreaterOrEqual(t, d, lo, "attempt %d of %+v", attempt, b)
				if hi > lo {
					require.Less(t, d, ceil, "attempt %d of %+v", attempt, b)
				} else {
					require.Equal(t, lo, d)
				}
			}
		}
	}
}

func TestBackoffJitterSpreads(t *testing.T) {
	t.Parallel()
	var b sdkproto.Backoff
	// At the cap, 1,000 clients should not come back in a few waves: the
	// delays spread over most of [Min, Max).
	var lo, hi time.Duration = time.Hour, 0
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := b.Delay(20)
		lo, hi = min(lo, d), max(hi, d)
		seen[d/time.Second] = true
	}
	require.Less(t, lo, 3*time.Second)
	require.Greater(t, hi, 27*time.Second)
	require.GreaterOrEqual(t, len(seen), 25, "delays fall into most one-second buckets")
	// The ceiling grows: the first attempt stays under 2·Min.
	for range 100 {
		require.Less(t, b.Delay(0), 2*sdkproto.DefaultReconnectMin)
	}
}
