package queue_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"tether/internal/clock"
	"tether/queue"
	"tether/storage"
)

func openSpaceBench(b *testing.B) (*storage.DB, *queue.Queue, *clock.Manual) {
	b.Helper()
	db, err := storage.Open(b.TempDir(), storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	q, err := queue.New(queue.Config{DB: db, Clock: clk, TimerInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close(); db.Close() })
	ab := db.NewBatch() // an app record, so the event trim sees the app
	ab.PutApp("acme", []byte(`{"id":"acme"}`))
	if err := ab.Commit(true); err != nil {
		b.Fatal(err)
	}
	return db, q, clk
}

// otpBody is a one-time-code text, its code drawn from rnd: bodies that
// were all the same compressed to nearly nothing and made the figures
// too good.
func otpBody(rnd *rand.Rand) string {
	return fmt.Sprintf("Your one-time code is %06d. It expires in ten minutes.", rnd.IntN(1e6))
}

// BenchmarkSpacePerQueuedMessage enqueues b.N small messages (a 60-byte
// body, 16-byte data) to 1,000 users and reports the bytes on disk per
// queued message after a flush and compaction: all files (disk-B/msg, the
// WAL included, whose size does not grow with the store) and the sstables
// alone (sst-B/msg).
func BenchmarkSpacePerQueuedMessage(b *testing.B) {
	db, q, _ := openSpaceBench(b)
	ctx := context.Background()
	before := db.Stats()
	rnd := rand.New(rand.NewPCG(1, 2))
	const batch = 100
	to := make([]queue.Recipient, batch)
	n := 0
	for n < b.N {
		for i := range to {
			to[i] = queue.Recipient{User: fmt.Sprintf("user%04d", (n+i)%1000)}
		}
		if _, err := q.Enqueue(ctx, &queue.EnqueueRequest{App: "acme", To: to,
			Body: otpBody(rnd), Data: []byte(`{"kind":"otp"}`),
			ExpiresIn: 24 * time.Hour}); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	b.StopTimer()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.CompactAll(); err != nil {
		b.Fatal(err)
	}
	s := db.Stats()
	b.ReportMetric(float64(s.DiskBytes-before.DiskBytes)/float64(n), "disk-B/msg")
	b.ReportMetric(float64(s.TableBytes-before.TableBytes)/float64(n), "sst-B/msg")
}

// BenchmarkChurnWriteAmp runs b.N enqueue-then-acknowledge cycles on disk,
// 100 per simulated second, with status and event retention shortened to
// 30 simulated minutes so a run passes it several times. It reports the
// store size (after a compaction) at half-time and at the end: a store
// that does not grow without bound has them about equal once the
// retention is reached. It also reports the write amplification: bytes
// written to the WAL, by flushes and by compactions, over the WAL bytes;
// and the WAL bytes per cycle.
func BenchmarkChurnWriteAmp(b *testing.B) {
	db, err := storage.Open(b.TempDir(), storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	const retention = 30 * time.Minute
	q, err := queue.New(queue.Config{DB: db, Clock: clk, TimerInterval: -1, StatusRetention: retention, EventRetention: retention})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close(); db.Close() })
	ab := db.NewBatch()
	ab.PutApp("acme", []byte(`{"id":"acme"}`))
	if err := ab.Commit(true); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	const batch = 100
	to := make([]queue.Recipient, batch)
	sizeAt := func() float64 {
		if err := db.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := db.CompactAll(); err != nil {
			b.Fatal(err)
		}
		return float64(db.Stats().DiskBytes) / (1 << 20)
	}
	var half float64
	n := 0
	for n < b.N {
		for i := range to {
			to[i] = queue.Recipient{User: fmt.Sprintf("user%04d", (n+i)%1000)}
		}
		res, err := q.Enqueue(ctx, &queue.EnqueueRequest{App: "acme", To: to,
			Body: otpBody(rnd), ExpiresIn: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		for i, m := range res.Messages {
			if err := q.MarkDelivered(ctx, queue.DeviceRef{App: "acme", User: to[i].User, Device: "phone"}, m.ID); err != nil {
				b.Fatal(err)
			}
		}
		n += batch
		clk.Advance(time.Second)
		if n%(batch*60) == 0 { // once a simulated minute
			if _, err := q.RunTimers(ctx); err != nil {
				b.Fatal(err)
			}
			if err := q.TrimEvents(); err != nil {
				b.Fatal(err)
			}
		}
		if n == b.N/2/batch*batch && half == 0 {
			b.StopTimer()
			half = sizeAt()
			b.StartTimer()
		}
	}
	b.StopTimer()
	if q.Depth() != 0 {
		b.Fatalf("depth %d after acking everything", q.Depth())
	}
	end := sizeAt()
	s := db.Stats()
	if s.BadSingleDels != 0 {
		b.Fatalf("%d single deletes met a key written more than once", s.BadSingleDels)
	}
	b.ReportMetric(float64(s.TableBytes)/(1<<20), "sst-MiB-end")
	// The messages inside the retention, whose status records and events
	// the tables hold.
	retained := min(n, int(retention/time.Second)*batch)
	b.ReportMetric(float64(s.TableBytes)/float64(retained), "sst-B/retained-msg")
	written := float64(s.WALBytes + s.FlushedBytes + s.CompactBytes)
	b.ReportMetric(half, "disk-MiB-half")
	b.ReportMetric(end, "disk-MiB-end")
	b.ReportMetric(written/float64(max(s.WALBytes, 1)), "write-amp")
	b.ReportMetric(float64(s.WALBytes)/float64(n), "wal-B/msg")
}
