//go:build unix

package queue_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tether/queue"
	"tether/storage"
)

// BenchmarkSoakMixWrites writes what the soak's traffic writes, b.N POSTs
// of it, from 32 goroutines (their enqueues share fsyncs): each POST has
// an idempotency key and one recipient device, of 18,000; the device
// acknowledges it, one in five marks it read, and one device in ten is
// offline, acknowledging its messages about 20,000 POSTs later (those
// stay queued long enough to be flushed). It reports what the store
// wrote per POST (WAL-B, flush-B and compact-B/post) and the CPU the
// process used per POST, the store's flushes and compactions included
// (cpu-µs/post).
func BenchmarkSoakMixWrites(b *testing.B) {
	db, q, _ := openSpaceBench(b)
	ctx := context.Background()
	// A goroutine holds lateDepth offline acknowledgements: with one POST
	// in ten for an offline device, each waits about 10 × lateDepth of its
	// goroutine's POSTs, 20,000 of all 32 goroutines' on two CPUs.
	const devices, lateDepth = 18000, 64
	var next atomic.Int64
	before, cpu0 := db.Stats(), processCPU(b)
	b.SetParallelism(16) // 16 × GOMAXPROCS goroutines
	b.RunParallel(func(pb *testing.PB) {
		rnd := rand.New(rand.NewPCG(uint64(next.Add(1)), 7))
		type ack struct {
			dev queue.DeviceRef
			id  string
		}
		var late []ack // the offline devices' acknowledgements, oldest first
		for pb.Next() {
			n := next.Add(1)
			d := rnd.IntN(devices)
			dev := queue.DeviceRef{App: "acme", User: fmt.Sprintf("user%05d", d/3), Device: fmt.Sprintf("dev%d", d%3)}
			res, err := q.Enqueue(ctx, &queue.EnqueueRequest{App: "acme", To: []queue.Recipient{{User: dev.User, Device: dev.Device}},
				Body: otpBody(rnd), Data: []byte(`{"seq":` + fmt.Sprint(n) + `}`), ExpiresIn: time.Hour,
				IdempotencyKey: fmt.Sprintf("%016x%016x", rnd.Uint64(), rnd.Uint64()), RequestHash: storage.Hash(fmt.Sprint(n))})
			if err != nil {
				b.Error(err)
				return
			}
			a := ack{dev, res.Messages[0].ID}
			if d%10 == 0 {
				late = append(late, a)
				if len(late) < lateDepth {
					continue
				}
				a, late = late[0], late[1:]
			}
			if err := q.MarkDelivered(ctx, a.dev, a.id); err != nil {
				b.Error(err)
				return
			}
			if rnd.IntN(5) == 0 {
				if err := q.MarkRead(ctx, a.dev, a.id); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
	b.StopTimer()
	s, cpu := db.Stats(), processCPU(b)-cpu0
	post := float64(b.N)
	b.ReportMetric(float64(s.WALBytes-before.WALBytes)/post, "WAL-B/post")
	b.ReportMetric(float64(s.FlushedBytes-before.FlushedBytes)/post, "flush-B/post")
	b.ReportMetric(float64(s.CompactBytes-before.CompactBytes)/post, "compact-B/post")
	b.ReportMetric(cpu.Seconds()*1e6/post, "cpu-µs/post")
}

// processCPU is the CPU time the process used so far, in user and kernel
// mode.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
