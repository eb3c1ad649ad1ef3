package main

import (
	"strings"
	"testing"

	"tether/sdkproto"
)

func TestFleetLayout(t *testing.T) {
	for _, c := range []struct{ n, users int }{{1, 1}, {10, 3}, {500, 100}, {18000, 6000}, {1001, 64}} {
		f := &fleet{N: c.n, Users: c.users, Seed: 7, TLS: 0.5, StartTLS: 0.2, WS: 0.3, Offline: 0.1, RunID: "r"}
		sum := 0
		for u := range c.users {
			sum += f.devicesOf(u)
		}
		if sum != c.n {
			t.Errorf("N=%d users=%d: devicesOf sums to %d", c.n, c.users, sum)
		}
		for k := range c.n {
			u := f.user(k)
			if j := k / c.users; j >= f.devicesOf(u) {
				t.Fatalf("device %d is index %d of user %d, which has %d", k, j, u, f.devicesOf(u))
			}
		}
	}
	f := &fleet{N: 20000, Users: 5000, Seed: 42, TLS: 0.5, StartTLS: 0.2, WS: 0.3, Offline: 0.1, RunID: "x"}
	count := map[sdkproto.Transport]int{}
	offline, apns := 0, 0
	tokens := map[string]bool{}
	ips := map[string]bool{}
	for k := range f.N {
		count[f.transport(k)]++
		if f.isOffline(k) {
			offline++
		}
		if f.pushProvider(k) == "apns" {
			apns++
		}
		tok := f.pushToken(k)
		if tokens[tok] {
			t.Fatalf("token %s twice", tok)
		}
		tokens[tok] = true
		ip := sourceIP(k)
		if ips[ip] || strings.HasPrefix(ip, "127.0.") {
			t.Fatalf("source %s repeated or in 127.0.0.0/16", ip)
		}
		ips[ip] = true
	}
	near := func(got int, share float64) bool {
		want := share * float64(f.N)
		return float64(got) > want*0.9 && float64(got) < want*1.1
	}
	if !near(count[sdkproto.TransportTLS], 0.5) || !near(count[sdkproto.TransportStartTLS], 0.2) || !near(count[sdkproto.TransportWebSocket], 0.3) {
		t.Errorf("transports %v, want about 50/20/30%%", count)
	}
	if !near(offline, 0.1) || !near(apns, 0.5) {
		t.Errorf("offline %d, apns %d of %d", offline, apns, f.N)
	}
	g := *f
	if g.transport(123) != f.transport(123) || g.isOffline(99) != f.isOffline(99) {
		t.Error("the same seed must give the same fleet")
	}
}

func TestParseMsgData(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want msgData
	}{
		{`{"ts":1764000000123456789,"seq":42}`, msgData{TS: 1764000000123456789, Seq: 42}},
		{`{"ts":0,"seq":0}`, msgData{Seq: 0}},
		{`{"seq":7, "ts":5}`, msgData{TS: 5, Seq: 7}},            // another layout: encoding/json
		{`{"ts":99999999999999999999,"seq":1}`, msgData{Seq: 1}}, // overflows: what encoding/json makes of it
		{`{"inbound":3}`, msgData{Seq: -1}},
		{``, msgData{Seq: -1}},
	} {
		if got := parseMsgData([]byte(tc.in)); got != tc.want {
			t.Errorf("parseMsgData(%s) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
