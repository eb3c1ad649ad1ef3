package storage_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tether/storage"
)

// The exported histogram counts every WAL fsync of an on-disk store, in
// seconds, with cumulative counts that never fall.
func TestFsyncCollector(t *testing.T) {
	db := openStore(t, false, storage.Options{})
	for i := range 20 {
		b := db.NewBatch()
		b.PutApp("acme", []byte{byte(i)})
		require.NoError(t, b.Commit(true))
	}
	c := db.FsyncCollector()
	require.NotNil(t, c)
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.Len(t, mfs, 1)
	require.Equal(t, "tether_store_wal_fsync_seconds", mfs[0].GetName())
	h := mfs[0].GetMetric()[0].GetHistogram()
	fsyncs := db.Stats().Fsyncs
	// Each of the sequential synced commits waits for an fsync; one may
	// share it with the WAL's own (19 of 20 seen once).
	require.GreaterOrEqual(t, fsyncs, uint64(15), "about one fsync per sequential synced commit")
	require.Equal(t, fsyncs, h.GetSampleCount())
	require.Greater(t, h.GetSampleSum(), 0.0)
	require.Less(t, h.GetSampleSum(), float64(fsyncs)*10, "seconds, not nanoseconds")
	var prev uint64
	var bounds []float64
	for _, b := range h.GetBucket() {
		require.GreaterOrEqual(t, b.GetCumulativeCount(), prev)
		prev = b.GetCumulativeCount()
		bounds = append(bounds, b.GetUpperBound())
	}
	require.LessOrEqual(t, prev, fsyncs)
	require.Equal(t, []float64{.0001, .0002, .0005, .001, .002, .003, .004, .005}, bounds[:8])
	require.InDelta(t, 10.0, bounds[len(bounds)-1], 3, "up to Pebble's last bound, 10 s")
}
