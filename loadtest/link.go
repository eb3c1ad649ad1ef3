package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// The parent and a worker talk in JSON lines: commands on the worker's
// standard input, events on its standard output (its standard error is the
// parent's, for logs). The first command is "init" with the worker's
// configuration; the worker answers "ready". A worker in the parent's own
// process (when it may open enough files) gets the same values through
// direct calls instead.

// Commands (parent to worker).
const (
	opInit  = "init"  // Init: configure; answer evReady
	opRamp  = "ramp"  // log the online devices in; answer evRamped
	opPhase = "phase" // Phase "traffic" starts churn and inbound messages, "drain" stops them
	opWake  = "wake"  // K: a wake reached the fake for device K
	opSweep = "sweep" // Ks (missing Ns messages each): connect these devices to pull what is left; answer evSwept
	opStats = "stats" // flush and answer evStats
	opStop  = "stop"  // close every session; answer evStopped and exit
)

// Events (worker to parent).
const (
	evReady   = "ready"
	evBatch   = "batch"  // deliveries and online transitions, every 100 ms
	evStatus  = "status" // counters, every second
	evRamped  = "ramped"
	evSwept   = "swept"
	evStats   = "stats"
	evStopped = "stopped"
	evLog     = "log" // a message for the parent's log
)

type command struct {
	Op    string        `json:"op"`
	Init  *workerConfig `json:"init,omitempty"`
	K     int32         `json:"k,omitempty"`
	Ks    []int32       `json:"ks,omitempty"`
	Ns    []int32       `json:"ns,omitempty"` // with opSweep: how many messages each of Ks misses
	Phase string        `json:"phase,omitempty"`
}

type event struct {
	Ev     string        `json:"ev"`
	Worker int           `json:"w"`
	D      []delivery    `json:"d,omitempty"`
	T      []transition  `json:"t,omitempty"`
	In     []string      `json:"in,omitempty"` // inbound messages confirmed by the gateway (inboundKey), with -webhook
	Status *workerStatus `json:"s,omitempty"`
	Stats  *workerStats  `json:"st,omitempty"`
	Msg    string        `json:"msg,omitempty"`
}

// delivery is one message handed to a device by the SDK (after the SDK's
// own dedupe by id).
type delivery struct {
	K   int32  `json:"k"`           // device
	ID  string `json:"i"`           // message id
	Seq int64  `json:"s"`           // the POST's sequence from the data; -1 if absent
	TS  int64  `json:"t"`           // the POST's send time from the data, unix ns
	At  int64  `json:"a"`           // arrival: read by the device, unix ns
	Rcv int64  `json:"r,omitempty"` // the kernel's receive time of the data read last before it (stamp_linux.go), unix ns; 0: unknown
	Off bool   `json:"o,omitempty"` // an offline-share device (woken or swept)
}

// transition is a device's session coming up or going down, as the
// harness sees it: up once the SDK returned from the login (or reported a
// reconnection), down just before the harness drops or closes it, or when
// the SDK reports the loss.
type transition struct {
	K  int32 `json:"k"`
	At int64 `json:"a"` // unix ns
	On bool  `json:"on,omitempty"`
}

// workerStatus is a worker's snapshot, sent every second.
type workerStatus struct {
	Online      int    `json:"online"`       // sessions up now
	Logins      uint64 `json:"logins"`       // successful logins (first and fresh)
	LoginFails  uint64 `json:"login_fails"`  // failed login attempts
	ChurnResume uint64 `json:"churn_resume"` // drops left to resume
	ChurnFresh  uint64 `json:"churn_fresh"`  // drops followed by a fresh login
	Resumed     uint64 `json:"resumed"`      // reconnections that resumed (XEP-0198)
	Rebound     uint64 `json:"rebound"`      // reconnections that bound afresh
	WakeConns   uint64 `json:"wake_conns"`   // offline devices connected after a wake
	WakeIgnored uint64 `json:"wake_ignored"` // wakes for a device already connecting or up
	Rewakes     uint64 `json:"rewakes"`      // wakes that came while the device was closing, answered after
	InboundOK   uint64 `json:"inbound_ok"`   // inbound messages confirmed by the gateway's receipt
	InboundFail uint64 `json:"inbound_fail"` // inbound messages not confirmed in 10 s
	Ramped      int    `json:"ramped"`       // online-share devices logged in by the ramp so far
	RampFailed  int    `json:"ramp_failed"`  // devices the ramp gave up on
}

// workerStats are the SDK's counters summed over every Client the worker
// made, with its final status.
type workerStats struct {
	Received       uint64       `json:"received"`
	Duplicates     uint64       `json:"duplicates"`
	Sent           uint64       `json:"sent"`
	Reconnects     uint64       `json:"reconnects"`
	Resumes        uint64       `json:"resumes"`
	ResumeFailures uint64       `json:"resume_failures"`
	Status         workerStatus `json:"status"`
}

// link is the parent's end of one worker.
type link interface {
	send(c *command)
	pid() int // 0 for a worker in the parent's process
	close()   // the worker is done, or must go
}

// localLink runs a worker in the parent's process.
type localLink struct{ w *worker }

func (l *localLink) send(c *command) { l.w.handle(c) }
func (l *localLink) pid() int        { return 0 }
func (l *localLink) close()          { l.w.stopNow() }

// procLink is a worker process.
type procLink struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    chan *command
	done   chan struct{} // closed when the process exited
	once   sync.Once
	closed chan struct{}
}

// startProc starts this binary as worker idx; events go to onEvent and the
// end of its output (exit or error) to onExit. It returns once the process
// runs.
func startProc(idx int, init *workerConfig, onEvent func(*event), onExit func(int, error)) (*procLink, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-worker")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the harness
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %d: %w", idx, err)
	}
	l := &procLink{cmd: cmd, in: in, out: make(chan *command, 8192), done: make(chan struct{}), closed: make(chan struct{})}
	go l.writer()
	go func() {
		dec := json.NewDecoder(bufio.NewReaderSize(outPipe, 1<<20))
		var rerr error
		for {
			ev := new(event)
			if err := dec.Decode(ev); err != nil {
				if !errors.Is(err, io.EOF) {
					rerr = fmt.Errorf("worker %d output: %w", idx, err)
				}
				break
			}
			ev.Worker = idx
			onEvent(ev)
		}
		werr := cmd.Wait()
		close(l.done)
		if rerr == nil && werr != nil {
			rerr = fmt.Errorf("worker %d: %w", idx, werr)
		}
		onExit(idx, rerr)
	}()
	l.send(&command{Op: opInit, Init: init})
	return l, nil
}

// writer writes queued commands, so a caller (a fake's request handler
// forwarding a wake) never waits on the pipe unless 8192 are queued.
func (l *procLink) writer() {
	bw := bufio.NewWriter(l.in)
	enc := json.NewEncoder(bw)
	for {
		select {
		case c := <-l.out:
			if err := enc.Encode(c); err != nil {
				return
			}
			// Write what is queued in one go.
			for more := true; more; {
				select {
				case c := <-l.out:
					if err := enc.Encode(c); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if err := bw.Flush(); err != nil {
				return
			}
		case <-l.closed:
			bw.Flush()
			l.in.Close()
			return
		}
	}
}

func (l *procLink) send(c *command) {
	select {
	case l.out <- c:
	case <-l.closed:
	case <-l.done:
	}
}

func (l *procLink) pid() int { return l.cmd.Process.Pid }

// close closes the worker's input (it stops and exits) and waits up to
// 20 s before killing it.
func (l *procLink) close() {
	l.once.Do(func() { close(l.closed) })
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-l.done:
	case <-t.C:
		l.cmd.Process.Kill() // our own child, by its pid
		<-l.done
	}
}

// workerMain is the -worker mode: it reads the init command, runs a worker
// and serves commands until its input ends or "stop".
func workerMain(stdin io.Reader, stdout, stderr io.Writer) int {
	raiseFileLimit()
	dec := json.NewDecoder(bufio.NewReaderSize(stdin, 1<<16))
	var first command
	if err := dec.Decode(&first); err != nil || first.Op != opInit || first.Init == nil {
		fmt.Fprintln(stderr, "loadtest worker: expected an init command:", err)
		return exitSetup
	}
	bw := bufio.NewWriterSize(stdout, 1<<16)
	var mu sync.Mutex
	enc := json.NewEncoder(bw)
	emit := func(ev *event) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(ev); err == nil {
			bw.Flush()
		}
	}
	w, err := newWorker(first.Init, emit, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest worker:", err)
		return exitSetup
	}
	w.handle(&first)
	for {
		var c command
		if err := dec.Decode(&c); err != nil {
			break // the parent is gone or done
		}
		w.handle(&c)
		if c.Op == opStop {
			w.waitStopped()
			return exitPass
		}
	}
	w.stopNow()
	return exitPass
}
