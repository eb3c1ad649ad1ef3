package storage

import (
	"context"
	"fmt"
)

// CompactAll compacts the whole key space, dropping deleted and
// overwritten data (benchmarks and offline maintenance). It blocks until
// done.
func (db *DB) CompactAll() error {
	if err := db.pdb.Compact(context.Background(), []byte{0}, []byte{0xff}, true); err != nil {
		return fmt.Errorf("storage: compact: %w", err)
	}
	return nil
}

// CountAppMessages returns the number of queued messages of app (used to
// keep the depth gauge right when an app is deleted).
func (db *DB) CountAppMessages(app string) (int64, error) {
	p := appPrefix(tableMessage, app)
	var n int64
	err := db.scan(p, prefixEnd(p), func(k, v []byte) bool {
		n++
		return true
	})
	return n, err
}
