package storage

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"testing"
)

// benchIdemStore returns a store on disk holding n idempotency keys of one
// app, flushed and compacted into the bottom level, as a store some hours
// into its life holds them.
func benchIdemStore(b *testing.B, n int) *DB {
	b.Helper()
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	for i := 0; i < n; {
		bt := db.NewBatch()
		for j := 0; j < 1000 && i < n; j, i = j+1, i+1 {
			bt.PutIdem("app", idemHash(i), make([]byte, 120))
		}
		if err := bt.Commit(false); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.CompactAll(); err != nil {
		b.Fatal(err)
	}
	return db
}

func idemHash(i int) [32]byte {
	return sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
}

// benchmarkGet reads key(i) of benchIdemStore's keys (those from 500,000
// up are absent) with DB.get (pebble's Get, which skips the bottom
// level's filters) and DB.lookup (which reads them).
func benchmarkGet(b *testing.B, key func(i int) int) {
	const stored = 500_000
	db := benchIdemStore(b, stored)
	for _, read := range []struct {
		name string
		f    func(k []byte) ([]byte, error)
	}{{"get", db.get}, {"lookup", db.lookup}} {
		b.Run(read.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				h := idemHash(key(i))
				if _, err := read.f(append(appPrefix(tableIdem, "app"), h[:]...)); err != nil && !errors.Is(err, ErrNotFound) {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGetMiss reads keys that are not there: new idempotency keys.
func BenchmarkGetMiss(b *testing.B) { benchmarkGet(b, func(i int) int { return 1_000_000 + i }) }

// BenchmarkGetHit reads keys that are there.
func BenchmarkGetHit(b *testing.B) { benchmarkGet(b, func(i int) int { return i % 500_000 }) }
