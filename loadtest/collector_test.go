package main

import (
	"strings"
	"testing"
	"time"
)

// testFleet has 10 devices of 5 users: user u owns devices u and u+5.
func testFleet(offline float64) *fleet {
	return &fleet{N: 10, Users: 5, Seed: 1, TLS: 1, Offline: offline, RunID: "t"}
}

func TestCollectorDeliveries(t *testing.T) {
	now := time.Now()
	c := newCollector(testFleet(0), now)
	at := func(ms int) int64 { return now.Add(time.Duration(ms) * time.Millisecond).UnixNano() }

	p := c.newPost(now, 2)
	recips := []recipient{{user: 1, dev: -1}, {user: 2, dev: 7}}
	// A delivery can beat its POST's 202 to the collector.
	c.deliveries([]delivery{{K: 7, ID: "b", Seq: int64(p), TS: now.UnixNano(), At: at(3), Rcv: at(1)}}, nil)
	if c.seen != 0 || len(c.pending) != 1 {
		t.Fatalf("before the 202: seen %d, pending %d", c.seen, len(c.pending))
	}
	c.accept(p, recips, []string{"a", "b"}, false)
	if c.expected != 3 || c.seen != 1 || len(c.pending) != 0 {
		t.Fatalf("after the 202: expected %d (want 3), seen %d (want 1), pending %d", c.expected, c.seen, len(c.pending))
	}
	c.deliveries([]delivery{
		{K: 1, ID: "a", Seq: int64(p), TS: now.UnixNano(), At: at(2), Rcv: at(-1)}, // a receive time before the send: not the message's
		{K: 6, ID: "a", Seq: int64(p), TS: now.UnixNano(), At: at(4), Rcv: at(5)},  // nor one after the read
		{K: 1, ID: "a", Seq: int64(p), TS: now.UnixNano(), At: at(9)},              // again, from a new session
	}, []transition{{K: 1, At: at(1), On: true}})
	if c.seen != 3 || c.redelivered != 1 {
		t.Fatalf("seen %d (want 3), redelivered %d (want 1)", c.seen, c.redelivered)
	}
	if idx, _, devs := c.missing(); len(idx) != 0 || len(devs) != 0 {
		t.Fatalf("missing %v %v, want none", idx, devs)
	}
	// Wrong user, wrong device of the right user, wrong data.
	c.deliveries([]delivery{
		{K: 2, ID: "a", Seq: int64(p), At: at(5)},
		{K: 2, ID: "b", Seq: int64(p), At: at(5)},
	}, nil)
	if c.misrouted != 2 {
		t.Fatalf("misrouted %d, want 2", c.misrouted)
	}
	p2 := c.newPost(now, 1)
	c.accept(p2, []recipient{{user: 3, dev: -1}}, []string{"c"}, true)
	c.deliveries([]delivery{{K: 3, ID: "c", Seq: 999, At: at(6)}}, nil)
	if c.mismatch != 1 {
		t.Fatalf("mismatch %d, want 1", c.mismatch)
	}
	idx, masks, devs := c.missing()
	if len(idx) != 1 || masks[0] != 0b10 || devs[8] != 1 || len(devs) != 1 {
		t.Fatalf("missing %v %v %v; want message c for device 8", idx, masks, devs)
	}
	// c is short-lived: worth a sweep until it has expired, not after.
	if sw := c.sweepable(now.Add(-time.Second).UnixNano()); len(sw) != 1 || sw[8] != 1 {
		t.Fatalf("sweepable before c expired: %v, want device 8", sw)
	}
	if sw := c.sweepable(now.Add(time.Second).UnixNano()); len(sw) != 0 {
		t.Fatalf("sweepable after c expired: %v, want none", sw)
	}
	// The same id in a second answer.
	p3 := c.newPost(now, 1)
	c.accept(p3, []recipient{{user: 4, dev: 4}}, []string{"a"}, false)
	if c.idReused != 1 {
		t.Fatalf("idReused %d, want 1", c.idReused)
	}
	// A loss report's account of device 1: one connection, its last
	// message (the repeat at 9 ms), no wakes.
	c.deliveries(nil, []transition{{K: 1, At: at(1500), On: false}})
	if got, want := c.timeline(1), "d000001 (online, tls): 2 ups and downs, the last up +0.0s, down +1.5s; no wakes; last message received +0.0s"; got != want {
		t.Errorf("timeline:\n got %s\nwant %s", got, want)
	}
	if got := c.timeline(9); !strings.Contains(got, "never connected; no wakes") || !strings.HasSuffix(got, "last message received never") {
		t.Errorf("timeline of a device never seen: %s", got)
	}
	// a, a, b and c (without send time in its data: from the POST's).
	if c.latOnline.n != 4 || c.latOnline.quantile(1) > 7*time.Millisecond || c.latOnline.quantile(0) < 2*time.Millisecond {
		t.Errorf("latency: %d samples from %v to %v; want 4 from 2ms to 6ms", c.latOnline.n, c.latOnline.quantile(0), c.latOnline.quantile(1))
	}
	// Up to the socket: b's alone (1 ms), the others' receive times being
	// unknown or impossible.
	if q := c.latSocket.quantile(0.5); c.latSocket.n != 1 || q < time.Millisecond || q > 1100*time.Microsecond {
		t.Errorf("latency at the socket: %d samples, median %v; want 1 of 1ms", c.latSocket.n, q)
	}
}

func TestCollectorHashCollisionsStayExact(t *testing.T) {
	c := newCollector(testFleet(0), time.Now())
	p := c.newPost(time.Now(), 1)
	c.accept(p, []recipient{{user: 0, dev: 0}}, []string{"first"}, false)
	// Force a collision: file another id under the same hash.
	h := idHash("first")
	c.byHash[h] = 0
	c.msgs = append(c.msgs, msgRec{want: 1, user: 0, idOff: uint32(len(c.arena)), idLen: uint8(len("second"))})
	c.arena = append(c.arena, "second"...)
	c.overflow["second"] = 1
	if c.lookupLocked("first") != 0 || c.lookupLocked("second") != 1 || c.lookupLocked("third") != -1 {
		t.Fatalf("lookup: %d %d %d", c.lookupLocked("first"), c.lookupLocked("second"), c.lookupLocked("third"))
	}
}

func TestClassifyPending(t *testing.T) {
	c := newCollector(testFleet(0), time.Now())
	ok := c.newPost(time.Now(), 1)
	c.accept(ok, []recipient{{user: 0, dev: 0}}, []string{"x"}, false)
	bad := c.newPost(time.Now(), 1)
	c.failPost(bad)
	c.deliveries([]delivery{
		{K: 0, ID: "y", Seq: int64(ok)},  // an id the 202 did not name, with its POST's data
		{K: 0, ID: "z", Seq: int64(bad)}, // from a POST that got no 202
		{K: 0, ID: "w", Seq: -1},         // not the generator's
	}, nil)
	phantom, unaccepted, foreign := c.classifyPendingLocked()
	if phantom != 1 || unaccepted != 1 || foreign != 1 {
		t.Fatalf("phantom %d unaccepted %d foreign %d; want 1 each", phantom, unaccepted, foreign)
	}
	if ex := c.examples["phantom"]; len(ex) != 1 || !strings.Contains(ex[0], "y") {
		t.Errorf("phantom examples %v", ex)
	}
}

func TestWakeCheck(t *testing.T) {
	base := time.Now()
	sec := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	for _, offline := range []float64{0, 1} {
		f := testFleet(offline)
		r := &runner{cfg: &config{wakeGrace: time.Second}, f: f, col: newCollector(f, base)}
		// Device 3 is up from 10 s to 20 s.
		r.col.deliveries(nil, []transition{{K: 3, At: sec(20).UnixNano()}, {K: 3, At: sec(10).UnixNano(), On: true}})
		tok := f.pushToken(3)
		for _, s := range []float64{5, 10.5, 15, 25} {
			r.col.wake(tok, sec(s), 200, true)
		}
		r.col.wake("nobody", sec(1), 200, false)
		r.col.wake(tok, sec(30), 503, true) // not accepted: not a wake
		ch := &checks{Examples: map[string][]string{}}
		r.wakeCheck(ch)
		w := ch.Wakes
		if w.ToOnline != 1 || w.RacedConnect != 1 || w.Unknown != 1 || w.Accepted != 4 || w.Total != 6 {
			t.Errorf("offline %v: %+v; want 1 to online (15 s), 1 raced (10.5 s), 1 unknown", offline, w)
		}
		if offline == 1 && (w.ToOffline != 2 || w.PerDeviceMax != 2 || w.Woken != 1 || w.OfflineDevices != 10) {
			t.Errorf("offline devices: %+v", w)
		}
		if offline == 0 && w.ToDisconnected != 2 {
			t.Errorf("online devices: %+v; want 2 wakes while disconnected", w)
		}
		if w.MaxInHour != 4 || w.OverCap != 0 {
			t.Errorf("hourly: max %d, over cap %d", w.MaxInHour, w.OverCap)
		}
		if len(ch.Examples["wake_to_online"]) != 1 {
			t.Errorf("examples %v", ch.Examples)
		}
	}
}

// A message without a short expiry is worth a sweep however old it is.
func TestCollectorSweepable(t *testing.T) {
	now := time.Now()
	c := newCollector(testFleet(0), now)
	p := c.newPost(now, 2)
	c.accept(p, []recipient{{user: 0, dev: -1}, {user: 1, dev: 6}}, []string{"x", "y"}, false)
	q := c.newPost(now, 1)
	c.accept(q, []recipient{{user: 2, dev: -1}}, []string{"z"}, true)
	c.deliveries([]delivery{{K: 0, ID: "x", Seq: int64(p), TS: now.UnixNano(), At: now.UnixNano()}}, nil)
	sw := c.sweepable(now.Add(time.Hour).UnixNano())
	if len(sw) != 2 || sw[5] != 1 || sw[6] != 1 {
		t.Fatalf("sweepable %v, want devices 5 (x) and 6 (y), one message each, not 2 and 7 (z expired)", sw)
	}
	// A second message to user 1's device 6 counts twice.
	r := c.newPost(now, 1)
	c.accept(r, []recipient{{user: 1, dev: 6}}, []string{"w"}, false)
	if sw := c.sweepable(now.Add(time.Hour).UnixNano()); sw[6] != 2 || sw[5] != 1 {
		t.Fatalf("sweepable %v, want device 6 missing 2 messages", sw)
	}
}
