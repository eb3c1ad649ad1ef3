package sdkproto

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDedupeWindow(t *testing.T) {
	t.Parallel()
	const window = 4
	d := newDedupe(window)
	for i := range window {
		require.False(t, d.seen(strconv.Itoa(i), window), "first sight of %d", i)
	}
	for i := range window {
		require.True(t, d.seen(strconv.Itoa(i), window), "repeat of %d within the window", i)
	}
	// A fifth id evicts the oldest ("0") only.
	require.False(t, d.seen("4", window))
	require.False(t, d.seen("0", window), "0 fell out of the window")
	require.True(t, d.seen("4", window))
	require.True(t, d.seen("3", window))
	require.Len(t, d.set, window)
	require.Len(t, d.ring, window)
}

func TestDedupeBoundedUnderChurn(t *testing.T) {
	t.Parallel()
	d := newDedupe(DefaultDedupeWindow)
	for i := range 5 * DefaultDedupeWindow {
		require.False(t, d.seen("m"+strconv.Itoa(i), DefaultDedupeWindow))
	}
	require.Len(t, d.set, DefaultDedupeWindow)
	// The most recent window is remembered, older ids are not.
	require.True(t, d.seen("m"+strconv.Itoa(5*DefaultDedupeWindow-1), DefaultDedupeWindow))
	require.True(t, d.seen("m"+strconv.Itoa(4*DefaultDedupeWindow), DefaultDedupeWindow))
	require.False(t, d.seen("m"+strconv.Itoa(4*DefaultDedupeWindow-1), DefaultDedupeWindow))
}
