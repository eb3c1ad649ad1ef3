package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"time"
)

// Status records are read and rewritten on every status change of every
// message (sent, delivered, read), so they are stored in a compact binary
// form rather than JSON. Records written as JSON by earlier versions (they
// start with '{') are still read.
//
// Format, after the version byte: the strings ID, User, Device; the bytes
// Status and Delivery; the strings Ref, CollapseKey, Reason; the times
// CreatedAt, ExpiresAt, SentAt, DeliveredAt, ReadAt, FinalAt, DoneAt; the
// number of device entries, each a string, a state byte and a time; a byte
// saying whether a fallback follows, then its To, Status, At, Provider and
// Detail; the string SMSText and the varint FallbackRetry; then, only
// when a fallback has had attempts, their number as a uvarint. A string is a
// uvarint length and its bytes; a time is 0 for the zero time, or 1, the
// Unix seconds as a varint and the nanoseconds as a uvarint (always UTC).
const statusCodecV1 = 1

var errStatusCodec = errors.New("queue: malformed status record")

// encodeStatus appends the stored form of st to b.
func encodeStatus(b []byte, st *Status) []byte {
	b = append(b, statusCodecV1)
	b = appendStr(b, st.ID)
	b = appendStr(b, st.User)
	b = appendStr(b, st.Device)
	b = append(b, byte(st.Status), byte(st.Delivery))
	b = appendStr(b, st.Ref)
	b = appendStr(b, st.CollapseKey)
	b = appendStr(b, st.Reason)
	for _, t := range [...]time.Time{st.CreatedAt, st.ExpiresAt, st.SentAt, st.DeliveredAt, st.ReadAt, st.FinalAt, st.DoneAt} {
		b = appendTime(b, t)
	}
	b = binary.AppendUvarint(b, uint64(len(st.Devices)))
	for _, d := range st.Devices {
		b = appendStr(b, d.Device)
		b = append(b, byte(d.Status))
		b = appendTime(b, d.At)
	}
	if fb := st.Fallback; fb != nil {
		b = append(b, 1)
		b = appendStr(b, fb.To)
		b = appendStr(b, fb.Status)
		b = appendTime(b, fb.At)
		b = appendStr(b, fb.Provider)
		b = appendStr(b, fb.Detail)
	} else {
		b = append(b, 0)
	}
	b = appendStr(b, st.SMSText)
	b = binary.AppendVarint(b, st.FallbackRetry)
	if fb := st.Fallback; fb != nil && fb.Attempts > 0 {
		b = binary.AppendUvarint(b, uint64(fb.Attempts))
	}
	return b
}

// decodeStatus reads a stored status record, binary or (older) JSON.
func decodeStatus(v []byte, st *Status) error {
	if len(v) > 0 && v[0] == '{' {
		return json.Unmarshal(v, st)
	}
	if len(v) == 0 || v[0] != statusCodecV1 {
		return errStatusCodec
	}
	// One string for the whole record: the fields are substrings of it.
	r := statusReader{s: string(v[1:])}
	st.ID = r.str()
	st.User = r.str()
	st.Device = r.str()
	st.Status, st.Delivery = State(r.byte()), Delivery(r.byte())
	st.Ref = r.str()
	st.CollapseKey = r.str()
	st.Reason = r.str()
	for _, t := range [...]*time.Time{&st.CreatedAt, &st.ExpiresAt, &st.SentAt, &st.DeliveredAt, &st.ReadAt, &st.FinalAt, &st.DoneAt} {
		*t = r.time()
	}
	n := r.uvarint()
	if n > uint64(len(r.s)) { // each entry takes at least 3 bytes
		return errStatusCodec
	}
	// Into st.Devices' own array when it has room (a Status reused by
	// Queue.mark).
	st.Devices = st.Devices[:0]
	if n > 0 {
		if uint64(cap(st.Devices)) >= n {
			st.Devices = st.Devices[:n]
		} else {
			st.Devices = make([]DeviceStatus, n)
		}
		for i := range st.Devices {
			d := &st.Devices[i]
			d.Device = r.str()
			d.Status = State(r.byte())
			d.At = r.time()
		}
	}
	st.Fallback = nil
	switch r.byte() {
	case 0:
	case 1:
		fb := &FallbackInfo{}
		fb.To = r.str()
		fb.Status = r.str()
		fb.At = r.time()
		fb.Provider = r.str()
		fb.Detail = r.str()
		st.Fallback = fb
	default:
		return errStatusCodec
	}
	st.SMSText = r.str()
	st.FallbackRetry = r.varint()
	if len(r.s) > 0 && st.Fallback != nil {
		n := r.uvarint()
		if n > math.MaxInt32 {
			return errStatusCodec
		}
		st.Fallback.Attempts = int(n)
	}
	if r.bad || len(r.s) != 0 || st.Status >= State(len(stateNames)) {
		return errStatusCodec
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// statusReader consumes a binary status record; bad is set (and every
// later read returns zero values) once the input runs short.
type statusReader struct {
	s   string
	bad bool
}

func (r *statusReader) byte() byte {
	if len(r.s) == 0 {
		r.bad = true
		return 0
	}
	c := r.s[0]
	r.s = r.s[1:]
	return c
}

func (r *statusReader) uvarint() uint64 {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if i >= len(r.s) {
			break
		}
		c := r.s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break
			}
			r.s = r.s[i+1:]
			return x | uint64(c)<<(7*i)
		}
		x |= uint64(c&0x7f) << (7 * i)
	}
	r.bad = true
	r.s = ""
	return 0
}

func (r *statusReader) varint() int64 {
	u := r.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (r *statusReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.s)) {
		r.bad = true
		r.s = ""
		return ""
	}
	s := r.s[:n]
	r.s = r.s[n:]
	return s
}

func (r *statusReader) time() time.Time {
	switch r.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := r.varint()
		ns := r.uvarint()
		if ns >= 1e9 {
			r.bad = true
			return time.Time{}
		}
		return time.Unix(sec, int64(ns)).UTC()
	}
	r.bad = true
	return time.Time{}
}

// marshalEvent is json.Marshal(e), without reflection for the common
// events (no data, no fallback): one is written per status change.
func marshalEvent(e *Event) ([]byte, error) { return appendEvent(make([]byte, 0, 256), e) }

// appendEvent appends marshalEvent's encoding of e to b.
func appendEvent(b []byte, e *Event) ([]byte, error) {
	if e.Data != nil || e.Fallback != nil || e.At.Year() < 0 || e.At.Year() > 9999 {
		c := *e // only this copy escapes (to json.Marshal), not e
		v, err := json.Marshal(&c)
		return append(b, v...), err
	}
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"at":"`...)
	b = e.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","app":`...)
	b = appendJSONString(b, e.App)
	for _, f := range [...]struct{ name, v string }{
		{`,"message_id":`, e.MessageID}, {`,"user":`, e.User}, {`,"device":`, e.Device},
		{`,"ref":`, e.Ref}, {`,"status":`, e.Status}, {`,"reason":`, e.Reason},
		{`,"transport":`, e.Transport}, {`,"channel":`, e.Channel}, {`,"in_reply_to":`, e.InReplyTo},
		{`,"body":`, e.Body},
	} {
		if f.v != "" {
			b = append(b, f.name...)
			b = appendJSONString(b, f.v)
		}
	}
	if e.Provider != "" {
		b = append(b, `,"provider":`...)
		b = appendJSONString(b, e.Provider)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as encoding/json writes it (HTML-safe
// escaping, invalid UTF-8 replaced).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
