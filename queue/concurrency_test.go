package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/queue"
)

// orderSink checks that a session is handed its messages in sequence order.
type orderSink struct {
	mu   sync.Mutex
	seqs []uint64
}

func (s *orderSink) Deliver(m *queue.Message, _ bool) queue.Writer {
	s.mu.Lock()
	s.seqs = append(s.seqs, m.Seq)
	s.mu.Unlock()
	return nil
}
func (s *orderSink) Withdraw(uint64) {}

func TestConcurrentEnqueuesKeepPerUserOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	sink := &orderSink{}
	sub := e.q.Subscribe(app, "alice", "phone", sink)
	defer sub.Close()

	const workers, per = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				// Multi-recipient requests lock several users at once.
				rcpts := to("alice", fmt.Sprintf("u%d", (w+i)%5), "bob")
				if _, err := e.q.Enqueue(context.Background(), &queue.EnqueueRequest{App: app, To: rcpts, Body: "x", ExpiresIn: time.Hour}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	sink.mu.Lock()
	seqs := append([]uint64(nil), sink.seqs...)
	sink.mu.Unlock()
	require.Len(t, seqs, workers*per)
	for i := 1; i < len(seqs); i++ {
		require.Greater(t, seqs[i], seqs[i-1], "live delivery out of enqueue order")
	}
	msgs := e.pending(t, dev("alice", "phone"))
	require.Len(t, msgs, workers*per)
	for i, m := range msgs {
		require.Equal(t, seqs[i], m.Seq, "Pending and live delivery agree on the order")
	}
	require.EqualValues(t, 3*workers*per, e.q.Depth())
}

func TestConcurrentAcksFromTwoDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.addDevice(t, "alice", "phone")
	e.addDevice(t, "alice", "laptop")
	var sent []string
	for range 50 {
		sent = append(sent, e.sendOne(t, "alice", "x"))
	}
	var wg sync.WaitGroup
	for _, d := range []string{"phone", "laptop"} {
		wg.Go(func() {
			for _, id := range sent {
				if err := e.q.MarkDelivered(context.Background(), dev("alice", d), id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	// Cancels race with the acks: each message ends either cancelled or
	// delivered, never both.
	wg.Go(func() {
		for _, id := range sent {
			if _, err := e.q.Cancel(context.Background(), app, id); err != nil && !errors.Is(err, queue.ErrFinal) {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	require.Zero(t, e.q.Depth())
	for _, id := range sent {
		st := e.status(t, id)
		require.Contains(t, []queue.State{queue.StateDelivered, queue.StateCancelled}, st.Status)
		require.True(t, e.payloadGone(t, "alice", id))
		evs := e.eventsOf(t, id)
		if st.Status == queue.StateCancelled {
			require.Equal(t, []string{queue.EventCancelled}, evs)
		} else {
			require.ElementsMatch(t, []string{"message.sent@phone", "message.delivered@phone", "message.sent@laptop", "message.delivered@laptop"}, evs)
		}
	}
}

func TestManyTimersDueAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const n = 1200 // more than one timer batch
	rcpts := make([]queue.Recipient, n)
	for i := range rcpts {
		rcpts[i] = queue.Recipient{User: fmt.Sprintf("u%d", i)}
	}
	res, err := e.q.Enqueue(ctxT(t), &queue.EnqueueRequest{App: app, To: rcpts, Body: "x", ExpiresIn: time.Minute})
	require.NoError(t, err)
	require.Equal(t, n, e.runTimers(t, time.Minute))
	require.Zero(t, e.q.Depth())
	for _, m := range res.Messages {
		require.Equal(t, queue.StateExpired, e.status(t, m.ID).Status)
	}
}

// TestFallbackRetriedAfterInterruptedSend stands in for a crash during the
// SMS hand-off: the status says "sending" and the provider never answered.
// Another queue over the same store (the restarted process) retries after
// the retry delay; the outcome is recorded once. The SMS is at least once.
func TestFallbackRetriedAfterInterruptedSend(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	stuck := &fakeSMS{provider: "first", onSend: func(*queue.Message) {
		started <- struct{}{}
		<-release
	}}
	e := newEnv(t, func(c *queue.Config) { c.Fallback = stuck })
	id := e.send(t, queue.EnqueueRequest{To: to("alice"), Body: "code", ExpiresIn: time.Hour,
		Fallback: &queue.SMSFallback{To: "+1", After: 60}})[0]
	e.runTimers(t, time.Minute)
	<-started
	st := e.status(t, id)
	require.Equal(t, "sending", st.Fallback.Status)
	require.Equal(t, "code", st.SMSText, "kept for a retry")

	retry := &fakeSMS{provider: "second"}
	q2, err := queue.New(queue.Config{DB: e.db, Clock: e.clk, TimerInterval: -1, Fallback: retry})
	require.NoError(t, err)
	t.Cleanup(func() { q2.Close() })
	// The provider may have taken the SMS before the crash: too late to
	// cancel.
	_, err = q2.Cancel(ctxT(t), app, id)
	require.ErrorIs(t, err, queue.ErrHandingOver)
	e.clk.Advance(5*time.Minute - time.Millisecond)
	_, err = q2.RunTimers(ctxT(t))
	require.NoError(t, err)
	require.Empty(t, retry.Calls())
	e.clk.Advance(time.Millisecond)
	_, err = q2.RunTimers(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, q2.Close()) // waits for the send's outcome
	// The restarted queue is the store's only writer now: read through it
	// (the first one's status cache is of before the restart).
	st, err = q2.Status(ctxT(t), app, id)
	require.NoError(t, err)

	calls := retry.Calls()
	require.Len(t, calls, 1)
	require.Equal(t, "code", calls[0].Fallback.Text, "the text survives the payload's removal")
	require.Equal(t, queue.StateFallbackSent, st.Status)
	require.Equal(t, "second", st.Fallback.Provider)
	require.Len(t, e.eventsOf(t, id), 1, "one outcome")
}
