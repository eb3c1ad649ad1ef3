package queue_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
	"tether/storage"
)

// benchQueue opens a queue over an on-disk store in b.TempDir(); every
// Enqueue commits with fsync, as in production.
func benchQueue(b *testing.B) *queue.Queue {
	b.Helper()
	return openBenchQueue(b, b.TempDir(), storage.Options{})
}

func openBenchQueue(b *testing.B, dir string, opts storage.Options) *queue.Queue {
	b.Helper()
	db, err := storage.Open(dir, opts)
	require.NoError(b, err)
	q, err := queue.New(queue.Config{DB: db, TimerInterval: -1})
	require.NoError(b, err)
	b.Cleanup(func() {
		q.Close()
		db.Close()
	})
	return q
}

// BenchmarkEnqueue measures one-recipient enqueues from many goroutines:
// concurrent synced commits share fsyncs (group commit).
func BenchmarkEnqueue(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(16) // backends post concurrently; fsyncs are shared
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			_, err := q.Enqueue(ctx, &queue.EnqueueRequest{
				App: "bench", To: []queue.Recipient{{User: fmt.Sprintf("user%d", i%1000)}},
				Body: "hello", ExpiresIn: time.Hour,
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func benchmarkFanout(b *testing.B, recipients int) {
	q := benchQueue(b)
	ctx := context.Background()
	to := make([]queue.Recipient, recipients)
	for i := range to {
		to[i] = queue.Recipient{User: fmt.Sprintf("user%05d", i)}
	}
	req := &queue.EnqueueRequest{App: "bench", To: to, Body: "broadcast", ExpiresIn: time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.Enqueue(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*recipients)/b.Elapsed().Seconds(), "recipient-msgs/s")
}

func BenchmarkEnqueueFanout_100(b *testing.B)  { benchmarkFanout(b, 100) }
func BenchmarkEnqueueFanout_1000(b *testing.B) { benchmarkFanout(b, 1000) }

// BenchmarkEnqueueAck measures a message's whole stay in the queue on disk:
// a synced enqueue, then the device's acknowledgement, which deletes the
// payload (the delete-heavy side of the workload).
func BenchmarkEnqueueAck(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	dev := queue.DeviceRef{App: "bench", User: "alice", Device: "phone"}
	req := &queue.EnqueueRequest{App: "bench", To: []queue.Recipient{{User: "alice"}}, Body: "hello", ExpiresIn: time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		res, err := q.Enqueue(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if err := q.MarkDelivered(ctx, dev, res.Messages[0].ID); err != nil {
			b.Fatal(err)
		}
	}
	if q.Depth() != 0 {
		b.Fatalf("depth %d after acking everything", q.Depth())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkMarkDeliveredWholeUser measures one device's acknowledgement of
// a message sent to its whole user, of 1,000 users with 4 devices each:
// each acknowledgement reads which devices the message waits for (the
// device cache; before it, a ScanDevices of the user's records), and the
// fourth completes the message. The store is in memory, so that the
// figure is CPU rather than fsync; the messages are enqueued off the clock.
func BenchmarkMarkDeliveredWholeUser(b *testing.B) {
	q := openBenchQueue(b, "mem", storage.Options{InMemory: true})
	ctx := context.Background()
	const users, chunk = 1000, 1024
	devices := []string{"laptop", "phone", "tablet", "watch"}
	user := func(i int) string { return fmt.Sprintf("user%04d", i%users) }
	for u := range users {
		for j, d := range devices {
			_, err := q.UpdateDevice(ctx, queue.DeviceRef{App: "bench", User: user(u), Device: d}, func(*queue.Device) *queue.Device {
				return &queue.Device{Transport: "ws", Push: &queue.PushRegistration{Provider: "apns", Token: fmt.Sprintf("%064d", u*4+j)}}
			})
			require.NoError(b, err)
		}
	}
	var ids []string // of message k, to user(k)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		k := i / len(devices)
		if k == len(ids) {
			b.StopTimer()
			for range chunk {
				res, err := q.Enqueue(ctx, &queue.EnqueueRequest{App: "bench", To: []queue.Recipient{{User: user(len(ids))}}, Body: "hello", ExpiresIn: time.Hour})
				require.NoError(b, err)
				ids = append(ids, res.Messages[0].ID)
			}
			b.StartTimer()
		}
		dev := queue.DeviceRef{App: "bench", User: user(k), Device: devices[i%len(devices)]}
		if err := q.MarkDelivered(ctx, dev, ids[k]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if want := int64(len(ids) - i/len(devices)); q.Depth() != want {
		b.Fatalf("depth %d, want %d: a message acknowledged by every device is not done", q.Depth(), want)
	}
}

// BenchmarkEventsRead reads an app's feed in pages of 1,000, as the
// webhook and GET .../events do: b.N events, each a delivered status
// event like the soak's.
func BenchmarkEventsRead(b *testing.B) {
	q := benchQueue(b)
	ctx := context.Background()
	const page = 1000
	evs := make([]*queue.Event, 0, page)
	for n := 0; n < b.N; n += page {
		evs = evs[:0]
		for i := range min(page, b.N-n) {
			evs = append(evs, &queue.Event{Type: queue.EventDelivered, App: "acme", MessageID: "0000000000000000000000",
				User: fmt.Sprintf("u%06d", (n+i)%6000), Device: fmt.Sprintf("d%06d", (n+i)%18000), Status: "delivered"})
		}
		require.NoError(b, q.AppendEvents(ctx, evs))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var after uint64
	for got := 0; got < b.N; {
		out, next, err := q.Events(ctx, "acme", after, page, 0)
		require.NoError(b, err)
		require.NotEmpty(b, out)
		got, after = got+len(out), next
	}
}
