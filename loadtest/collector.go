package main

import (
	"fmt"
	"hash/fnv"
	"math/bits"
	"strings"
	"sync"
	"time"
)

// collector keeps what the verdict and the report need: every accepted
// message with the devices it targets and the ones that got it, every
// delivery's latency, every device's online periods, every wake, and one
// row of figures per second. Its records hold no pointers (ids live in one
// byte arena, found through a map of their hashes), so millions of
// messages cost the garbage collector little. Safe for concurrent use.
type collector struct {
	mu sync.Mutex
	f  *fleet
	t0 time.Time // origin of the per-second series

	phase  string
	phases []mark
	kills  []mark
	steps  []mark // starts of the -rate-steps steps

	posts    []postRec // by POST sequence
	msgs     []msgRec
	byHash   map[uint64]uint32
	overflow map[string]uint32 // ids whose hash another id already has
	arena    []byte

	// pending holds deliveries of ids not accepted (yet): a device may get
	// a message before its POST's 202 reaches the generator; the rest are
	// from POSTs that failed, or phantoms.
	pending map[string][]delivery

	expected, seen  uint64 // (message, target device) pairs
	redelivered     uint64 // a device got an id again from a new session
	misrouted       uint64 // a device got a message not addressed to it
	mismatch        uint64 // a message's data did not match its POST
	idReused        uint64 // the gateway returned an id it had returned before
	badResponse     uint64 // a 202 whose recipients did not match the POST
	sweptDeliveries uint64 // first deliveries to offline devices during the sweep
	lastProgress    time.Time

	latOnline, latOffline hist
	// latSocket is latOnline up to the kernel's receive time at the
	// device's socket (stamp_linux.go), where that is known.
	latSocket hist
	latPost   hist // first attempt of a POST to its 202
	series    []secStat
	examples  map[string][]string

	trans    [][]int64 // per device: +t when it came up, -t when it went down (unix ns)
	lastRecv []int64   // per device: when it last received a message (unix ns)
	wakes    []wakeRec
	tokenToK map[string]int32
	unknownW uint64 // wakes for tokens of no device
}

type mark struct {
	Name string `json:"name"`
	At   int64  `json:"at"` // unix ns
}

// POST states.
const (
	postPending uint8 = iota
	postOK
	postFailed
)

type postRec struct {
	sent   int64 // unix ns of the first attempt
	n      uint16
	status uint8
}

// msgRec is one accepted message (one recipient entry of a POST).
type msgRec struct {
	want, seen uint64 // target devices of the user, by index k / Users
	sent       int64
	post       uint32
	user       int32
	idOff      uint32
	idLen      uint8
	expiring   bool
}

// recipient is one entry of a POST's "to": a user (dev -1: all its
// devices) or one device.
type recipient struct {
	user, dev int32
}

type wakeRec struct {
	at     int64
	k      int32
	status int16
	apns   bool
}

// secStat is one second of the run.
type secStat struct {
	postsOK, postsFail, accepted int
	delivered, redelivered       int
	wakes, wakesOffline          int
	sampleRow
	sampled bool
	lat     *hist // online devices' first deliveries
	sock    *hist // the same, up to the receive time at the socket, where known
	post    *hist // POSTs answered 202 this second: first attempt to 202
}

func newCollector(f *fleet, t0 time.Time) *collector {
	c := &collector{
		f: f, t0: t0, phase: "setup",
		byHash: map[uint64]uint32{}, overflow: map[string]uint32{},
		pending: map[string][]delivery{}, examples: map[string][]string{},
		trans: make([][]int64, f.N), lastRecv: make([]int64, f.N), tokenToK: make(map[string]int32, f.N),
		lastProgress: time.Now(),
	}
	for k := range f.N {
		c.tokenToK[f.pushToken(k)] = int32(k)
	}
	return c
}

// example keeps up to 10 examples per kind of problem; mu is held.
func (c *collector) example(kind, format string, a ...any) {
	if len(c.examples[kind]) < 10 {
		c.examples[kind] = append(c.examples[kind], fmt.Sprintf(format, a...))
	}
}

// secLocked returns the row for time t (unix ns); mu is held.
func (c *collector) secLocked(t int64) *secStat {
	i := int((t - c.t0.UnixNano()) / int64(time.Second))
	i = min(max(i, 0), 7*24*3600)
	for len(c.series) <= i {
		c.series = append(c.series, secStat{})
	}
	return &c.series[i]
}

func (c *collector) setPhase(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.phase = name
	c.phases = append(c.phases, mark{Name: name, At: time.Now().UnixNano()})
}

// addStep marks the start of a -rate-steps step.
func (c *collector) addStep(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps = append(c.steps, mark{Name: name, At: time.Now().UnixNano()})
}

// killMark names a kill -9 among the marks of kills and restarts.
const killMark = "kill -9"

func (c *collector) addKill(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kills = append(c.kills, mark{Name: name, At: time.Now().UnixNano()})
}

func idHash(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

func (c *collector) idOf(i uint32) string {
	m := &c.msgs[i]
	return string(c.arena[m.idOff : m.idOff+uint32(m.idLen)])
}

// lookupLocked returns the index of an accepted id, or -1.
func (c *collector) lookupLocked(id string) int {
	if i, ok := c.byHash[idHash(id)]; ok && c.idOf(i) == id {
		return int(i)
	}
	if i, ok := c.overflow[id]; ok {
		return int(i)
	}
	return -1
}

// newPost reserves POST sequence numbers' records; it returns the first.
func (c *collector) newPost(sent time.Time, n int) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts = append(c.posts, postRec{sent: sent.UnixNano(), n: uint16(n)})
	return uint32(len(c.posts) - 1)
}

// wantLocked returns the target mask of r.
func (c *collector) wantLocked(r recipient) uint64 {
	if r.dev >= 0 {
		return 1 << (uint(r.dev) / uint(c.f.Users))
	}
	n := c.f.devicesOf(int(r.user))
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// accept records a 202: one message per recipient, with the ids in order.
func (c *collector) accept(post uint32, recips []recipient, ids []string, expiring bool) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &c.posts[post]
	p.status = postOK
	lat := time.Duration(now - p.sent)
	c.latPost.add(lat)
	s := c.secLocked(now)
	if s.post == nil {
		s.post = new(hist)
	}
	s.post.add(lat)
	s.postsOK++
	s.accepted += len(ids)
	for i, r := range recips {
		id := ids[i]
		if len(id) == 0 || len(id) > 255 {
			c.badResponse++
			c.example("bad_response", "POST %d: id %q", post, id)
			continue
		}
		if j := c.lookupLocked(id); j >= 0 {
			c.idReused++
			c.example("id_reused", "id %s returned for POST %d and POST %d", id, c.msgs[j].post, post)
			continue
		}
		idx := uint32(len(c.msgs))
		want := c.wantLocked(r)
		c.msgs = append(c.msgs, msgRec{want: want, sent: p.sent, post: post, user: r.user,
			idOff: uint32(len(c.arena)), idLen: uint8(len(id)), expiring: expiring})
		c.arena = append(c.arena, id...)
		h := idHash(id)
		if _, taken := c.byHash[h]; taken {
			c.overflow[id] = idx
		} else {
			c.byHash[h] = idx
		}
		c.expected += uint64(bits.OnesCount64(want))
		if ds, ok := c.pending[id]; ok {
			delete(c.pending, id)
			for _, d := range ds {
				c.observeLocked(idx, d)
			}
		}
	}
}

// failPost records a POST that got no 202.
func (c *collector) failPost(post uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts[post].status = postFailed
	c.secLocked(time.Now().UnixNano()).postsFail++
}

// badPost records a 202 that does not match its POST.
func (c *collector) badPost(post uint32, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts[post].status = postFailed
	c.badResponse++
	c.example("bad_response", "POST %d: %s", post, why)
}

// deliveries records a worker's batch.
func (c *collector) deliveries(ds []delivery, ts []transition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		if d.K < 0 || int(d.K) >= c.f.N {
			c.misrouted++
			c.example("misrouted", "delivery to unknown device %d", d.K)
			continue
		}
		i := c.lookupLocked(d.ID)
		if i < 0 {
			c.pending[d.ID] = append(c.pending[d.ID], d)
			continue
		}
		c.observeLocked(uint32(i), d)
	}
	for _, t := range ts {
		if t.K < 0 || int(t.K) >= c.f.N {
			continue
		}
		v := t.At
		if !t.On {
			v = -v
		}
		c.trans[t.K] = append(c.trans[t.K], v)
	}
}

// observeLocked checks one delivery of accepted message i.
func (c *collector) observeLocked(i uint32, d delivery) {
	m := &c.msgs[i]
	k := int(d.K)
	if int32(c.f.user(k)) != m.user {
		c.misrouted++
		c.example("misrouted", "message %s for %s delivered to %s of %s", c.idOf(i), userName(int(m.user)), deviceName(k), userName(c.f.user(k)))
		return
	}
	bit := uint64(1) << (uint(k) / uint(c.f.Users))
	if m.want&bit == 0 {
		c.misrouted++
		c.example("misrouted", "message %s for one device of %s delivered to %s", c.idOf(i), userName(int(m.user)), deviceName(k))
		return
	}
	c.lastRecv[k] = max(c.lastRecv[k], d.At)
	if d.Seq != int64(m.post) {
		c.mismatch++
		c.example("payload_mismatch", "message %s of POST %d carried seq %d", c.idOf(i), m.post, d.Seq)
	}
	s := c.secLocked(d.At)
	if m.seen&bit != 0 {
		c.redelivered++
		s.redelivered++
		return
	}
	m.seen |= bit
	c.seen++
	c.lastProgress = time.Now()
	s.delivered++
	sent := m.sent
	if d.TS > 0 {
		sent = d.TS
	}
	lat := time.Duration(d.At - sent)
	if d.Off {
		c.latOffline.add(lat)
		if c.phase == "sweep" {
			c.sweptDeliveries++
		}
		return
	}
	c.latOnline.add(lat)
	if s.lat == nil {
		s.lat = new(hist)
	}
	s.lat.add(lat)
	if d.Rcv >= sent && d.Rcv <= d.At {
		sl := time.Duration(d.Rcv - sent)
		c.latSocket.add(sl)
		if s.sock == nil {
			s.sock = new(hist)
		}
		s.sock.add(sl)
	}
}

// wake records a push that reached a fake; it returns the device (-1 if
// the token is nobody's).
func (c *collector) wake(token string, at time.Time, status int, apns bool) int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.tokenToK[token]
	if !ok {
		c.unknownW++
		return -1
	}
	c.wakes = append(c.wakes, wakeRec{at: at.UnixNano(), k: k, status: int16(status), apns: apns})
	s := c.secLocked(at.UnixNano())
	s.wakes++
	if c.f.isOffline(int(k)) {
		s.wakesOffline++
	}
	return k
}

// sampleRow is what the sampler measures each second outside the
// collector.
type sampleRow struct {
	online, gwSessions, gor int     // gwSessions and gor -1: unknown
	inbound                 uint64  // cumulative, from the workers
	rss                     float64 // the gateway's, bytes
	cpu, harnessCPU         float64 // % of one core
	// Threads waiting for a CPU on the kernel's run queue, on average over
	// the second (runqueue.go); -1: unknown.
	gwWaiting, harnessWaiting float64
	// The gateway's handler timings of the send route so far, over all
	// its processes (storehist.go); empty when not read.
	send promHist
}

// sample records the per-second figures measured outside the collector.
func (c *collector) sample(at time.Time, row sampleRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.secLocked(at.UnixNano())
	s.sampleRow, s.sampled = row, true
}

// progress is a snapshot for the progress line.
type progress struct {
	accepted, failedPosts, expected, seen, redelivered, wakes int
	p50, p99                                                  time.Duration
	sinceProgress                                             time.Duration
}

// snapshot sums the series from second from (inclusive) on.
func (c *collector) snapshot(from int) progress {
	c.mu.Lock()
	defer c.mu.Unlock()
	var p progress
	var h hist
	for i, s := range c.series {
		p.accepted += s.accepted
		p.failedPosts += s.postsFail
		p.wakes += s.wakes
		if i >= from && s.lat != nil {
			h.merge(s.lat)
		}
	}
	p.expected, p.seen, p.redelivered = int(c.expected), int(c.seen), int(c.redelivered)
	p.p50, p.p99 = h.quantile(0.5), h.quantile(0.99)
	p.sinceProgress = time.Since(c.lastProgress)
	return p
}

// missing returns the accepted messages some target has not got, with the
// mask of those targets, and the devices concerned with how many each misses.
func (c *collector) missing() (idx []uint32, masks []uint64, devices map[int32]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	devices = map[int32]int{}
	for i := range c.msgs {
		m := &c.msgs[i]
		if miss := m.want &^ m.seen; miss != 0 {
			idx = append(idx, uint32(i))
			masks = append(masks, miss)
			c.countDevices(devices, m.user, miss)
		}
	}
	return idx, masks, devices
}

// sweepable returns the devices missing an accepted message that may still
// come, with how many each misses: all but the short-lived ones
// (-expire-in) whose POST was first sent before expiredBefore (unix ns),
// which the gateway has expired and no connection brings; their final
// state is checked at the end.
func (c *collector) sweepable(expiredBefore int64) map[int32]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	devices := map[int32]int{}
	for i := range c.msgs {
		m := &c.msgs[i]
		if !m.expiring || m.sent >= expiredBefore {
			c.countDevices(devices, m.user, m.want&^m.seen)
		}
	}
	return devices
}

// countDevices adds one to the count of each device of user named by mask
// (bit j: device user + j*Users).
func (c *collector) countDevices(counts map[int32]int, user int32, mask uint64) {
	for b := mask; b != 0; b &= b - 1 {
		counts[int32(int(user)+bits.TrailingZeros64(b)*c.f.Users)]++
	}
}

// timeline describes device k for a loss report: its kind, its last
// connections and wakes (seconds from the origin of the series), and when
// it last received a message.
func (c *collector) timeline(k int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kind := "online"
	if c.f.isOffline(k) {
		kind = "offline"
	}
	at := func(ns int64) string { return fmt.Sprintf("%+.1fs", time.Duration(ns-c.t0.UnixNano()).Seconds()) }
	var ups []string
	tr := c.trans[k]
	for _, v := range tr[max(0, len(tr)-8):] {
		if v > 0 {
			ups = append(ups, "up "+at(v))
		} else {
			ups = append(ups, "down "+at(-v))
		}
	}
	var wakes []string
	n := 0
	for _, w := range c.wakes {
		if int(w.k) == k {
			n++
			wakes = append(wakes, at(w.at))
		}
	}
	wakes = wakes[max(0, len(wakes)-4):]
	last := "never"
	if t := c.lastRecv[k]; t != 0 {
		last = at(t)
	}
	conns := "never connected"
	if len(tr) > 0 {
		conns = fmt.Sprintf("%d ups and downs, the last %s", len(tr), strings.Join(ups, ", "))
	}
	woken := "no wakes"
	if n > 0 {
		woken = fmt.Sprintf("%d wakes, the last at %s", n, strings.Join(wakes, ", "))
	}
	return fmt.Sprintf("%s (%s, %s): %s; %s; last message received %s",
		deviceName(k), kind, c.f.transport(k), conns, woken, last)
}
