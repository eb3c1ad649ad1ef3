package wake_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/wake"
	"tether/wake/waketest"
)

// BenchmarkAPNsWakes pushes wakes through a Pool and the real apns2 client
// to the loopback HTTP/2 fake (recording off), and reports pushes/s. The
// gateway's target is at least 10,000/s. The fake runs in the same
// process, so it shares the CPUs with the client.
//
//	go test -run '^$' -bench BenchmarkAPNsWakes -benchtime 100000x -count 3 ./wake
func BenchmarkAPNsWakes(b *testing.B) {
	for _, workers := range []int{64, 256} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			fake := waketest.NewAPNs(b)
			fake.Record(false)
			a, err := wake.NewAPNs(fake.Config())
			require.NoError(b, err)
			defer a.Close()
			const queue = 8192
			p := wake.NewPool(wake.PoolConfig{Workers: workers, QueueSize: queue})
			defer p.Close()

			slots := make(chan struct{}, queue) // back-pressure: Submit never refuses
			var wg sync.WaitGroup
			var mu sync.Mutex
			failed := 0
			done := func(r wake.Result, err error) {
				if r.Outcome != wake.Delivered {
					mu.Lock()
					failed++
					mu.Unlock()
				}
				<-slots
				wg.Done()
			}
			tokens := make([]string, 1024)
			for i := range tokens {
				tokens[i] = waketest.APNsToken(i)
			}
			payload := wake.Payload{Pending: 1, Priority: wake.PriorityHigh, Expiration: time.Now().Add(time.Hour)}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			i := 0
			for b.Loop() {
				slots <- struct{}{}
				wg.Add(1)
				if !p.Submit(wake.Job{Provider: a, Target: wake.Target{Token: tokens[i%len(tokens)]}, Payload: payload, Done: done}) {
					b.Fatal("Submit refused")
				}
				i++
			}
			wg.Wait() // drain the sends before stopping the clock
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(i)/elapsed.Seconds(), "pushes/s")
			require.Zero(b, failed)
			require.Equal(b, int64(i), fake.Accepted())
		})
	}
}
