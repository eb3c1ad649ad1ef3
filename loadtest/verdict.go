package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"tether/gateway/api"
)

// checks are the results of the end-of-run checks.
type checks struct {
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures"`
	// Warnings are findings that do not fail the run.
	Warnings []string `json:"warnings"`

	Expected  uint64 `json:"expected_deliveries"` // (accepted message, target device) pairs
	Delivered uint64 `json:"delivered"`           // pairs seen at least once
	// FinalStates counts pairs not seen whose message or device status is
	// final (expired, cancelled, collapsed, fallback_*), by status.
	FinalStates map[string]uint64 `json:"final_states"`
	Lost        uint64            `json:"lost"`       // pairs neither seen nor final
	Unverified  uint64            `json:"unverified"` // pairs whose status could not be read (counted as lost)

	// Redeliveries: raw repeats of an id. The SDK drops the ones within
	// its window (SDKDuplicates); a new client (a fresh login after a
	// drop, a woken device's next connection) sees older ids again, which
	// the harness drops by id (CrossSession). Neither is a failure.
	SDKDuplicates uint64 `json:"redeliveries_sdk"`
	CrossSession  uint64 `json:"redeliveries_cross_session"`

	Misrouted   uint64 `json:"misrouted"`        // delivered to a device it was not for
	Mismatch    uint64 `json:"payload_mismatch"` // data not the POST's
	Phantom     uint64 `json:"phantom"`          // an id the POST's 202 did not name, with that POST's data: a visible duplicate
	IDReused    uint64 `json:"id_reused"`        // one id in two answers
	BadResponse uint64 `json:"bad_responses"`    // a 202 not matching its POST
	// DeliveredUnaccepted are deliveries of POSTs that got no 202 (the
	// gateway was killed after committing): allowed.
	DeliveredUnaccepted uint64 `json:"delivered_unaccepted"`
	Foreign             uint64 `json:"foreign"` // messages without the generator's data

	Wakes wakeChecks `json:"wakes"`
	// Webhook: the inbound messages against what the backend's webhook
	// got (-webhook).
	Webhook *webhookChecks `json:"webhook,omitempty"`

	Examples map[string][]string `json:"examples,omitempty"`
}

// wakeChecks are the wake figures: every push that reached a fake,
// matched against the device's online periods as the harness saw them.
type wakeChecks struct {
	Total    uint64 `json:"total"`
	Accepted uint64 `json:"accepted"` // answered 200
	// ToOffline are wakes to offline-share devices while not connected;
	// ToDisconnected wakes to online-share devices during a gap (a
	// reconnection, the gateway's restart).
	ToOffline      uint64 `json:"to_offline_devices"`
	ToDisconnected uint64 `json:"to_disconnected_online_devices"`
	// ToOnline are wakes to a device whose session had been up for more
	// than -wake-grace: must be 0. RacedConnect came within the grace.
	ToOnline     uint64 `json:"to_online_devices"`
	RacedConnect uint64 `json:"raced_connect"`
	// ToOnlineAfterRestart are the wakes to online devices within 15 s of
	// the gateway coming back from a kill -9 (a backlog of wakes decided
	// while the devices were still away); LateMaxMs is the longest a
	// device had been up when a wake reached it (racing or not).
	ToOnlineAfterRestart uint64  `json:"to_online_after_restart"`
	LateMaxMs            float64 `json:"late_max_ms"`
	Unknown              uint64  `json:"unknown_token"`
	// Per offline-share device.
	OfflineDevices int     `json:"offline_devices"`
	Woken          int     `json:"offline_devices_woken"`
	PerDeviceMin   int     `json:"per_offline_device_min"`
	PerDeviceMean  float64 `json:"per_offline_device_mean"`
	PerDeviceMax   int     `json:"per_offline_device_max"`
	// MaxInHour is the most wakes one device got within any hour;
	// OverCap how many devices got more than the gateway's hourly cap
	// (SPEC section 5: 10 in alert mode, which the harness's app uses).
	MaxInHour int `json:"max_per_device_in_an_hour"`
	OverCap   int `json:"devices_over_hourly_cap"`
}

// wakeHourlyCap is the gateway's per-device cap for alert-mode wakes.
const wakeHourlyCap = 10

var finalStatuses = map[string]bool{"expired": true, "cancelled": true, "collapsed": true, "fallback_sent": true, "fallback_failed": true}

// verdict runs the checks (the gateway must still be up for the REST
// status checks).
func (r *runner) verdict() *checks {
	ch := &checks{FinalStates: map[string]uint64{}, Examples: map[string][]string{}}
	fail := func(format string, a ...any) { ch.Failures = append(ch.Failures, fmt.Sprintf(format, a...)) }
	r.mu.Lock()
	for _, p := range r.problems {
		fail("%s", p)
	}
	for _, s := range r.wstats {
		if s != nil {
			ch.SDKDuplicates += s.Duplicates
		}
	}
	r.mu.Unlock()
	if r.tgt != nil && r.tgt.local != nil {
		for _, c := range r.tgt.local.crashList() {
			fail("%s", c)
		}
	}
	if r.aborted != "" {
		fail("%s", r.aborted)
	}
	if r.col == nil {
		ch.Pass = false
		return ch
	}
	r.statusChecks(ch)
	c := r.col
	c.mu.Lock()
	ch.Expected, ch.Delivered = c.expected, c.seen
	ch.CrossSession = c.redelivered
	ch.Misrouted, ch.Mismatch, ch.IDReused, ch.BadResponse = c.misrouted, c.mismatch, c.idReused, c.badResponse
	ch.Phantom, ch.DeliveredUnaccepted, ch.Foreign = c.classifyPendingLocked()
	for k, v := range c.examples {
		ch.Examples[k] = v
	}
	postP50 := c.latPost.quantile(0.5)
	c.mu.Unlock()
	r.wakeCheck(ch)
	if r.wh != nil {
		r.mu.Lock()
		wc := r.wh.check(r.inbound)
		r.mu.Unlock()
		ch.Webhook = &wc
		if wc.Lost > 0 {
			fail("%d of %d inbound messages confirmed to their devices never reached the backend's webhook", wc.Lost, wc.Confirmed)
		}
		if wc.Twice > 0 {
			fail("%d inbound messages reached the backend twice (under two event ids)", wc.Twice)
		}
	}

	if r.cfg.rate > 0 && ch.Expected == 0 && r.aborted == "" {
		fail("no message was accepted")
	}
	if ch.Lost > 0 {
		fail("%d of %d deliveries lost (%d of them unverified)", ch.Lost, ch.Expected, ch.Unverified)
	}
	for _, x := range []struct {
		n    uint64
		what string
	}{{ch.Misrouted, "misrouted deliveries"}, {ch.Mismatch, "deliveries whose data did not match their POST"},
		{ch.Phantom, "visible duplicates (ids the POST's answer did not name)"}, {ch.IDReused, "ids returned twice"},
		{ch.BadResponse, "202 answers not matching their POST"}} {
		if x.n > 0 {
			fail("%d %s", x.n, x.what)
		}
	}
	if w := ch.Wakes; w.ToOnline > 0 {
		fail("%d wakes to online devices (up for more than -wake-grace %v, at most %.0f ms; %d of them within 15 s of a restart after kill -9)",
			w.ToOnline, r.cfg.wakeGrace, w.LateMaxMs, w.ToOnlineAfterRestart)
	}
	if w := ch.Wakes; w.OverCap > 0 {
		why := "the gateway keeps each device's wake times of the last hour, in the store too"
		if len(r.downtimes) > 0 {
			why = "a kill -9 loses the wake times the gateway had not written to the store yet"
		}
		ch.Warnings = append(ch.Warnings, fmt.Sprintf("%d devices got more than %d wakes within an hour (at most %d): over SPEC section 5's hourly cap? (%s)",
			w.OverCap, wakeHourlyCap, w.MaxInHour, why))
	}
	if w := r.saturation(); w != "" {
		ch.Warnings = append(ch.Warnings, w)
	}
	if g := r.gen; g != nil {
		if w := lagWarning(g.offered.Load(), g.skipped.Load(), r.cfg.postConns, postP50); w != "" {
			ch.Warnings = append(ch.Warnings, w)
		}
	}
	if st := storeSummary(r.store0, r.store1); st != nil && st.LSM != nil {
		if l := st.LSM; l.WriteStalls > 0 {
			ch.Warnings = append(ch.Warnings, fmt.Sprintf("the gateway's store held its commits %.0f times for %.1fs in all (write stalls): its flushes and compactions did not keep up with the writes, and every POST waited; see the store line, and the disk's throughput",
				l.WriteStalls, l.WriteStallS))
		}
		if l := st.LSM; l.BadSingleDels > 0 {
			fail("the gateway's store met %.0f single deletes of keys written more than once (tether_store_bad_single_deletes_total): such a key may come back", l.BadSingleDels)
		}
	}
	if slo := r.cfg.sloP99; slo > 0 && len(r.cfg.rateSteps) == 0 { // with steps it picks the capacity
		if p99 := c.latOnline.quantile(0.99); p99 > slo {
			fail("end-to-end p99 %.1fms over -slo-p99 %v", ms(p99), slo)
		}
	}
	ch.Pass = len(ch.Failures) == 0
	return ch
}

// statusChecks reads the REST status of every message a target did not
// get, and classifies each such pair as final or lost.
func (r *runner) statusChecks(ch *checks) {
	idx, masks, _ := r.col.missing()
	if len(idx) == 0 {
		return
	}
	type job struct {
		id   string
		mask uint64
		m    msgRec
	}
	jobs := make([]job, 0, len(idx))
	r.col.mu.Lock()
	for i, x := range idx {
		jobs = append(jobs, job{id: r.col.idOf(x), mask: masks[i], m: r.col.msgs[x]})
	}
	r.col.mu.Unlock()
	var mu sync.Mutex
	lostDevs := map[int]bool{}
	lost := func(j job, k int, why string) {
		ch.Lost++
		if len(lostDevs) < 3 {
			lostDevs[k] = true
		}
		if len(ch.Examples["lost"]) < 10 {
			ch.Examples["lost"] = append(ch.Examples["lost"], fmt.Sprintf("message %s (POST %d, %s) to %s: %s",
				j.id, j.m.post, time.Unix(0, j.m.sent).Format("15:04:05.000"), deviceName(k), why))
		}
	}
	cl := newAPIClient(r.tgt.baseURL, r.tgt.adminToken, 32, r.tgt.caPEM)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	now := time.Now()
	// The checks get two minutes in all, even after the deadline (not
	// after a signal): what is left is unverified.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 2*time.Minute)
	defer cancel()
	if errors.Is(r.ctx.Err(), context.Canceled) {
		cancel()
	}
	for n, j := range jobs {
		if n >= r.cfg.checkMax || ctx.Err() != nil {
			mu.Lock()
			for b := j.mask; b != 0; b &= b - 1 {
				ch.Unverified++
				lost(j, int(j.m.user)+bits.TrailingZeros64(b)*r.f.Users, "not checked (over -check-max, or out of time)")
			}
			mu.Unlock()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			st, err := cl.GetMessage(cctx, r.app, j.id)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			for b := j.mask; b != 0; b &= b - 1 {
				k := int(j.m.user) + bits.TrailingZeros64(b)*r.f.Users
				if err != nil {
					var ae *api.Error
					if errors.As(err, &ae) && ae.Status == 404 {
						lost(j, k, "no status record (404)")
					} else {
						ch.Unverified++
						lost(j, k, "status unreadable: "+err.Error())
					}
					continue
				}
				if finalStatuses[st.Status] {
					ch.FinalStates[st.Status]++
					continue
				}
				ds := ""
				for _, d := range st.Devices {
					if d.Device == deviceName(k) {
						ds = d.Status
					}
				}
				switch {
				case finalStatuses[ds]:
					ch.FinalStates[ds]++
				case ds == "delivered" || ds == "read":
					lost(j, k, "the gateway has it "+ds+" by this device, which never got it")
				case !st.ExpiresAt.IsZero() && st.ExpiresAt.Before(now):
					ch.FinalStates["expired"]++ // past its expiry: the gateway stopped trying, as it should
				default:
					lost(j, k, fmt.Sprintf("message %s, device %q, expires %s", st.Status, ds, st.ExpiresAt.Format(time.RFC3339)))
				}
			}
		})
	}
	wg.Wait()
	for _, k := range slices.Sorted(maps.Keys(lostDevs)) {
		ch.Examples["lost_device"] = append(ch.Examples["lost_device"], r.col.timeline(k))
	}
}

// wakeCheck matches every wake against its device's online periods.
func (r *runner) wakeCheck(ch *checks) {
	c := r.col
	grace := r.cfg.wakeGrace.Nanoseconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &ch.Wakes
	w.Unknown = c.unknownW
	w.Total = uint64(len(c.wakes)) + c.unknownW
	perDev := map[int32]int{}
	times := map[int32][]int64{}
	sorted := make(map[int32][]int64)
	abs := func(v int64) int64 { return max(v, -v) }
	for _, wk := range c.wakes {
		if wk.status != 200 {
			continue
		}
		w.Accepted++
		times[wk.k] = append(times[wk.k], wk.at)
		tr, ok := sorted[wk.k]
		if !ok {
			tr = slices.Clone(c.trans[wk.k])
			sort.Slice(tr, func(a, b int) bool { return abs(tr[a]) < abs(tr[b]) })
			sorted[wk.k] = tr
		}
		// The device's state at the wake: its last transition before it.
		i := sort.Search(len(tr), func(i int) bool { return abs(tr[i]) > wk.at }) - 1
		off := c.f.isOffline(int(wk.k))
		if i >= 0 && tr[i] > 0 {
			w.LateMaxMs = max(w.LateMaxMs, float64(wk.at-tr[i])/1e6)
		}
		switch {
		case i >= 0 && tr[i] > 0 && wk.at-tr[i] > grace:
			w.ToOnline++
			for _, m := range c.kills {
				if m.Name == "restarted" && wk.at >= m.At && wk.at-m.At < int64(15*time.Second) {
					w.ToOnlineAfterRestart++
					break
				}
			}
			c.example("wake_to_online", "wake for %s at %s: its session was up since %s (%.0f ms before)", deviceName(int(wk.k)),
				time.Unix(0, wk.at).Format("15:04:05.000"), time.Unix(0, tr[i]).Format("15:04:05.000"), float64(wk.at-tr[i])/1e6)
		case i >= 0 && tr[i] > 0:
			w.RacedConnect++
		case off:
			w.ToOffline++
			perDev[wk.k]++
		default:
			w.ToDisconnected++
		}
	}
	for k := range c.f.N {
		if !c.f.isOffline(k) {
			continue
		}
		n := perDev[int32(k)]
		if w.OfflineDevices == 0 || n < w.PerDeviceMin {
			w.PerDeviceMin = n
		}
		w.OfflineDevices++
		w.PerDeviceMax = max(w.PerDeviceMax, n)
		w.PerDeviceMean += float64(n)
		if n > 0 {
			w.Woken++
		}
	}
	if w.OfflineDevices > 0 {
		w.PerDeviceMean /= float64(w.OfflineDevices)
	}
	for _, ts := range times {
		slices.Sort(ts)
		most, j := 0, 0
		for i := range ts {
			for ts[i]-ts[j] >= int64(time.Hour) {
				j++
			}
			most = max(most, i-j+1)
		}
		w.MaxInHour = max(w.MaxInHour, most)
		if most > wakeHourlyCap {
			w.OverCap++
		}
	}
	if ex := c.examples["wake_to_online"]; len(ex) > 0 {
		ch.Examples["wake_to_online"] = ex
	}
}

// classifyPendingLocked sorts the deliveries of ids no 202 named: with the
// data of a POST that got a 202 (phantoms, visible duplicates), of a POST
// that did not (allowed), or without the generator's data; mu is held.
func (c *collector) classifyPendingLocked() (phantom, unaccepted, foreign uint64) {
	for _, id := range sortedKeys(c.pending) {
		for _, d := range c.pending[id] {
			switch {
			case d.Seq < 0 || d.Seq >= int64(len(c.posts)):
				foreign++
			case c.posts[d.Seq].status == postOK:
				phantom++
				c.example("phantom", "%s got id %s with the data of POST %d, whose 202 named other ids", deviceName(int(d.K)), id, d.Seq)
			default:
				unaccepted++
			}
		}
	}
	return phantom, unaccepted, foreign
}

// saturatedShare is the share of this machine's cores busy with the
// harness (and the gateway it started) above which the latencies are
// reported as the machine's as much as the gateway's.
const saturatedShare = 0.85

// saturation warns when the cores were nearly all busy during traffic,
// or the kernel kept threads waiting for them. Then every message waits
// for a CPU somewhere on its way (the REST handler, the store's WAL
// writer, the session's writer, the device's reader), and those waits,
// not the gateway's own work, make the tail: at 90 % busy a task waits
// about nine times its own length. "" if not.
func (r *runner) saturation() string {
	r.mu.Lock()
	d := r.trafficEnd.Sub(r.trafficStart).Seconds()
	u := cpuUse{gatewayCPU: r.gwCPU1 - r.gwCPU0, harnessCPU: r.hCPU1 - r.hCPU0,
		gatewayWait: r.gwRunq1 - r.gwRunq0, harnessWait: r.hRunq1 - r.hRunq0}
	r.mu.Unlock()
	local := r.tgt != nil && r.tgt.local != nil
	return saturationWarning(runtime.NumCPU(), d, u, local)
}

// cpuUse is what the gateway and the harness used of this machine's CPUs
// during traffic: CPU seconds, and seconds their threads waited for a
// CPU (the kernel's run queue; zero when unknown).
type cpuUse struct {
	gatewayCPU, harnessCPU   float64
	gatewayWait, harnessWait float64
}

// waitingShare is the average number of threads waiting for a CPU, per
// core, above which the machine is reported oversubscribed whatever its
// cores' busy share: half a thread per core.
const waitingShare = 0.5

// saturationWarning is saturation's arithmetic: cores on this machine,
// seconds of traffic, and what the gateway (counted only when it runs
// here, local) and the harness used in them.
func saturationWarning(cores int, trafficS float64, u cpuUse, local bool) string {
	if cores < 1 || trafficS < 5 || u.harnessCPU < 0 {
		return ""
	}
	if !local || u.gatewayCPU < 0 {
		u.gatewayCPU, u.gatewayWait = 0, 0
	}
	gw, h := u.gatewayCPU/trafficS, u.harnessCPU/trafficS
	gwWaiting, hWaiting := max(u.gatewayWait, 0)/trafficS, max(u.harnessWait, 0)/trafficS
	busy := (gw + h) / float64(cores)
	if busy < saturatedShare && (gwWaiting+hWaiting)/float64(cores) < waitingShare {
		return ""
	}
	waiting := ""
	if gwWaiting+hWaiting > 0 {
		if local {
			waiting = fmt.Sprintf(", and on average %.2f of the gateway's threads and %.2f of the harness's were ready but waiting for one", gwWaiting, hWaiting)
		} else {
			waiting = fmt.Sprintf(", and on average %.2f of the harness's threads were ready but waiting for one", hWaiting)
		}
	}
	if local {
		return fmt.Sprintf("this machine's %d cores were %.0f%% busy during traffic (gateway %.2f cores, harness %.2f)%s: "+
			"the latencies include waiting for a CPU, in the harness as well as in the gateway; to measure the gateway alone, "+
			"run the harness on other cores or another machine (-addr, -url)", cores, busy*100, gw, h, waiting)
	}
	return fmt.Sprintf("this machine's %d cores were %.0f%% busy with the harness alone during traffic (%.2f cores)%s: "+
		"the latencies include the harness waiting for a CPU; give it more cores, or run several harnesses on other machines", cores, busy*100, h, waiting)
}

// lagWarning says when the generator sent noticeably less than it was to
// offer: its senders were all waiting for answers, so messages were
// skipped (more than 2 s late) and the latencies are those of the rate
// reached, not of the rate asked. One connection carries about one POST
// per REST round trip.
func lagWarning(offered, skipped uint64, conns int, postP50 time.Duration) string {
	if offered == 0 || float64(skipped) <= (1-keptUpShare)*float64(offered) {
		return ""
	}
	carry := ""
	if postP50 > 0 {
		carry = fmt.Sprintf(" (%d connections at a REST p50 of %.1f ms carry about %.0f POSTs a second)",
			conns, ms(postP50), float64(conns)/postP50.Seconds())
	}
	return fmt.Sprintf("the generator fell behind: it skipped %d of the %d messages it was to offer (%.0f%%), as every one of its -post-conns %d connections was waiting for an answer or retrying%s; "+
		"the latencies are those of the rate reached; -post-conns raises the concurrency if the gateway has capacity left",
		skipped, offered, 100*float64(skipped)/float64(offered), conns, carry)
}
