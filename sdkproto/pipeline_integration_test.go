package sdkproto_test

import (
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/sdkproto"
)

// flightProxy forwards TCP connections to a gateway address and counts,
// per connection, the client's flights: runs of bytes from the client
// that follow bytes from the server (or open the connection). Each flight
// after the first waits for the server, so the count is the round trips
// the client spent, whatever TCP makes of the segments.
type flightProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration // added to every chunk in each direction (a link's latency)

	mu    sync.Mutex
	conns []*flightCount
}

type flightCount struct {
	mu         sync.Mutex
	flights    int
	fromClient bool // the last bytes seen came from the client
}

func newFlightProxy(t testing.TB, target string, oneWay time.Duration) *flightProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &flightProxy{ln: ln, target: target, oneWay: oneWay}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			fc := &flightCount{}
			p.mu.Lock()
			p.conns = append(p.conns, fc)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn, client bool) {
				type chunk struct {
					at time.Time
					b  []byte
				}
				delayed := make(chan chunk, 1024)
				wg.Go(func() { // writes each chunk oneWay after it was read, in order
					defer dst.Close()
					for c := range delayed {
						time.Sleep(time.Until(c.at))
						if _, err := dst.Write(c.b); err != nil {
							src.Close()
							for range delayed {
							}
							return
						}
					}
				})
				defer close(delayed)
				for {
					buf := make([]byte, 32<<10)
					n, err := src.Read(buf)
					if n > 0 {
						fc.mu.Lock()
						if client && !fc.fromClient {
							fc.flights++
						}
						fc.fromClient = client
						fc.mu.Unlock()
						delayed <- chunk{time.Now().Add(p.oneWay), buf[:n]}
					}
					if err != nil {
						return
					}
				}
			}
			wg.Go(func() { pipe(s, c, true) })
			wg.Go(func() { pipe(c, s, false) })
		}
	})
	return p
}

// viaProxy points cfg at a new flightProxy in front of the gateway's
// listener for cfg's transport.
func (lg *liveGateway) viaProxy(t testing.TB, cfg *sdkproto.Config, oneWay time.Duration) *flightProxy {
	if cfg.Transport == sdkproto.TransportWebSocket {
		p := newFlightProxy(t, strings.TrimPrefix(lg.g.URL, "http://"), oneWay)
		cfg.URL = "ws://" + p.ln.Addr().String() + sdkproto.WebSocketPath
		return p
	}
	p := newFlightProxy(t, cfg.Addr, oneWay)
	cfg.Addr = p.ln.Addr().String()
	return p
}

// last returns the client flights of the newest connection so far.
func (p *flightProxy) last() int {
	p.mu.Lock()
	fc := p.conns[len(p.conns)-1]
	p.mu.Unlock()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.flights
}

// TestGatewayPipelinedLogin: a client that negotiated with the gateway
// before sends its <auth/> with the stream header and its bind and enable
// (or its resume) with the authenticated stream's header, so reconnecting
// takes fewer round trips than the first login, and fewer than a client
// that does not pipeline; the gateway answers each pipelined element, and
// messages flow on the session.
func TestGatewayPipelinedLogin(t *testing.T) {
	lg := startGateway(t)
	lg.eachTransport(t, allTransports, "pipe-", func(t *testing.T, mode sdkproto.Transport, user string) {
		connect := func(pipelining bool) (first, fresh, resumed int) {
			cfg := lg.config(mode, user, "phone1")
			cfg.DisablePipelining = !pipelining
			cfg.Credentials = &sdkproto.CredentialCache{}
			p := lg.viaProxy(t, &cfg, 0)
			c, box := dialInbox(t, cfg)
			defer c.Close() // before the next connect takes the device
			first = p.last()

			c.Drop()
			require.NoError(t, c.Connect(ctxT(t)), "a fresh session (bind and enable)")
			fresh = p.last()
			id := lg.post(t, user, "after a fresh bind")
			require.Equal(t, id, box.next(t).ID)
			require.NotEmpty(t, c.SMID())
			// Acknowledged before the drop: a drop while the handler still
			// runs leaves it unacknowledged, and its redelivery on the
			// resumption would add a flight.
			lg.waitStatus(t, id, "delivered")

			// The message goes after the count: the device's answers to a
			// message waiting for the resumption (receipt, <a/>) would add
			// flights or not, depending on how fast it answers.
			c.Drop()
			mustResume(t, c, "resumed")
			resumed = p.last()
			id = lg.post(t, user, "after the resumption")
			require.Equal(t, id, box.next(t).ID)
			require.EqualValues(t, 1, c.Stats().Resumes)
			// Acknowledged before the close, else the next connect of the
			// device gets it again (at-least-once) before its own message.
			lg.waitStatus(t, id, "delivered")
			return first, fresh, resumed
		}
		first, fresh, resumed := connect(true)
		plainFirst, plainFresh, plainResumed := connect(false)
		t.Logf("client flights: first %d, fresh %d, resumed %d; without pipelining %d, %d, %d",
			first, fresh, resumed, plainFirst, plainFresh, plainResumed)
		require.LessOrEqual(t, fresh, plainFresh-2, "bind, enable and auth go with the stream headers")
		require.LessOrEqual(t, resumed, plainResumed-1, "resume and auth go with the stream headers")
		require.LessOrEqual(t, fresh, first-2, "the first login cannot pipeline")
	})
}

// BenchmarkReconnectOverRTT reconnects a device (a fresh bind, then a
// resumption, each after dropping the connection) over a link with a 50 ms
// round trip, as a woken phone on a mobile network does, with and without
// pipelining; ms/reconnect is the time from dialing to a ready session.
//
//	go test -run '^$' -bench ReconnectOverRTT -benchtime 20x ./sdkproto
func BenchmarkReconnectOverRTT(b *testing.B) {
	lg := startGateway(b)
	lg.user(b, "rtt")
	for _, mode := range allTransports {
		for _, pipelining := range []bool{false, true} {
			name := mode.String() + "/pipelining=" + map[bool]string{false: "off", true: "on"}[pipelining]
			b.Run(name, func(b *testing.B) {
				cfg := lg.config(mode, "rtt", "phone1")
				cfg.DisablePipelining = !pipelining
				cfg.Credentials = &sdkproto.CredentialCache{}
				cfg.TLSConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				lg.viaProxy(b, &cfg, 25*time.Millisecond)
				c, err := sdkproto.Dial(ctxT(b), cfg)
				require.NoError(b, err)
				defer c.Close()
				b.ResetTimer()
				for i := range b.N {
					c.Drop()
					if i%2 == 0 {
						require.NoError(b, c.Connect(ctxT(b)))
					} else {
						mustResume(b, c)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/reconnect")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
