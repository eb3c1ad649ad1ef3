package storage_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"tether/storage"
)

// gather returns the collector's samples by name (and kind label).
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[name] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// The store's collector shows what an operator watches: data written to
// the WAL, memtables flushed to L0, compactions emptying L0, and the space
// taken on disk, each moving as the store works.
func TestStoreCollector(t *testing.T) {
	db := openStore(t, false, storage.Options{}) // 1 MiB memtables
	c := db.Collector()
	before := gather(t, c)
	for _, name := range []string{"fsyncs_total", "written_bytes_total/wal", "written_bytes_total/flush", "written_bytes_total/compaction",
		"disk_bytes", "flushes_total", "compactions_total", "compaction_debt_bytes", "l0_sublevels", "l0_tables", "memtable_bytes",
		"write_stalls_total", "write_stall_seconds_total", "bad_single_deletes_total"} {
		require.Contains(t, before, "tether_store_"+name)
	}
	require.Zero(t, before["tether_store_flushes_total"])
	require.Zero(t, before["tether_store_write_stalls_total"])
	require.Zero(t, before["tether_store_bad_single_deletes_total"])

	// 4 MiB of messages in 1 MiB memtables, written twice: several
	// flushes into overlapping L0 tables, which a compaction must merge.
	v := make([]byte, 4<<10)
	for i := range 2048 {
		v[0], v[1] = byte(i), byte(i>>8)
		b := db.NewBatch()
		b.PutMessage("acme", "alice", uint64(i%1024+1), v)
		require.NoError(t, b.Commit(i%64 == 0))
	}
	require.Eventually(t, func() bool { return gather(t, c)["tether_store_flushes_total"] >= 2 }, 10e9, 10e6, "memtables flushed")
	require.NoError(t, db.CompactAll())
	after := gather(t, c)
	require.Greater(t, after["tether_store_fsyncs_total"], before["tether_store_fsyncs_total"])
	require.GreaterOrEqual(t, after["tether_store_written_bytes_total/wal"], float64(8<<20), "every message went through the WAL")
	require.Greater(t, after["tether_store_written_bytes_total/flush"], 0.0)
	require.Greater(t, after["tether_store_written_bytes_total/compaction"], 0.0)
	require.GreaterOrEqual(t, after["tether_store_compactions_total"], 1.0)
	require.Zero(t, after["tether_store_l0_tables"], "a full compaction empties L0")
	require.Zero(t, after["tether_store_l0_sublevels"])
	require.Greater(t, after["tether_store_disk_bytes"], float64(1<<20), "the messages take space on disk")
	// The files a compaction made obsolete are deleted in the background,
	// so the gauge and Stats agree once that is done.
	require.Eventually(t, func() bool { return uint64(gather(t, c)["tether_store_disk_bytes"]) == db.Stats().DiskBytes }, 10e9, 10e6,
		"the gauge is the store's disk usage")
}
