package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tether/sdkproto"
)

// workerConfig is what a worker needs: its devices [First, First+Count)
// of the fleet, where the gateway is, and the behaviour shares.
type workerConfig struct {
	Index         int           `json:"index"`
	First         int           `json:"first"`
	Count         int           `json:"count"`
	Fleet         fleet         `json:"fleet"`
	App           string        `json:"app"`
	Password      string        `json:"password"`
	Addr          string        `json:"addr"`          // direct TLS
	StartTLSAddr  string        `json:"starttls_addr"` // STARTTLS
	WSURL         string        `json:"ws_url"`
	CAPEM         string        `json:"ca_pem"` // the gateway's certificate; "" skips verification
	LoginRate     float64       `json:"login_rate"`
	LoginConc     int           `json:"login_conc"`
	ReadShare     float64       `json:"read_share"`
	Churn         float64       `json:"churn"` // percent of online sessions per minute
	ResumeShare   float64       `json:"resume_share"`
	InboundRate   float64       `json:"inbound_rate"`
	ReportInbound bool          `json:"report_inbound"` // send the confirmed inbound messages' keys (-webhook)
	WakeDelayMin  time.Duration `json:"wake_delay_min"`
	WakeDelayMax  time.Duration `json:"wake_delay_max"`
	WakeQuiet     time.Duration `json:"wake_quiet"`
	OnlinePush    bool          `json:"online_push"`
	APNsTopic     string        `json:"apns_topic"`
	DumpDir       string        `json:"dump_dir"`    // where a sweep that finds stuck devices writes the worker's goroutines ("" none)
	CPUProfile    string        `json:"cpu_profile"` // where a worker process writes its CPU profile of the traffic phase ("" none)
}

// Device states, as the worker sees them.
const (
	stIdle       uint8 = iota // no client: offline (offline-share), or not logged in
	stConnecting              // a login is under way
	stUp                      // a session is up
	stDown                    // the client lost its session and reconnects by itself
	stClosing                 // the harness is closing or replacing the client
)

type device struct {
	k       int32
	name    string
	user    string
	tr      sdkproto.Transport
	off     bool // offline-share: connects only when woken or swept
	lastMsg atomic.Int64
	got     atomic.Int64 // messages received, redeliveries included
	rewake  atomic.Bool  // a wake came while the harness was closing the device
	// rcv is the kernel's receive time of the newest data the current
	// connection read (stamp_linux.go); nil: none, or not known.
	rcv atomic.Pointer[atomic.Int64]

	mu    sync.Mutex // guards below; taken before worker.mu
	c     *sdkproto.Client
	gen   uint32 // bumped for each client; callbacks of older ones are ignored
	state uint8
}

// worker holds a share of the devices' sessions. Its handle method never
// blocks; work runs on its own goroutines, every one ending by stopNow.
type worker struct {
	cfg    *workerConfig
	emit   func(*event)
	logw   io.Writer
	devs   []*device
	online []*device // the online-share devices
	creds  *sdkproto.CredentialCache
	tls    *tls.Config
	dial   chan struct{} // bounds concurrent logins

	mu      sync.Mutex // guards the batches and acc
	batchD  []delivery
	batchIn []string // inbound messages confirmed since the last flush (inboundKey)
	batchT  []transition
	acc     sdkproto.Stats // of clients already closed

	onlineN                                      atomic.Int64
	logins, loginFails, churnResume, churnFresh  atomic.Uint64
	resumed, rebound, wakeConns, wakeIgnored     atomic.Uint64
	rewakes                                      atomic.Uint64
	inboundOK, inboundFail, inboundSeq, logLines atomic.Uint64
	ramped, rampFailed                           atomic.Int64

	traffic     atomic.Bool
	trafficOnce sync.Once
	profMu      sync.Mutex
	profFile    *os.File        // the CPU profile being written, nil if none
	ctx         context.Context // cancelled when the worker stops
	cancel      context.CancelFunc
	stop        chan struct{}
	stopOnce    sync.Once
	stopped     chan struct{}
	bgMu        sync.Mutex     // orders goBG's Add before stop's Wait
	bg          sync.WaitGroup // loops and per-device goroutines
}

func newWorker(cfg *workerConfig, emit func(*event), logw io.Writer) (*worker, error) {
	if cfg.Count < 0 || cfg.First < 0 || cfg.First+cfg.Count > cfg.Fleet.N {
		return nil, fmt.Errorf("worker %d: devices [%d, %d) outside the fleet of %d", cfg.Index, cfg.First, cfg.First+cfg.Count, cfg.Fleet.N)
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// X25519 only, as most mobile TLS stacks offer today (the gateway
		// also takes Go's default hybrid X25519MLKEM768, at twice the cost).
		CurvePreferences:   []tls.CurveID{tls.X25519},
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
	if cfg.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(cfg.CAPEM)) {
			return nil, errors.New("no certificate in the gateway's CA PEM")
		}
		tc.RootCAs = pool
	} else {
		tc.InsecureSkipVerify = true // loopback only; -ca-file verifies
	}
	w := &worker{
		cfg: cfg, emit: emit, logw: logw,
		creds:   &sdkproto.CredentialCache{},
		tls:     tc,
		dial:    make(chan struct{}, max(cfg.LoginConc, 1)),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	f := &cfg.Fleet
	w.devs = make([]*device, cfg.Count)
	for i := range w.devs {
		k := cfg.First + i
		d := &device{k: int32(k), name: deviceName(k), user: userName(f.user(k)), tr: f.transport(k), off: f.isOffline(k)}
		w.devs[i] = d
		if !d.off {
			w.online = append(w.online, d)
		}
	}
	return w, nil
}

// handle runs one command without blocking.
func (w *worker) handle(c *command) {
	switch c.Op {
	case opInit:
		w.goBG(w.flusher)
		w.goBG(w.statusLoop)
		w.emit(&event{Ev: evReady})
	case opRamp:
		w.goBG(w.ramp)
	case opPhase:
		w.traffic.Store(c.Phase == "traffic")
		w.profilePhase(c.Phase)
		if c.Phase == "traffic" {
			w.trafficOnce.Do(func() {
				w.goBG(w.churnLoop)
				w.goBG(w.inboundLoop)
			})
		}
	case opWake:
		if d := w.device(c.K); d != nil {
			w.goBG(func() { w.woken(d) })
		}
	case opSweep:
		ks, ns := c.Ks, c.Ns
		w.goBG(func() { w.sweep(ks, ns) })
	case opStats:
		go func() {
			w.flush()
			st := w.sdkStats()
			w.emit(&event{Ev: evStats, Stats: &st})
		}()
	case opStop:
		go w.stopAll()
	}
}

// goBG runs f as a background goroutine that stopAll waits for; once the
// worker stops it runs nothing.
func (w *worker) goBG(f func()) {
	w.bgMu.Lock()
	defer w.bgMu.Unlock()
	if w.stopping() {
		return
	}
	w.bg.Add(1)
	go func() {
		defer w.bg.Done()
		f()
	}()
}

func (w *worker) device(k int32) *device {
	i := int(k) - w.cfg.First
	if i < 0 || i >= len(w.devs) {
		return nil
	}
	return w.devs[i]
}

func (w *worker) stopping() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// sleep waits d or until the worker stops; false if it stopped.
func (w *worker) sleep(d time.Duration) bool {
	if d <= 0 {
		return !w.stopping()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	}
}

func (w *worker) logf(format string, a ...any) {
	if w.logLines.Add(1) > 30 {
		return // enough to diagnose; counters tell the rest
	}
	fmt.Fprintf(w.logw, "loadtest worker %d: "+format+"\n", append([]any{w.cfg.Index}, a...)...)
}

// transitionLocked records device d going up or down; d.mu is held.
func (w *worker) transitionLocked(d *device, on bool) {
	now := time.Now().UnixNano()
	if on {
		w.onlineN.Add(1)
	} else {
		w.onlineN.Add(-1)
	}
	w.mu.Lock()
	w.batchT = append(w.batchT, transition{K: d.k, At: now, On: on})
	w.mu.Unlock()
}

// newClient makes a client for d's generation gen (not connected).
func (w *worker) newClient(d *device, gen uint32) (*sdkproto.Client, error) {
	cfg := sdkproto.Config{
		Transport: d.tr, App: w.cfg.App, User: d.user, Password: w.cfg.Password, Device: d.name,
		TLSConfig: w.tls, SourceIP: sourceIP(int(d.k)), Credentials: w.creds, Mechanism: sdkproto.MechSCRAMSHA256,
		AutoReconnect: true, ReconnectMin: 200 * time.Millisecond, ReconnectMax: 3 * time.Second,
	}
	switch d.tr {
	case sdkproto.TransportTLS:
		cfg.Addr = w.cfg.Addr
	case sdkproto.TransportStartTLS:
		cfg.Addr = w.cfg.StartTLSAddr
	case sdkproto.TransportWebSocket:
		cfg.URL = w.cfg.WSURL
	}
	cfg.WrapConn = func(nc net.Conn) net.Conn {
		nc, last := wrapStamp(nc)
		d.rcv.Store(last)
		return nc
	}
	var c *sdkproto.Client
	cfg.OnMessage = func(m *sdkproto.Message) { w.onMessage(d, c, m) }
	cfg.OnDisconnect = func(error) { w.onDisconnect(d, gen) }
	cfg.OnConnect = func(resumed bool) { w.onConnect(d, gen, resumed) }
	var err error
	c, err = sdkproto.New(cfg)
	return c, err
}

// msgData is what the generator puts in each message's data.
type msgData struct {
	TS  int64 `json:"ts"`
	Seq int64 `json:"seq"`
}

// parseMsgData reads a message's data as the generator writes it,
// {"ts":N,"seq":N}, without reflection; anything else goes through
// encoding/json (Seq -1 if it has none).
func parseMsgData(b []byte) msgData {
	if ts, rest, ok := cutUint(b, `{"ts":`); ok {
		if seq, rest, ok := cutUint(rest, `,"seq":`); ok && string(rest) == "}" {
			return msgData{TS: ts, Seq: seq}
		}
	}
	md := msgData{Seq: -1}
	_ = json.Unmarshal(b, &md)
	return md
}

// cutUint reads prefix and then a decimal number that fits an int64.
func cutUint(b []byte, prefix string) (int64, []byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0, nil, false
	}
	b = b[len(prefix):]
	var n uint64 // 19 digits fit
	i := 0
	for ; i < len(b) && i < 20 && '0' <= b[i] && b[i] <= '9'; i++ {
		n = n*10 + uint64(b[i]-'0')
	}
	if i == 0 || i > 19 || n > math.MaxInt64 {
		return 0, nil, false
	}
	return int64(n), b[i:], true
}

func (w *worker) onMessage(d *device, c *sdkproto.Client, m *sdkproto.Message) {
	now := time.Now().UnixNano()
	var rcv int64
	if p := d.rcv.Load(); p != nil {
		rcv = p.Load()
	}
	md := parseMsgData(m.Data)
	w.mu.Lock()
	w.batchD = append(w.batchD, delivery{K: d.k, ID: m.ID, Seq: md.Seq, TS: md.TS, At: now, Rcv: rcv, Off: d.off})
	w.mu.Unlock()
	d.lastMsg.Store(now)
	d.got.Add(1)
	c.Ack(m.ID) // XEP-0184 receipt; stream management acknowledges as well
	if w.cfg.ReadShare > 0 && rand.Float64() < w.cfg.ReadShare {
		c.MarkRead(m.ID)
	}
}

func (w *worker) onDisconnect(d *device, gen uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == gen && d.state == stUp {
		d.state = stDown
		w.transitionLocked(d, false)
	}
}

func (w *worker) onConnect(d *device, gen uint32, resumed bool) {
	d.mu.Lock()
	ok := d.gen == gen && d.state == stDown
	if ok {
		d.state = stUp
		w.transitionLocked(d, true)
	}
	d.mu.Unlock()
	if ok && resumed {
		w.resumed.Add(1)
	} else if ok {
		w.rebound.Add(1)
	}
}

// login connects d with a new client, retrying a few times; it reports
// whether d is up.
func (w *worker) login(d *device) bool {
	for attempt := range 5 {
		if w.stopping() {
			break
		}
		d.mu.Lock()
		d.gen++
		gen := d.gen
		d.state = stConnecting
		d.mu.Unlock()
		c, err := w.newClient(d, gen)
		if err != nil {
			w.logf("device %s: %v", d.name, err)
			break
		}
		select {
		case w.dial <- struct{}{}:
		case <-w.stop:
			c.Close()
			return false
		}
		ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		err = c.Connect(ctx)
		cancel()
		<-w.dial
		if err == nil {
			d.mu.Lock()
			if d.gen != gen || w.stopping() {
				d.mu.Unlock()
				c.Close()
				return false
			}
			d.c = c
			d.state = stUp
			d.lastMsg.Store(time.Now().UnixNano())
			w.transitionLocked(d, true)
			d.mu.Unlock()
			w.logins.Add(1)
			return true
		}
		c.Close()
		w.loginFails.Add(1)
		w.logf("login %s/%s (%s, attempt %d): %v", d.user, d.name, d.tr, attempt+1, err)
		if !w.sleep(time.Duration(250<<attempt)*time.Millisecond + rand.N(250*time.Millisecond)) {
			break
		}
	}
	d.mu.Lock()
	if d.state == stConnecting {
		d.state = stIdle
	}
	d.mu.Unlock()
	return false
}

// retire takes d's client away (marking d down if it was up) and closes it,
// dropping the connection first if drop.
func (w *worker) retire(d *device, drop bool) {
	d.mu.Lock()
	c := d.c
	if d.state == stUp {
		w.transitionLocked(d, false)
	}
	d.c = nil
	d.gen++
	d.state = stClosing
	d.mu.Unlock()
	if c != nil {
		if drop {
			c.Drop()
		}
		c.Close()
		w.addStats(c.Stats())
	}
	d.mu.Lock()
	if d.state == stClosing {
		d.state = stIdle
	}
	d.mu.Unlock()
}

func (w *worker) addStats(s sdkproto.Stats) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.acc.Received += s.Received
	w.acc.Duplicates += s.Duplicates
	w.acc.Sent += s.Sent
	w.acc.Reconnects += s.Reconnects
	w.acc.Resumes += s.Resumes
	w.acc.ResumeFailures += s.ResumeFailures
}

// ramp logs the online-share devices in at the configured rate.
func (w *worker) ramp() {
	defer func() {
		st := w.status()
		w.emit(&event{Ev: evRamped, Status: &st})
	}()
	if len(w.online) == 0 {
		return
	}
	interval := time.Duration(float64(time.Second) / w.cfg.LoginRate)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(w.cfg.LoginConc, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(w.online) || w.stopping() {
					return
				}
				if !w.sleep(time.Until(start.Add(time.Duration(i) * interval))) {
					return
				}
				d := w.online[i]
				if !w.login(d) {
					w.rampFailed.Add(1)
					continue
				}
				w.ramped.Add(1)
				if w.cfg.OnlinePush {
					w.registerPush(d)
				}
			}
		})
	}
	wg.Wait()
}

// registerPush registers d's token over XMPP (the offline-share devices
// got theirs through REST at setup).
func (w *worker) registerPush(d *device) {
	d.mu.Lock()
	c := d.c
	d.mu.Unlock()
	if c == nil {
		return
	}
	f := &w.cfg.Fleet
	prov := f.pushProvider(int(d.k))
	topic := ""
	if prov == "apns" {
		topic = w.cfg.APNsTopic
	}
	ctx, cancel := context.WithTimeout(w.ctx, 15*time.Second)
	defer cancel()
	if err := c.RegisterPush(ctx, prov, f.pushToken(int(d.k)), topic, ""); err != nil {
		w.logf("register push for %s: %v", d.name, err)
	}
}

// churnLoop drops the configured share of online sessions each second:
// some resume with stream management (the SDK reconnects by itself), the
// others are replaced by a fresh client after a pause, as an app killed and
// restarted.
func (w *worker) churnLoop() {
	if w.cfg.Churn <= 0 || len(w.online) == 0 {
		return
	}
	sem := make(chan struct{}, 256)
	perSec := w.cfg.Churn / 100 / 60 * float64(len(w.online))
	acc := 0.0
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.stop:
			return
		}
		if !w.traffic.Load() {
			continue
		}
		acc += perSec
		for ; acc >= 1; acc-- {
			d := w.online[rand.IntN(len(w.online))]
			d.mu.Lock()
			up := d.state == stUp
			d.mu.Unlock()
			if !up {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // 256 churns in flight: skip this one
			}
			w.goBG(func() {
				defer func() { <-sem }()
				w.churnOne(d)
			})
		}
	}
}

func (w *worker) churnOne(d *device) {
	if rand.Float64() < w.cfg.ResumeShare {
		d.mu.Lock()
		c := d.c
		if d.state != stUp || c == nil {
			d.mu.Unlock()
			return
		}
		d.state = stDown
		w.transitionLocked(d, false)
		d.mu.Unlock()
		w.churnResume.Add(1)
		c.Drop() // the SDK resumes after its backoff; onConnect marks it up
		return
	}
	w.churnFresh.Add(1)
	w.retire(d, true)
	if w.sleep(rand.N(time.Second)) {
		w.login(d)
	}
}

// inboundLoop sends device-to-backend messages from random online devices
// at the configured rate, each waiting for the gateway's receipt.
func (w *worker) inboundLoop() {
	if w.cfg.InboundRate <= 0 || len(w.online) == 0 {
		return
	}
	sem := make(chan struct{}, 64)
	acc := 0.0
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.stop:
			return
		}
		if !w.traffic.Load() {
			continue
		}
		acc += w.cfg.InboundRate / 10
		for ; acc >= 1; acc-- {
			d := w.online[rand.IntN(len(w.online))]
			d.mu.Lock()
			c := d.c
			up := d.state == stUp
			d.mu.Unlock()
			if !up || c == nil {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue
			}
			seq := w.inboundSeq.Add(1)
			w.goBG(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
				defer cancel()
				data := fmt.Appendf(nil, `{"inbound":%d,"worker":%d,"ts":%d}`, seq, w.cfg.Index, time.Now().UnixNano())
				id, err := c.Send(ctx, sdkproto.Outbound{Data: data, Body: "inbound " + strconv.FormatUint(seq, 10)})
				if err != nil {
					if !errors.Is(err, sdkproto.ErrClosed) && w.ctx.Err() == nil {
						w.inboundFail.Add(1)
					}
					return
				}
				w.inboundOK.Add(1)
				if w.cfg.ReportInbound {
					w.mu.Lock()
					w.batchIn = append(w.batchIn, inboundKey(d.user, d.name, id))
					w.mu.Unlock()
				}
			})
		}
	}
}

// woken handles a wake for d: an offline-share device connects after a
// random delay, takes its messages and disconnects once they stop coming.
func (w *worker) woken(d *device) {
	if !d.off {
		return // online-share devices reconnect by themselves
	}
	d.mu.Lock()
	switch d.state {
	case stIdle:
	case stClosing:
		// The gateway saw the device go before the close finished: like
		// an app that gets a push as it goes to sleep, wake up again.
		d.rewake.Store(true)
		d.mu.Unlock()
		return
	default:
		d.mu.Unlock()
		w.wakeIgnored.Add(1) // connecting or up: the messages come anyway
		return
	}
	d.state = stConnecting
	d.mu.Unlock()
	delay := w.cfg.WakeDelayMin
	if span := w.cfg.WakeDelayMax - w.cfg.WakeDelayMin; span > 0 {
		delay += rand.N(span)
	}
	if !w.sleep(delay) {
		return
	}
	if w.brief(d, 0) {
		w.wakeConns.Add(1)
	}
}

// The sweep's stay for a device (brief): it leaves after sweepQuiet
// without a message, or after sweepStay.
const (
	sweepQuiet = 5 * time.Second
	sweepStay  = 60 * time.Second
)

// brief connects d, waits until no message came for WakeQuiet (at most
// 30 s) and closes it cleanly, as a woken app does. For the sweep (want >
// 0, the messages d misses) it stays until want messages came, or none for
// sweepQuiet, at most sweepStay: at the end of a long run a thousand
// devices pull backlogs of hundreds of messages at once, and one device's
// messages come seconds apart.
func (w *worker) brief(d *device, want int) bool {
	if !w.login(d) {
		return false
	}
	start, got0 := time.Now(), d.got.Load()
	quiet, stay := w.cfg.WakeQuiet, 30*time.Second
	if want > 0 {
		quiet, stay = max(quiet, sweepQuiet), sweepStay
	}
	// Sleep until the quiet period would end, then look again (a message
	// meanwhile moved it): a woken device wakes about once per message,
	// not ten times a second (in the default soak's first minute some 400
	// woken devices are up at a time). The sweep also counts messages,
	// every 100 ms.
	for {
		now := time.Now()
		last := time.Unix(0, d.lastMsg.Load())
		if (want > 0 && d.got.Load()-got0 >= int64(want)) || now.Sub(last) >= quiet || now.Sub(start) >= stay {
			break
		}
		wait := min(last.Add(quiet).Sub(now), start.Add(stay).Sub(now))
		if want > 0 {
			wait = min(wait, 100*time.Millisecond)
		}
		if !w.sleep(wait) {
			break
		}
	}
	w.retire(d, false)
	if d.rewake.Swap(false) {
		w.rewakes.Add(1)
		w.goBG(func() { w.woken(d) })
	}
	return true
}

// stateName names a device state for the log.
func stateName(st uint8) string {
	switch st {
	case stIdle:
		return "idle"
	case stConnecting:
		return "connecting"
	case stUp:
		return "up"
	case stDown:
		return "reconnecting"
	case stClosing:
		return "closing"
	}
	return fmt.Sprint(st)
}

// sweep connects the given devices once more after the traffic: offline
// ones briefly, online ones whose client gave up are logged in afresh.
func (w *worker) sweep(ks, ns []int32) {
	defer w.emit(&event{Ev: evSwept})
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	var skipMu sync.Mutex
	var skipped []string
	for i, k := range ks {
		d := w.device(k)
		if d == nil || w.stopping() {
			continue
		}
		want := 1
		if i < len(ns) {
			want = max(1, int(ns[i]))
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d.mu.Lock()
			st, c := d.state, d.c
			d.mu.Unlock()
			switch {
			case d.off && st == stIdle:
				w.brief(d, want)
			case !d.off && st == stIdle:
				w.login(d)
			case !d.off && st == stDown && c != nil && !c.Connected():
				w.retire(d, false)
				w.login(d)
			default:
				// Left alone: it has a client that is up, reconnecting by
				// itself, or being opened or closed. Named, so that a
				// device stuck in one of these states shows in the log.
				connected := c != nil && c.Connected()
				skipMu.Lock()
				skipped = append(skipped, fmt.Sprintf("%s (%s, client connected %v)", deviceName(int(d.k)), stateName(st), connected))
				skipMu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(skipped) > 0 {
		if len(skipped) > 20 {
			skipped = append(skipped[:20], fmt.Sprintf("and %d more", len(skipped)-20))
		}
		w.logf("sweep: %d devices missing messages left as they were: %s", len(skipped), strings.Join(skipped, ", "))
		w.dumpGoroutines()
	}
}

// dumpGoroutines writes this worker process's goroutines, grouped by
// stack, to DumpDir: after the sweep finds devices stuck, it shows where
// their clients wait.
func (w *worker) dumpGoroutines() {
	if w.cfg.DumpDir == "" {
		return
	}
	path := filepath.Join(w.cfg.DumpDir, fmt.Sprintf("harness-goroutines-%d.txt", w.cfg.Index))
	f, err := os.Create(path)
	if err != nil {
		w.logf("sweep: %v", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("goroutine").WriteTo(f, 1); err != nil {
		w.logf("sweep: %v", err)
		return
	}
	w.logf("sweep: the harness's goroutines are in %s", path)
}

// flusher sends the deliveries and transitions every 100 ms.
func (w *worker) flusher() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.flush()
		case <-w.stop:
			return
		}
	}
}

func (w *worker) flush() {
	w.mu.Lock()
	d, tr, in := w.batchD, w.batchT, w.batchIn
	w.batchD, w.batchT, w.batchIn = nil, nil, nil
	w.mu.Unlock()
	if len(d) > 0 || len(tr) > 0 || len(in) > 0 {
		w.emit(&event{Ev: evBatch, D: d, T: tr, In: in})
	}
}

func (w *worker) statusLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			st := w.status()
			w.emit(&event{Ev: evStatus, Status: &st})
		case <-w.stop:
			return
		}
	}
}

func (w *worker) status() workerStatus {
	return workerStatus{
		Online: int(w.onlineN.Load()), Logins: w.logins.Load(), LoginFails: w.loginFails.Load(),
		ChurnResume: w.churnResume.Load(), ChurnFresh: w.churnFresh.Load(),
		Resumed: w.resumed.Load(), Rebound: w.rebound.Load(),
		WakeConns: w.wakeConns.Load(), WakeIgnored: w.wakeIgnored.Load(), Rewakes: w.rewakes.Load(),
		InboundOK: w.inboundOK.Load(), InboundFail: w.inboundFail.Load(),
		Ramped: int(w.ramped.Load()), RampFailed: int(w.rampFailed.Load()),
	}
}

// sdkStats sums the SDK's counters of every client, live or closed.
func (w *worker) sdkStats() workerStats {
	w.mu.Lock()
	s := w.acc
	w.mu.Unlock()
	for _, d := range w.devs {
		d.mu.Lock()
		c := d.c
		d.mu.Unlock()
		if c == nil {
			continue
		}
		cs := c.Stats()
		s.Received += cs.Received
		s.Duplicates += cs.Duplicates
		s.Sent += cs.Sent
		s.Reconnects += cs.Reconnects
		s.Resumes += cs.Resumes
		s.ResumeFailures += cs.ResumeFailures
	}
	return workerStats{Received: s.Received, Duplicates: s.Duplicates, Sent: s.Sent, Reconnects: s.Reconnects,
		Resumes: s.Resumes, ResumeFailures: s.ResumeFailures, Status: w.status()}
}

// stopAll ends the loops, closes every session cleanly (256 at a time),
// sends what is left and evStopped. It runs once; a second call waits for
// the first.
func (w *worker) stopAll() { w.stopOnce.Do(w.doStop) }

// profilePhase starts the worker's CPU profile (CPUProfile) when the
// traffic phase begins and stops it when any other phase does, so a
// profile shows what a delivery costs the clients and not their logins.
func (w *worker) profilePhase(phase string) {
	w.profMu.Lock()
	defer w.profMu.Unlock()
	if phase != "traffic" {
		if w.profFile != nil {
			pprof.StopCPUProfile()
			w.profFile.Close()
			w.profFile = nil
		}
		return
	}
	if w.cfg.CPUProfile == "" || w.profFile != nil {
		return
	}
	f, err := os.Create(w.cfg.CPUProfile)
	if err == nil {
		if err = pprof.StartCPUProfile(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		w.logf("cpuprofile: %v", err)
		return
	}
	w.profFile = f
}

func (w *worker) doStop() {
	w.profilePhase("stopped")
	w.bgMu.Lock()
	close(w.stop)
	w.bgMu.Unlock()
	w.cancel()
	w.bg.Wait()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, d := range w.devs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w.retire(d, false)
		})
	}
	wg.Wait()
	w.flush()
	st := w.sdkStats()
	w.emit(&event{Ev: evStopped, Stats: &st})
	close(w.stopped)
}

// stopNow stops the worker and waits for it (at most 30 s).
func (w *worker) stopNow() {
	select {
	case <-w.stopped:
		return
	default:
	}
	go w.stopAll()
	w.waitStopped()
}

func (w *worker) waitStopped() {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-w.stopped:
	case <-t.C:
	}
}
