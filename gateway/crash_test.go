package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/queue"
	"tether/sdkproto"
	"tether/storage"
	"tether/wake/waketest"
)

type child struct {
	cmd   *exec.Cmd
	url   string
	xmpps string
	done  chan error
}

// startChild runs this test binary as a gateway on dir (see TestMain).
func startChild(t *testing.T, dir string, env ...string) *child {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+dir), env...)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-c.done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err == nil {
			http, xmpps, _ := strings.Cut(string(b), "\n")
			c.url, c.xmpps = "http://"+http, xmpps
			break
		}
		require.True(t, time.Now().Before(deadline), "child gateway did not start")
		select {
		case err := <-c.done:
			t.Fatalf("child gateway exited: %v", err)
		case <-time.After(20 * time.Millisecond): // waiting for the child to publish its address
		}
	}
	gatewaytest.WaitReady(t, c.url)
	return c
}

type sent struct {
	id, user, body string
	data           json.RawMessage
}

// TestCrashKeepsAcceptedMessages kills a gateway with SIGKILL while 32
// clients post to it, restarts it on the same data dir, and checks that
// every message that got its 202 is in its recipient's queue, intact, and
// that nothing refused with a 4xx is anywhere.
func TestCrashKeepsAcceptedMessages(t *testing.T) {
	dir := t.TempDir()
	c := startChild(t, dir)
	ctx := context.Background()
	admin := api.NewClient(c.url, "crash-test-admin-token")
	created, err := admin.CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	app := api.NewClient(c.url, created.APIKey)
	app.HTTP.Timeout = 10 * time.Second

	var (
		mu       sync.Mutex
		accepted []sent
		refused  []string
		posted   atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("u%02d", rng.IntN(50))
				body := fmt.Sprintf("w%d-m%d-%x", w, i, rng.Uint64())
				data := json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				req := api.SendRequest{To: []string{user}, Body: body, Data: data}
				bad := i%10 == 9
				if bad { // refused: a priority that does not exist
					req.Priority = "urgent"
				}
				res, err := app.Send(ctx, "acme", req, "")
				posted.Add(1)
				mu.Lock()
				switch {
				case err == nil && !bad:
					accepted = append(accepted, sent{res.Messages[0].ID, user, body, data})
				case bad && err != nil:
					refused = append(refused, body)
				}
				mu.Unlock()
				if err != nil && !bad {
					return // the gateway died under us
				}
			}
		})
	}
	// Let load build up, then kill the gateway mid-flight.
	for posted.Load() < 2000 {
		time.Sleep(5 * time.Millisecond) // waiting for load; bounded by the HTTP timeout
	}
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.done
	close(stop)
	wg.Wait()
	t.Logf("posted %d, accepted %d, refused %d before SIGKILL", posted.Load(), len(accepted), len(refused))
	require.NotEmpty(t, accepted)

	// Restart on the same data dir: every accepted message has its status.
	c2 := startChild(t, dir)
	app2 := api.NewClient(c2.url, created.APIKey)
	for _, i := range []int{0, len(accepted) / 2, len(accepted) - 1} {
		st, err := app2.GetMessage(ctx, "acme", accepted[i].id)
		require.NoError(t, err)
		require.Equal(t, "enqueued", st.Status)
		require.Equal(t, accepted[i].user, st.To)
	}
	require.NoError(t, c2.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-c2.done, "graceful shutdown")

	// Open the store directly and read every queue.
	db, err := storage.Open(filepath.Join(dir, "store"), storage.Options{})
	require.NoError(t, err)
	defer db.Close()
	q, err := queue.New(queue.Config{DB: db, TimerInterval: -1})
	require.NoError(t, err)
	defer q.Close()
	byBody := map[string]*queue.Message{}
	for u := range 50 {
		msgs, err := q.Pending(ctx, queue.DeviceRef{App: "acme", User: fmt.Sprintf("u%02d", u), Device: "check"}, 0, 1<<20)
		require.NoError(t, err)
		for _, m := range msgs {
			byBody[m.Body] = m
		}
	}
	for _, s := range accepted {
		m, ok := byBody[s.body]
		require.True(t, ok, "accepted message %s (%s) lost", s.id, s.body)
		require.Equal(t, s.id, m.ID)
		require.Equal(t, s.user, m.User)
		require.JSONEq(t, string(s.data), string(m.Data))
	}
	for _, b := range refused {
		require.NotContains(t, byBody, b, "a refused message was stored")
	}
}

// TestCrashKeepsWakeCap: the hourly wake cap (10) holds across a kill -9.
// A device is woken, connects, goes offline and gets a message again, ten
// times; the gateway is killed while the fake APNs holds the tenth push,
// before it answers. After the restart a new message for the offline
// device gets no push: the ten wakes of the last hour were stored before
// each went out. (Stored afterwards, in an unsynced batch, the latest ones
// died with the process, and the device got an eleventh.)
func TestCrashKeepsWakeCap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills gateway processes")
	}
	apns := waketest.NewAPNs(t)
	ca := filepath.Join(t.TempDir(), "apns-ca.pem")
	require.NoError(t, os.WriteFile(ca, apns.CertificatePEM(), 0o600))
	env := "TETHER_TEST_CHILD_PROVIDER_CA=" + ca
	dir := t.TempDir()
	c := startChild(t, dir, env)
	ctx := ctxT(t)
	created, err := api.NewClient(c.url, "crash-test-admin-token").CreateApp(ctx, api.CreateAppRequest{ID: "acme"})
	require.NoError(t, err)
	app := api.NewClient(c.url, created.APIKey)
	_, err = app.PatchApp(ctx, "acme", api.PatchAppRequest{
		APNS: &api.APNSConfig{KeyP8: apns.KeyP8, KeyID: apns.KeyID, TeamID: apns.TeamID, Topic: "com.acme.app", Endpoint: apns.URL},
	})
	require.NoError(t, err)
	_, err = app.PutUser(ctx, "acme", "rita", api.PutUserRequest{Password: "pw-rita-123"})
	require.NoError(t, err)
	tok := waketest.APNsToken(7)
	_, err = app.PutDevice(ctx, "acme", "rita", "iphone", api.PutDeviceRequest{Push: &api.PushRegistration{Provider: "apns", Token: tok}})
	require.NoError(t, err)

	var pushes atomic.Int32
	killed := make(chan struct{})
	first := c
	apns.OnRequest(func(r waketest.APNsRequest) {
		if pushes.Add(1) == 10 {
			first.cmd.Process.Signal(syscall.SIGKILL) // before the fake answers
			<-first.done
			close(killed)
		}
	})
	connect := func(c *child) {
		cl, err := sdkproto.Dial(ctx, sdkproto.Config{
			Addr: c.xmpps, App: "acme", User: "rita", Password: "pw-rita-123", Device: "iphone",
			TLSConfig: &tls.Config{InsecureSkipVerify: true},
		})
		require.NoError(t, err)
		require.NoError(t, cl.Close())
	}
	for i := 1; i <= 10; i++ {
		_, err := app.Send(ctx, "acme", api.SendRequest{To: []string{"rita"}, Body: fmt.Sprint("m", i)}, "")
		require.NoError(t, err)
		eventually(t, 10*time.Second, fmt.Sprintf("wake %d", i), func() bool { return pushes.Load() >= int32(i) })
		if i < 10 {
			connect(c) // answers the wake; offline again after
		}
	}
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway was not killed")
	}

	c = startChild(t, dir, env)
	app = api.NewClient(c.url, created.APIKey)
	_, err = app.Send(ctx, "acme", api.SendRequest{To: []string{"rita"}, Body: "after the crash"}, "")
	require.NoError(t, err)
	time.Sleep(2 * time.Second) // a wake would go out at once (the device is offline); none may
	require.EqualValues(t, 10, pushes.Load(), "a push beyond the hourly cap of 10 after the restart")
}
