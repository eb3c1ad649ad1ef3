package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"tether/gateway"
	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

// clientsEnv, when set, makes the test binary a load client: it opens the
// sessions described by the TETHER_BENCH_* variables, prints "ready" and the
// seconds it took, then holds them idle until its standard input closes.
// Session benchmarks split clients over such processes, since one process
// may open at most 20,000 files here.
const clientsEnv = "TETHER_TEST_CLIENTS"

func runClients() int {
	env := func(k string) string { return os.Getenv("TETHER_BENCH_" + k) }
	n, _ := strconv.Atoi(env("N"))
	first, _ := strconv.Atoi(env("FIRST"))
	users, _ := strconv.Atoi(env("USERS"))
	conc, _ := strconv.Atoi(env("CONCURRENCY"))
	transport := sdkproto.TransportTLS
	switch env("TRANSPORT") {
	case "websocket":
		transport = sdkproto.TransportWebSocket
	case "starttls":
		transport = sdkproto.TransportStartTLS
	}
	mode := env("MODE") // "idle", "latency" (record arrivals), "drain" (wait for EXPECT messages each)
	expect, _ := strconv.Atoi(env("EXPECT"))
	var arrMu sync.Mutex
	var arrivals []string
	var drained atomic.Int64
	allDrained := make(chan struct{})
	creds := &sdkproto.CredentialCache{}
	// Clients offer X25519 only, as most mobile TLS stacks do today; the
	// gateway also accepts the hybrid post-quantum X25519MLKEM768 that Go
	// clients offer by default, at about twice the handshake cost.
	tlsCfg := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: tls.NewLRUClientSessionCache(64),
		CurvePreferences: []tls.CurveID{tls.X25519}}
	clients := make([]*sdkproto.Client, n)
	var next atomic.Int64
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				k := first + i
				var got atomic.Int64
				cfg := sdkproto.Config{
					OnMessage: func(m *sdkproto.Message) {
						switch mode {
						case "latency":
							line := m.ID + " " + strconv.FormatInt(time.Now().UnixNano(), 10)
							arrMu.Lock()
							arrivals = append(arrivals, line)
							arrMu.Unlock()
						case "drain":
							if got.Add(1) == int64(expect) && drained.Add(1) == int64(n) {
								close(allDrained)
							}
						}
					},
					Transport: transport, Addr: env("ADDR"), URL: env("URL"), App: "bench",
					User: fmt.Sprintf("u%05d", k%users), Password: "bench-password", Device: fmt.Sprintf("d%06d", k),
					TLSConfig: tlsCfg, Credentials: creds, Mechanism: sdkproto.MechSCRAMSHA256,
					SourceIP: fmt.Sprintf("127.%d.%d.%d", 1+k/65000, (k/250)%250+1, k%250+1),
				}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				c, err := sdkproto.Dial(ctx, cfg)
				cancel()
				if err != nil {
					if failed.Add(1) < 5 {
						fmt.Fprintln(os.Stderr, "client:", err)
					}
					continue
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	fmt.Printf("ready %d %.3f %d\n", n, time.Since(start).Seconds(), failed.Load())
	if mode == "drain" {
		select {
		case <-allDrained:
			fmt.Printf("drained %.3f\n", time.Since(start).Seconds())
		case <-time.After(120 * time.Second):
			fmt.Printf("drained -1 %d\n", drained.Load())
		}
	}
	io.Copy(io.Discard, os.Stdin)
	if mode == "latency" {
		arrMu.Lock()
		for _, l := range arrivals {
			fmt.Println(l)
		}
		arrMu.Unlock()
		fmt.Println("end")
	}
	for _, c := range clients {
		if c != nil {
			c.Drop()
		}
	}
	return 0
}

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func memStats() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// BenchmarkIdleSessions opens TETHER_BENCH_SESSIONS (default 2,000)
// authenticated, bound sessions with initial presence from client
// processes (at most 9,000 each), spread over source addresses in
// 127.0.0.0/8, and reports the gateway's memory growth per session and the
// login rate (TCP + TLS 1.3 + SCRAM-SHA-256 with a cached salted password
// + bind + stream management + presence), per transport. b.N is ignored:
// run it with -benchtime 1x.
func BenchmarkIdleSessions(b *testing.B) {
	for _, tr := range []string{"tls", "websocket"} {
		b.Run(tr, func(b *testing.B) { benchIdleSessions(b, tr) })
	}
}

func benchIdleSessions(b *testing.B, transport string) {
	if os.Getenv("TETHER_BENCH_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, for an exact profile
		defer func() { runtime.MemProfileRate = 512 << 10 }()
	}
	n := benchEnvInt("TETHER_BENCH_SESSIONS", 2000)
	const perProc = 9000
	users := max(n/20, 1)
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) { c.Logger = zap.NewNop() }))
	app := g.App(b, "bench")
	ctx := context.Background()
	for u := range users {
		if _, err := app.PutUser(ctx, "bench", fmt.Sprintf("u%05d", u), api.PutUserRequest{Password: "bench-password"}); err != nil {
			b.Fatal(err)
		}
	}
	ms0 := memStats()
	heap0, stack0 := ms0.HeapInuse, ms0.StackInuse
	rss0 := rssBytes()
	gor0 := runtime.NumGoroutine()

	var procs []*exec.Cmd
	var stdins []io.WriteCloser
	var outs []*bufio.Reader
	for first := 0; first < n; first += perProc {
		cnt := min(perProc, n-first)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), clientsEnv+"=1",
			"TETHER_BENCH_N="+strconv.Itoa(cnt), "TETHER_BENCH_FIRST="+strconv.Itoa(first),
			"TETHER_BENCH_USERS="+strconv.Itoa(users), "TETHER_BENCH_CONCURRENCY=32",
			"TETHER_BENCH_TRANSPORT="+transport, "TETHER_BENCH_ADDR="+g.XMPPSAddr,
			"TETHER_BENCH_URL=ws://"+g.Addr("http")+sdkproto.WebSocketPath)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs, stdins, outs = append(procs, cmd), append(stdins, in), append(outs, bufio.NewReader(out))
	}
	defer func() {
		for i, p := range procs {
			stdins[i].Close()
			p.Wait()
		}
	}()
	start := time.Now()
	failed := 0
	for _, r := range outs {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("client process: %v", err)
		}
		var cnt, f int
		var secs float64
		fmt.Sscanf(line, "ready %d %f %d", &cnt, &secs, &f)
		failed += f
	}
	elapsed := time.Since(start)
	if failed > 0 {
		b.Fatalf("%d of %d sessions failed to log in", failed, n)
	}
	// Wait until every session is bound on the gateway.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		c := g.Sessions().Counts()
		if c["tls"]+c["websocket"]+c["starttls"] >= int64(n) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the session count
	}
	time.Sleep(2 * time.Second) // let acks and timers settle before measuring
	ms1 := memStats()
	heap1, stack1 := ms1.HeapInuse, ms1.StackInuse
	rss1 := rssBytes()
	if f := os.Getenv("TETHER_BENCH_HEAPPROFILE"); f != "" {
		if out, err := os.Create(f + "." + transport); err == nil {
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
	}
	gor1 := runtime.NumGoroutine()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "logins/s")
	b.ReportMetric(float64(int64(rss1)-int64(rss0))/float64(n), "RSS-B/session")
	b.ReportMetric(float64(int64(heap1)-int64(heap0))/float64(n), "heap-B/session")
	b.ReportMetric(float64(int64(stack1)-int64(stack0))/float64(n), "stack-B/session")
	// Free heap the runtime keeps mapped (the garbage collector's headroom,
	// returned to the OS only gradually), and the runtime's own structures.
	retained := func(ms runtime.MemStats) int64 { return int64(ms.HeapIdle - ms.HeapReleased) }
	other := func(ms runtime.MemStats) int64 { return int64(ms.Sys - ms.HeapSys - ms.StackSys) }
	b.ReportMetric(float64(retained(ms1)-retained(ms0))/float64(n), "heap-retained-B/session")
	b.ReportMetric(float64(other(ms1)-other(ms0))/float64(n), "runtime-B/session")
	b.ReportMetric(float64(gor1-gor0)/float64(n), "goroutines/session")
}

// clientProcs starts client processes for n devices (device k belongs to
// user k/10) and returns them with their stdin and stdout.
type clientProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startClientProcs(b *testing.B, g *gatewaytest.Gateway, n, users int, mode string, extra ...string) []clientProc {
	const perProc = 9000
	var procs []clientProc
	for first := 0; first < n; first += perProc {
		cnt := min(perProc, n-first)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), clientsEnv+"=1",
			"TETHER_BENCH_N="+strconv.Itoa(cnt), "TETHER_BENCH_FIRST="+strconv.Itoa(first),
			"TETHER_BENCH_USERS="+strconv.Itoa(users), "TETHER_BENCH_CONCURRENCY=32",
			"TETHER_BENCH_TRANSPORT=tls", "TETHER_BENCH_ADDR="+g.XMPPSAddr, "TETHER_BENCH_MODE="+mode)
		cmd.Env = append(cmd.Env, extra...)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, clientProc{cmd, in, bufio.NewReaderSize(out, 1<<16)})
	}
	b.Cleanup(func() {
		for _, p := range procs {
			p.in.Close()
			p.cmd.Wait()
		}
	})
	return procs
}

func waitReady(b *testing.B, procs []clientProc) {
	for _, p := range procs {
		line, err := p.out.ReadString('\n')
		if err != nil {
			b.Fatalf("client process: %v", err)
		}
		var cnt, failed int
		var secs float64
		fmt.Sscanf(line, "ready %d %f %d", &cnt, &secs, &failed)
		if failed > 0 {
			b.Fatalf("%d sessions failed to log in", failed)
		}
	}
}

func benchUsers(b *testing.B, app *api.Client, users int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				u := int(next.Add(1)) - 1
				if u >= users {
					return
				}
				if _, err := app.PutUser(ctx, "bench", fmt.Sprintf("u%05d", u), api.PutUserRequest{Password: "bench-password"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkDeliveryLatency connects TETHER_BENCH_DEVICES (default 2,000)
// devices over TLS, posts TETHER_BENCH_RATE (default 5,000) messages/s for
// TETHER_BENCH_SECONDS (default 5) through REST, each to one device, and
// reports the time from the POST's 202 to the message's arrival at the
// device (both clocks are this machine's). Run with -benchtime 1x.
func BenchmarkDeliveryLatency(b *testing.B) {
	n := benchEnvInt("TETHER_BENCH_DEVICES", 2000)
	rate := benchEnvInt("TETHER_BENCH_RATE", 5000)
	secs := benchEnvInt("TETHER_BENCH_SECONDS", 5)
	users := max(n/10, 1)
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) { c.Logger = zap.NewNop() }))
	app := g.App(b, "bench")
	benchUsers(b, app, users)
	procs := startClientProcs(b, g, n, users, "latency")
	waitReady(b, procs)

	total := rate * secs
	url := g.URL + "/v1/apps/bench/messages"
	c := benchClient(64)
	accepted := make(map[string]int64, total)
	var amu sync.Mutex
	var failed atomic.Int64
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		for time.Duration(i)*time.Second/time.Duration(rate) > time.Since(start) {
			time.Sleep(500 * time.Microsecond) // pacing the open-loop generator
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			k := (i * 7919) % n
			body := fmt.Appendf(nil, `{"to":["u%05d/d%06d"],"body":"m%d"}`, k%users, k, i)
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+app.Token)
			resp, err := c.Do(req)
			if err != nil {
				failed.Add(1)
				return
			}
			var sr api.SendResponse
			err = json.NewDecoder(resp.Body).Decode(&sr)
			resp.Body.Close()
			at := time.Now().UnixNano()
			if err != nil || resp.StatusCode != http.StatusAccepted {
				failed.Add(1)
				return
			}
			amu.Lock()
			accepted[sr.Messages[0].ID] = at
			amu.Unlock()
		})
	}
	wg.Wait()
	postRate := float64(total) / time.Since(start).Seconds()
	time.Sleep(2 * time.Second) // let the last messages arrive
	var lats []time.Duration
	seen := 0
	for _, p := range procs {
		p.in.Close()
		for {
			line, err := p.out.ReadString('\n')
			if err != nil || line == "end\n" {
				break
			}
			var id string
			var t int64
			fmt.Sscanf(line, "%s %d", &id, &t)
			if at, ok := accepted[id]; ok {
				seen++
				lats = append(lats, time.Duration(max(t-at, 0)))
			}
		}
	}
	b.ReportMetric(postRate, "posts/s")
	b.ReportMetric(float64(failed.Load()), "failed-posts")
	b.ReportMetric(float64(len(accepted)-seen), "not-arrived")
	b.ReportMetric(float64(percentile(lats, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lats, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(percentile(lats, 0.999).Microseconds())/1000, "p999-ms")
}

// BenchmarkReconnectDrain queues 10 messages for each of
// TETHER_BENCH_DEVICES (default 2,000) offline devices, then connects them
// all at once and reports the time until every device has its 10.
func BenchmarkReconnectDrain(b *testing.B) {
	n := benchEnvInt("TETHER_BENCH_DEVICES", 2000)
	const each = 10
	users := max(n/10, 1)
	g := gatewaytest.Start(b, gatewaytest.WithConfig(func(c *gateway.Config) { c.Logger = zap.NewNop() }))
	app := g.App(b, "bench")
	benchUsers(b, app, users)
	ctx := context.Background()
	for m := range each {
		for first := 0; first < n; first += 1000 {
			var to []string
			for k := first; k < min(first+1000, n); k++ {
				to = append(to, fmt.Sprintf("u%05d/d%06d", k%users, k))
			}
			if _, err := app.Send(ctx, "bench", api.SendRequest{To: to, Body: fmt.Sprintf("queued %d", m)}, ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	start := time.Now()
	procs := startClientProcs(b, g, n, users, "drain", "TETHER_BENCH_EXPECT="+strconv.Itoa(each))
	waitReady(b, procs)
	for _, p := range procs {
		line, err := p.out.ReadString('\n')
		if err != nil || strings.HasPrefix(line, "drained -1") {
			b.Fatalf("drain: %q %v", line, err)
		}
	}
	el := time.Since(start)
	b.ReportMetric(el.Seconds(), "drain-s")
	b.ReportMetric(float64(n*each)/el.Seconds(), "msgs/s")
}
