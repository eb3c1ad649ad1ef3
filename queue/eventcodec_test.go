package queue

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"tether/storage"
)

// codecEvents are events of every kind the gateway writes, and some it
// does not, with the app and id a stored one gets from its key.
func codecEvents() []*Event {
	at := time.Date(2026, 12, 6, 19, 50, 58, 123456789, time.UTC)
	id := newMessageID(77)
	evs := []*Event{
		{Type: EventSent, MessageID: id, User: "u000123", Device: "d016116", Ref: "order-9", Status: "sent"},
		{Type: EventDelivered, MessageID: id, User: "u000123", Device: "d016116", Status: "delivered"},
		{Type: EventRead, MessageID: id, User: "u000123", Device: "d016116", Status: "read"},
		{Type: EventExpired, MessageID: id, User: "u1", Status: "expired", Reason: "ttl"},
		{Type: EventInbound, MessageID: "c-1", User: "u1", Device: "d1", Body: "ok \"<b>\" & \u00e9\u2028 \x01", InReplyTo: id},
		{Type: EventDeviceOnline, User: "u1", Device: "d1", Transport: "websocket"},
		{Type: EventWakeSent, User: "u1", Device: "d1", Channel: "apns", Provider: "apns"},
		{Type: EventTokenInvalid, User: "u1", Device: "d1", Channel: "fcm", Reason: "Unregistered"},
		{Type: "custom.kind", User: "u+1@x", Device: "d1"}, // not in the type table
		{Type: EventDeviceOffline, User: "u1", Device: "d1", At: time.Unix(0, 0).UTC()},
		{Type: EventDeviceOffline, User: "u1", Device: "d1", At: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
		{Type: EventSent, User: "\xff\xfe invalid utf-8", Device: "d1", Status: "sent"},
	}
	for i, e := range evs {
		e.App, e.Seq, e.ID = "acme", uint64(1000+i), EventID(uint64(1000+i))
		if e.At.IsZero() {
			e.At = at.Add(time.Duration(i) * time.Millisecond)
		}
	}
	return evs
}

// The feed serves a binary-stored event exactly as encoding/json wrote it
// when events were stored as JSON, and the stored form is much smaller.
func TestEventCodecRendersTheJSON(t *testing.T) {
	for _, e := range codecEvents() {
		want, err := json.Marshal(e)
		require.NoError(t, err)
		v, err := encodeEvent(nil, e)
		require.NoError(t, err)
		require.Equal(t, byte(eventCodecV1), v[0], "%s stored as JSON", want)
		got, err := renderEvent(nil, e.App, e.Seq, v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		at, err := eventTime(v)
		require.NoError(t, err)
		require.True(t, at.Equal(e.At), "eventTime %v, want %v", at, e.At)
	}
	// A delivered event like the soak's: 197 bytes of JSON, stored in 61.
	e := codecEvents()[1]
	j, _ := json.Marshal(e)
	v, _ := encodeEvent(nil, e)
	require.Less(t, 3*len(v), len(j), "stored %d bytes for %d of JSON", len(v), len(j))
}

// Events with data or a fallback, or a time the binary form would not
// give back as it was, are stored as their JSON, and JSON records (all
// those earlier versions wrote) are served as they are.
func TestEventCodecKeepsJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 19, 50, 58, 5, time.UTC)
	for _, e := range []*Event{
		{Type: EventInbound, User: "u1", Device: "d1", Body: "hi", Data: json.RawMessage(`{"k":[1,2]}`), At: at},
		{Type: EventFallbackSent, MessageID: "m", User: "u1", Status: "fallback_sent", Fallback: &FallbackInfo{To: "+15550100", Status: "sent", Provider: "sms"}, At: at},
		{Type: EventSent, User: "u1", At: at.In(time.FixedZone("CET", 3600))},
	} {
		e.App, e.Seq, e.ID = "acme", 9, EventID(9)
		want, err := json.Marshal(e)
		require.NoError(t, err)
		v, err := encodeEvent(nil, e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(v))
		got, err := renderEvent(nil, "acme", 9, v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
		got2, err := eventTime(v)
		require.NoError(t, err)
		require.True(t, got2.Equal(at))
	}
}

func TestEventCodecRejectsDamage(t *testing.T) {
	v, err := encodeEvent(nil, codecEvents()[0])
	require.NoError(t, err)
	var e Event
	for n := range len(v) { // every truncation
		require.Error(t, decodeEvent(v[:n], "acme", 1, &e), "truncated to %d", n)
	}
	require.Error(t, decodeEvent(append(v[:len(v):len(v)], 0), "acme", 1, &e), "trailing byte")
	bad := append([]byte(nil), v...)
	bad[1] = byte(len(eventTypes) + 1)
	require.Error(t, decodeEvent(bad, "acme", 1, &e), "unknown type code")
	require.Error(t, decodeEvent([]byte{2, 1}, "acme", 1, &e), "unknown version")
}

// A store holding events of both forms, as after an upgrade, and one
// damaged record: the feed serves both forms in order, skips the damaged
// one (counting it) instead of stopping there, and the trim reads both.
func TestEventsFeedMixedForms(t *testing.T) {
	db, err := storage.Open("mem", storage.Options{InMemory: true, CacheSize: 4 << 20, MemTableSize: 4 << 20})
	require.NoError(t, err)
	defer db.Close()
	q, err := New(Config{DB: db, TimerInterval: -1, EventRetention: time.Hour})
	require.NoError(t, err)
	defer q.Close()
	ctx := context.Background()
	ab := db.NewBatch() // an app record, so the trim sees the app
	ab.PutApp("acme", []byte(`{"id":"acme"}`))
	require.NoError(t, ab.Commit(true))

	old := q.now().Add(-2 * time.Hour)
	put := func(v []byte) uint64 {
		seq, err := db.NextSeq(1)
		require.NoError(t, err)
		b := db.NewBatch()
		b.PutEvent("acme", seq, v)
		require.NoError(t, b.Commit(true))
		return seq
	}
	// As an earlier version stored it: JSON, two hours old.
	oldSeq, err := db.NextSeq(1)
	require.NoError(t, err)
	legacy, err := json.Marshal(&Event{ID: EventID(oldSeq), Type: EventDeviceOnline, At: old, App: "acme", User: "u1", Device: "d1", Transport: "tls"})
	require.NoError(t, err)
	b := db.NewBatch()
	b.PutEvent("acme", oldSeq, legacy)
	require.NoError(t, b.Commit(true))
	put([]byte{eventCodecV1, 99}) // damaged
	require.NoError(t, q.AppendEvent(ctx, &Event{Type: EventDeviceOffline, App: "acme", User: "u1", Device: "d1"}))

	evs, _, err := q.Events(ctx, "acme", 0, 10, 0)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.JSONEq(t, string(legacy), string(evs[0]))
	var got Event
	require.NoError(t, json.Unmarshal(evs[1], &got))
	require.Equal(t, EventDeviceOffline, got.Type)
	require.Equal(t, "acme", got.App)
	require.Equal(t, "d1", got.Device)
	var m dto.Metric
	require.NoError(t, q.m.badEvents.Write(&m))
	require.Equal(t, 1.0, m.GetCounter().GetValue(), "unreadable events counted")

	// The trim drops the old JSON event and the damaged one before the
	// first event inside the retention.
	require.NoError(t, q.TrimEvents())
	evs, _, err = q.Events(ctx, "acme", 0, 10, 0)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.JSONEq(t, string(evs[0]), string(must(json.Marshal(&got))))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// FuzzDecodeEvent: no input panics the decoder, and an event it accepts
// is served the same after being stored again.
func FuzzDecodeEvent(f *testing.F) {
	for _, e := range codecEvents() {
		v, err := encodeEvent(nil, e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{eventCodecV1, 0, 3, 'a', '.', 'b', 0, 0})
	f.Add([]byte{eventCodecV1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0})
	f.Fuzz(func(t *testing.T, v []byte) {
		var e Event
		if err := decodeEvent(v, "acme", 5, &e); err != nil {
			return
		}
		j, err := renderEvent(nil, "acme", 5, v)
		if err != nil {
			return // a time JSON cannot say (year 10000): the feed skips it
		}
		back, err := encodeEvent(nil, &e)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := renderEvent(nil, "acme", 5, back)
		if err != nil || string(j2) != string(j) {
			t.Fatalf("%x served as %s; stored again as %x, served as %s (%v)", v, j, back, j2, err)
		}
		if !json.Valid(j) {
			t.Fatalf("%x served as invalid JSON %s", v, j)
		}
	})
}
