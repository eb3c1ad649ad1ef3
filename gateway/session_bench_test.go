package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
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
				cfg := sdkproto.Config{
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
	io.Copy(io.Discard, os.Stdin)
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

func heapStack() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
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
	heap0, stack0 := heapStack()
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
	heap1, stack1 := heapStack()
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
	b.ReportMetric(float64(gor1-gor0)/float64(n), "goroutines/session")
}
