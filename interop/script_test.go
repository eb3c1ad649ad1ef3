package interop_test

// The harness interop_test.go and interop_more_test.go share: a client
// script runs as a child process that prints JSON lines (events) on stdout
// and takes JSON commands on stdin; the test waits for the events it
// expects and sends the commands, one step at a time. Also here: finding
// the two client libraries, and how node runs an xmpp.js script.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/internal/gatewaytest"
)

// event is one JSON line a client script printed; each script prints the
// fields its events have (interop_more_test.go's scripts the most).
type event struct {
	Event            string   `json:"event"`
	JID              string   `json:"jid"`
	ID               string   `json:"id"`
	From             string   `json:"from"`
	To               string   `json:"to"`
	Type             string   `json:"type"`
	Body             *string  `json:"body"`
	Data             *string  `json:"data"`
	Channel          *string  `json:"channel"`
	ReceiptRequested bool     `json:"receipt_requested"`
	Markable         bool     `json:"markable"`
	Delay            bool     `json:"delay"`
	Tag              string   `json:"tag"`
	Condition        string   `json:"condition"`
	ErrorType        string   `json:"error_type"`
	Features         []string `json:"features"`
	Identities       [][]any  `json:"identities"`
	Items            *int     `json:"items"`
	H                *int     `json:"h"`
	Seq              *int     `json:"seq"`
	Enabled          *bool    `json:"enabled"`
	Error            string   `json:"error"`
	raw              string
}

// script is a running client script.
type script struct {
	t      *testing.T
	name   string
	stdin  io.WriteCloser
	events chan event
	ahead  []event // read while looking for another event
	stderr *gatewaytest.SyncBuffer
	waited chan error
	start  time.Time

	mu   sync.Mutex
	seen map[string]int // message id -> how many times the client got it
	all  []string       // every event name, in order
}

// start runs bin with args and env in dir as the client script name.
// timeout is what the script is told to exit by itself within: the test
// fails if it is still running timeout after the test ends, and it is
// killed 10 s after that and when the test ends. Its output is logged when
// the test fails (or with INTEROP_VERBOSE=1).
func start(t *testing.T, name, dir, bin string, args, env []string, timeout time.Duration) *script {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	s := &script{t: t, name: name, events: make(chan event, 256), stderr: &gatewaytest.SyncBuffer{},
		waited: make(chan error, 1), seen: map[string]int{}, start: time.Now()}
	cmd.Stderr = s.stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	s.stdin = stdin
	require.NoError(t, cmd.Start(), "start %s", name)

	var raw gatewaytest.SyncBuffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(s.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(&raw, "%s %s\n", time.Now().Format("15:04:05.000"), sc.Bytes())
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				e = event{Event: "error", Error: fmt.Sprintf("not a JSON line: %q", sc.Text())}
			}
			e.raw = sc.Text()
			s.mu.Lock()
			s.all = append(s.all, e.Event)
			if e.Event == "message" {
				s.seen[e.ID]++
			}
			s.mu.Unlock()
			s.events <- e
		}
	}()
	go func() {
		<-readDone // Wait closes stdout: read it all first
		s.waited <- cmd.Wait()
		cancel()
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the scripts take end of input as quit
		go func() {       // a test that stopped early reads no more events
			for range s.events {
			}
		}()
		select {
		case err := <-s.waited:
			s.waited <- err
		case <-time.After(timeout):
			t.Errorf("%s did not exit", name)
		}
		if t.Failed() || os.Getenv("INTEROP_VERBOSE") != "" {
			t.Logf("%s stdout:\n%s", name, raw.String())
			t.Logf("%s stderr (client debug log):\n%s", name, s.stderr.String())
		}
	})
	return s
}

// await returns the first event match takes, among those already read or
// coming within d, and keeps the others for later; false when d passed
// first. An "error" event that match does not take fails the test, as
// does the script exiting; what names the awaited events there.
func (s *script) await(what string, match func(event) bool, d time.Duration) (event, bool) {
	s.t.Helper()
	for i, e := range s.ahead {
		if match(e) {
			s.ahead = append(s.ahead[:i:i], s.ahead[i+1:]...)
			return e, true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatalf("%s exited while waiting for %s", s.name, what)
			}
			if match(e) {
				return e, true
			}
			if e.Event == "error" {
				s.t.Fatalf("%s: error while waiting for %s: %s", s.name, what, e.Error)
			}
			s.ahead = append(s.ahead, e)
		case <-timer.C:
			return event{}, false
		}
	}
}

// next returns the next event named want, keeping the others for later;
// it fails on an "error" event, on the script exiting, or after
// stepTimeout.
func (s *script) next(want string) event {
	s.t.Helper()
	e, ok := s.nextWithin(want, stepTimeout)
	if !ok {
		s.t.Fatalf("%s: no %q within %s", s.name, want, stepTimeout)
	}
	return e
}

// nextWithin is next with its own timeout, reporting false when none came.
func (s *script) nextWithin(want string, d time.Duration) (event, bool) {
	s.t.Helper()
	return s.await(fmt.Sprintf("%q", want), func(e event) bool { return e.Event == want }, d)
}

// nextTag returns the next event named want whose tag is tag.
func (s *script) nextTag(want, tag string) event {
	s.t.Helper()
	e, ok := s.await(fmt.Sprintf("%q tagged %q", want, tag),
		func(e event) bool { return e.Event == want && e.Tag == tag }, stepTimeout)
	if !ok {
		s.t.Fatalf("%s: no %q tagged %q within %s", s.name, want, tag, stepTimeout)
	}
	return e
}

// nextOf returns the first event named one of names ("error" included if
// named); it fails after stepTimeout or if the script exits first.
func (s *script) nextOf(names ...string) event {
	s.t.Helper()
	e, ok := s.await(fmt.Sprintf("one of %q", names),
		func(e event) bool { return slices.Contains(names, e.Event) }, stepTimeout)
	if !ok {
		s.t.Fatalf("%s: none of %q within %s", s.name, names, stepTimeout)
	}
	return e
}

// none fails if an event named name comes within d (or is already read).
func (s *script) none(name string, d time.Duration) {
	s.t.Helper()
	if e, ok := s.nextWithin(name, d); ok {
		s.t.Fatalf("%s: unexpected %s: %s", s.name, name, e.raw)
	}
}

// cmd sends one command line: {"cmd": name} with the key-value pairs kv.
func (s *script) cmd(name string, kv ...any) {
	s.t.Helper()
	m := map[string]any{"cmd": name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, err := json.Marshal(m)
	require.NoError(s.t, err)
	_, err = s.stdin.Write(append(b, '\n'))
	require.NoError(s.t, err, "write %s to %s", name, s.name)
}

// exited waits for the script to end by itself and returns how long it
// ran.
func (s *script) exited(d time.Duration) time.Duration {
	s.t.Helper()
	select {
	case err := <-s.waited:
		s.waited <- err
		return time.Since(s.start)
	case <-time.After(d):
		s.t.Fatalf("%s still running %s later", s.name, d)
		return 0
	}
}

// quit asks the script to close its stream, and waits for bye and exit 0.
func (s *script) quit() {
	s.t.Helper()
	s.cmd("quit")
	s.next("bye")
	select {
	case err := <-s.waited:
		require.NoError(s.t, err, "%s exit", s.name)
		s.waited <- err // for the cleanup
	case <-time.After(stepTimeout):
		s.t.Fatalf("%s did not exit after quit", s.name)
	}
}

// count reports how many times the client got message id.
func (s *script) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id]
}

// eventCount reports how many events named name the client printed.
func (s *script) eventCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.all {
		if e == name {
			n++
		}
	}
	return n
}

// --- the client libraries ------------------------------------------------------

const python = "/usr/bin/python3"

// needSlixmpp skips the test (or fails it under CI) unless Debian's
// python3 can import slixmpp.
func needSlixmpp(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		missing(t, "%s not found (Debian's python3 with python3-slixmpp)", python)
	}
	if out, err := exec.Command(python, "-c", "import slixmpp").CombinedOutput(); err != nil {
		missing(t, "slixmpp not importable by %s (apt-get install python3-slixmpp): %v: %s", python, err, strings.TrimSpace(string(out)))
	}
}

// needXmppJS skips the test (or fails it under CI) unless node is in PATH
// and xmpp.js is installed in js/.
func needXmppJS(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		missing(t, "node not found in PATH")
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "@xmpp", "client", "package.json")); err != nil {
		missing(t, "xmpp.js not installed (cd interop/js && npm ci)")
	}
}

// nodeScript returns node's path and the arguments that run file (in js/).
// xmpp.js uses the global WebSocket: Node 20 has it only behind a flag,
// Node 22 and later by default.
func nodeScript(t *testing.T, file string) (string, []string) {
	t.Helper()
	node, err := exec.LookPath("node")
	require.NoError(t, err)
	args := []string{file}
	if exec.Command(node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)").Run() != nil {
		args = append([]string{"--experimental-websocket"}, args...)
	}
	return node, args
}

// missing skips the test, or fails it under CI, where .ci/run installs the
// clients.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: .ci/run should have installed it)", msg)
	}
	t.Skipf("%s: skipping", msg)
}
