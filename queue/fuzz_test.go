package queue_test

import (
	"testing"

	"tether/queue"
)

func FuzzParseMessageID(f *testing.F) {
	for _, seq := range []uint64{1, 42, 1 << 20, 1<<64 - 1} {
		f.Add(queue.NewMessageID(seq), seq)
	}
	f.Add("", uint64(0))
	f.Add("0000000000000000000vv", uint64(7))
	f.Add("ABCDEFGHIJKLMNOPQRSTU", uint64(8))
	f.Fuzz(func(t *testing.T, s string, seq uint64) {
		if _, err := queue.ParseMessageID(s); err == nil {
			if len(s) != queue.IDLen {
				t.Fatalf("parsed %q of length %d", s, len(s))
			}
			for _, c := range []byte(s) {
				if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
					t.Fatalf("parsed %q with byte %q", s, c)
				}
			}
		}
		id := queue.NewMessageID(seq)
		got, err := queue.ParseMessageID(id)
		if err != nil || got != seq {
			t.Fatalf("ParseMessageID(NewMessageID(%d) = %q) = %d, %v", seq, id, got, err)
		}
	})
}

func FuzzParseEventID(f *testing.F) {
	f.Add(queue.EventID(1), uint64(1))
	f.Add(queue.EventID(1<<64-1), uint64(1<<63))
	f.Add("00000000000000zz", uint64(0))
	f.Add("ABCDEF0000000000", uint64(255))
	f.Fuzz(func(t *testing.T, s string, seq uint64) {
		if v, err := queue.ParseEventID(s); err == nil {
			if got := queue.EventID(v); got != s {
				t.Fatalf("EventID(ParseEventID(%q)) = %q", s, got)
			}
		}
		got, err := queue.ParseEventID(queue.EventID(seq))
		if err != nil || got != seq {
			t.Fatalf("ParseEventID(EventID(%d)) = %d, %v", seq, got, err)
		}
	})
}
