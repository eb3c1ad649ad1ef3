package storage

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// FsyncCollector exports the latency of the store's WAL fsyncs as the
// histogram tether_store_wal_fsync_seconds: the disk's share of a synced
// commit (tether_store_commit_seconds also holds the wait for a CPU and
// for the commits ahead). Nil when the store keeps no such histogram.
func (db *DB) FsyncCollector() prometheus.Collector {
	h := db.pdb.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return nil
	}
	return &fsyncCollector{h: h, desc: prometheus.NewDesc("tether_store_wal_fsync_seconds",
		"Latency of the store's WAL fsyncs (the disk alone; one serves every synced commit waiting).", nil, nil)}
}

type fsyncCollector struct {
	h    prometheus.Histogram // Pebble's, in nanoseconds
	desc *prometheus.Desc
}

func (c *fsyncCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *fsyncCollector) Collect(ch chan<- prometheus.Metric) {
	var m dto.Metric
	if c.h.Write(&m) != nil || m.Histogram == nil {
		return
	}
	ch <- prometheus.MustNewConstHistogram(c.desc, m.Histogram.GetSampleCount(),
		m.Histogram.GetSampleSum()/1e9, regroup(m.Histogram.GetBucket()))
}

// regroup keeps some of Pebble's buckets (bounds in nanoseconds, 100 of
// them: every 0.1 ms to 4.9 ms, then 50 growing by 17 % each to 10 s) and
// gives their bounds in seconds: 0.1, 0.2, 0.5, 1, 2, 3 and 4 ms, then
// every fourth from 5 ms on (5, 9.3, 17, 32, 60, 111 ms ...). The counts
// are Pebble's own at those bounds, not interpolated.
func regroup(src []*dto.Bucket) map[float64]uint64 {
	out := make(map[float64]uint64, 24)
	exp := 0 // index among the bounds from 5 ms on
	for _, b := range src {
		ns := b.GetUpperBound()
		if math.IsInf(ns, 1) {
			break
		}
		keep := false
		if ns < 5e6 {
			switch int64(math.Round(ns / 1e5)) {
			case 1, 2, 5, 10, 20, 30, 40:
				keep = true
			}
		} else {
			keep = exp%4 == 0
			exp++
		}
		if keep {
			out[ns/1e9] = b.GetCumulativeCount()
		}
	}
	return out
}
