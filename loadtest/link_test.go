package main

import (
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// eventLog collects a worker's events for tests.
type eventLog struct {
	mu   sync.Mutex
	evs  []*event
	ch   chan string
	exit chan error
}

func newEventLog() *eventLog {
	return &eventLog{ch: make(chan string, 100), exit: make(chan error, 1)}
}

func (l *eventLog) on(ev *event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
	l.ch <- ev.Ev
}

func (l *eventLog) wait(t *testing.T, kind string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case k := <-l.ch:
			if k == kind {
				return
			}
		case <-deadline:
			t.Fatalf("no %q event within 20s", kind)
		}
	}
}

func emptyWorkerConfig() *workerConfig {
	return &workerConfig{Index: 1, Fleet: fleet{N: 1, Users: 1, TLS: 1, RunID: "t"}, App: "a", Password: "p",
		LoginRate: 10, LoginConc: 1, WakeQuiet: time.Second}
}

// TestWorkerProcess runs a worker process (this test binary, see
// TestMain) with no devices through the JSON-lines protocol.
func TestWorkerProcess(t *testing.T) {
	log := newEventLog()
	l, err := startProc(3, emptyWorkerConfig(), log.on, func(_ int, err error) { log.exit <- err })
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	log.wait(t, evReady)
	if l.pid() <= 0 {
		t.Errorf("pid %d", l.pid())
	}
	l.send(&command{Op: opRamp})
	log.wait(t, evRamped)
	l.send(&command{Op: opSweep, Ks: []int32{}})
	log.wait(t, evSwept)
	l.send(&command{Op: opStats})
	log.wait(t, evStats)
	l.send(&command{Op: opStop})
	log.wait(t, evStopped)
	select {
	case err := <-log.exit:
		if err != nil {
			t.Fatalf("worker exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not exit after stop")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, ev := range log.evs {
		if ev.Worker != 3 {
			t.Errorf("event %s from worker %d, want 3", ev.Ev, ev.Worker)
		}
	}
}

// TestWorkerMainNeedsInit checks that a worker refuses input that does not
// start with init.
func TestWorkerMainNeedsInit(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"op":"stats"}` + "\n"))
		pw.Close()
	}()
	if code := workerMain(pr, io.Discard, io.Discard); code != exitSetup {
		t.Fatalf("exit %d, want %d", code, exitSetup)
	}
}

// TestLocalWorker runs the same commands in process.
func TestLocalWorker(t *testing.T) {
	log := newEventLog()
	w, err := newWorker(emptyWorkerConfig(), log.on, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l := &localLink{w: w}
	l.send(&command{Op: opInit})
	log.wait(t, evReady)
	l.send(&command{Op: opPhase, Phase: "traffic"})
	l.send(&command{Op: opWake, K: 0})
	l.send(&command{Op: opWake, K: 99}) // not its device: ignored
	l.send(&command{Op: opStats})
	log.wait(t, evStats)
	l.close()
	log.wait(t, evStopped)
	l.close() // twice is fine
}

func TestNewWorkerChecksRange(t *testing.T) {
	cfg := emptyWorkerConfig()
	cfg.Count = 5
	if _, err := newWorker(cfg, func(*event) {}, io.Discard); err == nil {
		t.Fatal("devices beyond the fleet: want an error")
	}
	cfg.Count = 0
	cfg.CAPEM = "not a pem"
	if _, err := newWorker(cfg, func(*event) {}, io.Discard); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("bad CA PEM: %v", err)
	}
}
