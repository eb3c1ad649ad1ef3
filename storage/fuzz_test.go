package storage_test

import (
	"bytes"
	"math"
	"testing"

	"tether/storage"
)

// Each fuzzer takes raw bytes (decode never panics, and re-encoding a
// successfully decoded key gives the same bytes) and the fields of a key
// (encoding valid fields and decoding gives them back). The corpus found
// by `go test -fuzz` is kept in testdata/fuzz.

func validID(s string, max int) bool { return len(s) >= 1 && len(s) <= max }

func FuzzDecodeMessageKey(f *testing.F) {
	f.Add(storage.MessageKey("acme", "alice", 1), "acme", "alice", uint64(1))
	f.Add(storage.MessageKey("a", "+393331234567", math.MaxUint64), "a", "ab", uint64(0))
	f.Add([]byte{'M', 1, 'a', 1, 'b', 0, 0, 0, 0, 0, 0, 0, 9}, "", "x", uint64(7))
	f.Add([]byte{'M', 255}, "a", "", uint64(0))
	f.Fuzz(func(t *testing.T, k []byte, app, user string, seq uint64) {
		if a, u, s, err := storage.DecodeMessageKey(k); err == nil {
			if got := storage.MessageKey(a, u, s); !bytes.Equal(got, k) {
				t.Fatalf("encode(decode(%x)) = %x", k, got)
			}
		}
		if !validID(app, storage.MaxAppLen) || !validID(user, storage.MaxUserLen) {
			return
		}
		a, u, s, err := storage.DecodeMessageKey(storage.MessageKey(app, user, seq))
		if err != nil || a != app || u != user || s != seq {
			t.Fatalf("decode(encode(%q, %q, %d)) = %q, %q, %d, %v", app, user, seq, a, u, s, err)
		}
	})
}

func FuzzDecodeStatusKey(f *testing.F) {
	f.Add(storage.StatusKey("acme", 1), "acme", uint64(1))
	f.Add(storage.StatusKey("a", math.MaxUint64), "a-b", uint64(1<<40))
	f.Add([]byte{'S', 0, 0, 0, 0, 0, 0, 0, 0, 1}, "", uint64(0))
	f.Fuzz(func(t *testing.T, k []byte, app string, seq uint64) {
		if a, s, err := storage.DecodeStatusKey(k); err == nil {
			if got := storage.StatusKey(a, s); !bytes.Equal(got, k) {
				t.Fatalf("encode(decode(%x)) = %x", k, got)
			}
		}
		if !validID(app, storage.MaxAppLen) {
			return
		}
		a, s, err := storage.DecodeStatusKey(storage.StatusKey(app, seq))
		if err != nil || a != app || s != seq {
			t.Fatalf("decode(encode(%q, %d)) = %q, %d, %v", app, seq, a, s, err)
		}
	})
}

func FuzzDecodeEventKey(f *testing.F) {
	f.Add(storage.EventKey("acme", 258), "acme", uint64(258))
	f.Add(storage.EventKey("z", 0), "z", uint64(math.MaxUint64))
	f.Add(storage.StatusKey("acme", 1), "", uint64(0))
	f.Fuzz(func(t *testing.T, k []byte, app string, seq uint64) {
		if a, s, err := storage.DecodeEventKey(k); err == nil {
			if got := storage.EventKey(a, s); !bytes.Equal(got, k) {
				t.Fatalf("encode(decode(%x)) = %x", k, got)
			}
		}
		if !validID(app, storage.MaxAppLen) {
			return
		}
		a, s, err := storage.DecodeEventKey(storage.EventKey(app, seq))
		if err != nil || a != app || s != seq {
			t.Fatalf("decode(encode(%q, %d)) = %q, %d, %v", app, seq, a, s, err)
		}
	})
}

func FuzzDecodeTimerKey(f *testing.F) {
	f.Add(storage.TimerKey(1767225600000, 1, 7), int64(1767225600000), byte(1), uint64(7))
	f.Add(storage.TimerKey(0, 4, math.MaxUint64), int64(-1), byte(255), uint64(0))
	f.Add(storage.TimerKey(1<<62, 2, 1), int64(1<<62), byte(0), uint64(1))
	f.Fuzz(func(t *testing.T, k []byte, at int64, kind byte, seq uint64) {
		if a, kd, s, err := storage.DecodeTimerKey(k); err == nil {
			if got := storage.TimerKey(a, kd, s); !bytes.Equal(got, k) {
				t.Fatalf("encode(decode(%x)) = %x", k, got)
			}
		}
		if at < 0 || at > 1<<62 {
			return
		}
		a, kd, s, err := storage.DecodeTimerKey(storage.TimerKey(at, kind, seq))
		if err != nil || a != at || kd != kind || s != seq {
			t.Fatalf("decode(encode(%d, %d, %d)) = %d, %d, %d, %v", at, kind, seq, a, kd, s, err)
		}
	})
}

func FuzzDecodeDeviceKey(f *testing.F) {
	f.Add(storage.DeviceKey("acme", "alice", "phone1"), "acme", "alice", "phone1")
	f.Add(storage.DeviceKey("a", "b", "c"), "a", "ab", "")
	f.Add([]byte{'D', 1, 'a', 1, 'b', 2, 'c'}, "x", "y", "z")
	f.Fuzz(func(t *testing.T, k []byte, app, user, device string) {
		if a, u, d, err := storage.DecodeDeviceKey(k); err == nil {
			if got := storage.DeviceKey(a, u, d); !bytes.Equal(got, k) {
				t.Fatalf("encode(decode(%x)) = %x", k, got)
			}
		}
		if !validID(app, storage.MaxAppLen) || !validID(user, storage.MaxUserLen) || !validID(device, storage.MaxDeviceLen) {
			return
		}
		a, u, d, err := storage.DecodeDeviceKey(storage.DeviceKey(app, user, device))
		if err != nil || a != app || u != user || d != device {
			t.Fatalf("decode(encode(%q, %q, %q)) = %q, %q, %q, %v", app, user, device, a, u, d, err)
		}
	})
}
