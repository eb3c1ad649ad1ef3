package queue

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func codecSamples() []*Status {
	t0 := time.Date(2026, 11, 23, 3, 49, 6, 123456789, time.UTC)
	return []*Status{
		{ID: "m1", User: "u"},
		{
			ID: "m2", User: "alice", Device: "phone", Status: StateDelivered, Delivery: DeliveryAny,
			Ref: "r<&>\"é", CollapseKey: "ck", Reason: "why\n",
			CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), SentAt: t0.Add(time.Millisecond),
			DeliveredAt: t0.Add(2 * time.Millisecond), DoneAt: t0.Add(3 * time.Millisecond),
			Devices: []DeviceStatus{{Device: "phone", Status: StateDelivered, At: t0}, {Device: "tab", Status: StateSent}},
		},
		{
			ID: "m3", User: "bob", Status: StateFallbackSent, CreatedAt: time.Unix(0, 0).UTC(),
			ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), FinalAt: t0,
			Fallback: &FallbackInfo{To: "+33", Status: "sent", At: t0, Provider: "p", Detail: "ok"},
			SMSText:  "hello", FallbackRetry: -12345678901,
		},
		{
			ID: "m4", User: "carol", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), DoneAt: t0,
			Fallback: &FallbackInfo{To: "+39", Status: "sending", At: t0, Provider: "vonage", Detail: "Throttled (status 1)", Attempts: 300},
			SMSText:  "code", FallbackRetry: 1764000000000,
		},
	}
}

// The binary form reads back exactly what the JSON form read back.
func TestStatusCodecRoundTrip(t *testing.T) {
	for _, st := range codecSamples() {
		var got Status
		if err := decodeStatus(encodeStatus(nil, st), &got); err != nil {
			t.Fatalf("%s: %v", st.ID, err)
		}
		j, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON Status
		if err := decodeStatus(j, &fromJSON); err != nil {
			t.Fatalf("%s: json: %v", st.ID, err)
		}
		if !reflect.DeepEqual(got, fromJSON) {
			t.Errorf("%s:\nbinary %+v\njson   %+v", st.ID, got, fromJSON)
		}
	}
}

func TestStatusCodecMalformed(t *testing.T) {
	v := encodeStatus(nil, codecSamples()[1])
	for i := range len(v) {
		var st Status
		if decodeStatus(v[:i], &st) == nil {
			t.Errorf("truncated at %d of %d: no error", i, len(v))
		}
	}
	var st Status
	if decodeStatus(append(v, 0), &st) == nil {
		t.Error("trailing byte: no error")
	}
	if decodeStatus([]byte{9, 1, 2}, &st) == nil {
		t.Error("unknown version: no error")
	}
}

func FuzzStatusCodec(f *testing.F) {
	for _, st := range codecSamples() {
		f.Add(encodeStatus(nil, st))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		var st Status
		if decodeStatus(v, &st) != nil || v[0] == '{' {
			return
		}
		var again Status
		if err := decodeStatus(encodeStatus(nil, &st), &again); err != nil {
			t.Fatalf("re-encoded record: %v", err)
		}
		if !reflect.DeepEqual(st, again) {
			t.Fatalf("not stable:\n%+v\n%+v", st, again)
		}
	})
}

func TestMarshalEventMatchesJSON(t *testing.T) {
	at := time.Date(2026, 11, 23, 3, 49, 6, 120000000, time.UTC)
	for _, e := range []*Event{
		{ID: "e1", Type: EventDelivered, At: at, App: "acme", MessageID: "m1", User: "u", Device: "d", Status: "delivered"},
		{ID: "e2", Type: EventSent, App: "a"},
		{ID: "e3", Type: "message.expired", At: at.Add(time.Nanosecond), App: "a", Ref: "<&>\"\\\n\u2028é\xff", Reason: "recipient offline",
			Transport: "tls", Channel: "c", InReplyTo: "x", Body: "hi", Provider: "p"},
		{ID: "e4", Type: "message.inbound", At: at, App: "a", Data: json.RawMessage(`{"k": "<v>"}`)},
		{ID: "e5", Type: "message.fallback_sent", At: at, App: "a", Fallback: &FallbackInfo{To: "+1", Status: "sent"}},
	} {
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := marshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\ngot  %s\nwant %s", e.ID, got, want)
		}
	}
}

// The idempotency record and the 202 answer in it are written by hand:
// they must be what json.Marshal wrote (a replay after an upgrade reads
// either, and clients decode the answer), and read back.
func TestIdemRecordMatchesJSON(t *testing.T) {
	hash := []byte("0123456789abcdef0123456789abcdef")
	for _, res := range []*EnqueueResult{
		{Messages: []Accepted{{ID: "m1", To: "alice", Status: StateEnqueued}}},
		{Messages: []Accepted{{ID: "m2", To: "bob/phone", Status: StateEnqueued}, {ID: "m3", To: "<&>\"\\\u2028é\xff", Status: StateExpired}}},
		{Messages: []Accepted{}},
		{},
	} {
		rv, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(idemRecord{Hash: hash, Result: rv})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.AppendJSON([]byte("x")); string(got) != "x"+string(rv) {
			t.Errorf("AppendJSON: got  %s\nwant x%s", got, rv)
		}
		got := appendIdemRecord([]byte("x"), hash, res)
		if string(got) != "x"+string(want) {
			t.Errorf("got  %s\nwant x%s", got, want)
		}
		var rec idemRecord
		var back EnqueueResult
		if err := json.Unmarshal(got[1:], &rec); err != nil || string(rec.Hash) != string(hash) || json.Unmarshal(rec.Result, &back) != nil {
			t.Fatalf("read back: %v", err)
		}
	}
}
