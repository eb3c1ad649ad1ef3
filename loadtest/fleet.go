package main

import (
	"fmt"
	"strconv"

	"tether/sdkproto"
	"tether/wake/waketest"
)

// fleet describes every device, derived from the seed alone, so the parent
// and the workers agree on transports, offline devices and push tokens
// without exchanging lists. Device k (0 <= k < N) is "d%06d" and belongs to
// user k mod Users ("u%06d"); user u's devices are u, u+Users, u+2·Users, …
// and device k is the (k / Users)-th of its user.
type fleet struct {
	N        int     `json:"n"`
	Users    int     `json:"users"`
	Seed     uint64  `json:"seed"`
	TLS      float64 `json:"tls"`      // share on direct TLS
	StartTLS float64 `json:"starttls"` // share on STARTTLS; the rest WebSocket
	WS       float64 `json:"ws"`
	Offline  float64 `json:"offline"` // share that stays offline until woken
	RunID    string  `json:"run_id"`  // makes FCM tokens unique per run
	Push     string  `json:"push"`    // "apns,fcm" (half each), "apns" or "fcm"
}

// splitmix64 is a fast, well-mixed hash of a 64-bit value.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unit returns a number in [0, 1) for device k and purpose salt.
func (f *fleet) unit(k int, salt uint64) float64 {
	return float64(splitmix64(f.Seed^salt^uint64(k)*0x100000001b3)>>11) / (1 << 53)
}

func (f *fleet) user(k int) int { return k % f.Users }

// devicesOf returns how many devices user u has.
func (f *fleet) devicesOf(u int) int { return (f.N - 1 - u + f.Users) / f.Users }

func userName(u int) string   { return fmt.Sprintf("u%06d", u) }
func deviceName(k int) string { return fmt.Sprintf("d%06d", k) }

// transport is device k's transport, by the shares.
func (f *fleet) transport(k int) sdkproto.Transport {
	sum := f.TLS + f.StartTLS + f.WS
	x := f.unit(k, 0x7472616e73) * sum
	switch {
	case x < f.TLS:
		return sdkproto.TransportTLS
	case x < f.TLS+f.StartTLS:
		return sdkproto.TransportStartTLS
	}
	return sdkproto.TransportWebSocket
}

// isOffline reports whether device k stays offline until a wake.
func (f *fleet) isOffline(k int) bool { return f.unit(k, 0x6f66666c) < f.Offline }

// pushProvider is "apns" for about half the devices and "fcm" for the
// others, or the one provider Push names.
func (f *fleet) pushProvider(k int) string {
	switch f.Push {
	case "apns", "fcm":
		return f.Push
	}
	if f.unit(k, 0x70757368) < 0.5 {
		return "apns"
	}
	return "fcm"
}

// pushToken is device k's token at its provider.
func (f *fleet) pushToken(k int) string {
	if f.pushProvider(k) == "apns" {
		return waketest.APNsToken(k)
	}
	return "fcm-" + f.RunID + "-" + strconv.Itoa(k)
}

// sourceIP spreads devices over 127.0.0.0/8 (a few per address), so the
// ephemeral ports of one source address never run out. 127.0.x.x, where
// the gateway and the fakes listen, is never used.
func sourceIP(k int) string {
	return fmt.Sprintf("127.%d.%d.%d", 1+k/62500, (k/250)%250+1, k%250+1)
}
