package storage

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the store's counters (Stats), read once per scrape:
// fsyncs, disk space, bytes written by kind, and the LSM's shape (flushes,
// compactions, compaction debt, L0, memtables, write stalls). A store
// whose compactions fall behind first grows its debt and its L0 sublevels,
// then holds commits (a write stall), which every POST waiting for its 202
// feels.
func (db *DB) Collector() prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tether_store_"+name, help, labels, nil)
	}
	return &statsCollector{db: db,
		fsyncs:   d("fsyncs_total", "WAL fsyncs; concurrent commits share one (group commit)."),
		written:  d("written_bytes_total", "Bytes the store wrote, by kind: wal, flush (memtables to sstables), compaction. (flush + compaction) / wal is the write amplification.", "kind"),
		disk:     d("disk_bytes", "Space the store takes on disk: sstables, WAL, files awaiting deletion."),
		flushes:  d("flushes_total", "Memtable flushes."),
		compacts: d("compactions_total", "Compactions."),
		debt:     d("compaction_debt_bytes", "Bytes compactions would have to write to bring the LSM back in shape; growing for long, the disk or CPU does not keep up."),
		l0sub:    d("l0_sublevels", "L0's read amplification; compacted from 8, commits are held (a write stall) at 24."),
		l0tables: d("l0_tables", "sstables in L0."),
		mem:      d("memtable_bytes", "Memory in memtables, those being flushed included."),
		stalls:   d("write_stalls_total", "Times commits were held until a flush or compaction caught up."),
		stalled:  d("write_stall_seconds_total", "Time commits were held by write stalls, the stall in progress included."),
		badSD:    d("bad_single_deletes_total", "Single deletes that met a key written more than once, which may bring it back: a bug, never expected above 0."),
	}
}

type statsCollector struct {
	db                                                                           *DB
	fsyncs, written, disk, flushes, compacts, debt, l0sub, l0tables, mem, stalls *prometheus.Desc
	stalled, badSD                                                               *prometheus.Desc
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.fsyncs, c.written, c.disk, c.flushes, c.compacts, c.debt, c.l0sub, c.l0tables, c.mem, c.stalls, c.stalled, c.badSD} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.db.Stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.fsyncs, float64(s.Fsyncs))
	counter(c.written, float64(s.WALBytes), "wal")
	counter(c.written, float64(s.FlushedBytes), "flush")
	counter(c.written, float64(s.CompactBytes), "compaction")
	gauge(c.disk, float64(s.DiskBytes))
	counter(c.flushes, float64(s.Flushes))
	counter(c.compacts, float64(s.Compactions))
	gauge(c.debt, float64(s.CompactionDebt))
	gauge(c.l0sub, float64(s.L0Sublevels))
	gauge(c.l0tables, float64(s.L0Tables))
	gauge(c.mem, float64(s.MemTableBytes))
	counter(c.stalls, float64(s.WriteStalls))
	counter(c.stalled, s.WriteStallTime.Seconds())
	counter(c.badSD, float64(s.BadSingleDels))
}
