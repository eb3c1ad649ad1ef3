package storage

import (
	"testing"
)

// With every memtable slot reserved out of the block cache, reads still
// find room for their blocks: the reservations come on top of CacheSize.
func TestBlockCacheKeepsBlocksBesideMemtables(t *testing.T) {
	const mem = 1 << 20
	db, err := Open(t.TempDir(), Options{CacheSize: 1 << 20, MemTableSize: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 100)
	for i := range 3 * mem / 100 { // a few memtables' worth, so some were flushed
		b := db.NewBatch()
		b.PutStatus("app", uint64(i+1), val)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for i := uint64(1); i < 3*mem/100; i += 97 {
			if _, err := db.GetStatus("app", i); err != nil {
				t.Fatal(i, err)
			}
		}
	}
	m := db.pdb.Metrics()
	if m.BlockCache.Count == 0 || m.BlockCache.Hits == 0 {
		t.Fatalf("block cache holds %d blocks, %d hits, %d misses", m.BlockCache.Count, m.BlockCache.Hits, m.BlockCache.Misses)
	}
}
