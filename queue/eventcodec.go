package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// Events are written on every status change (3.6 a message in the soak:
// sent, delivered, read and the device events) and kept for the retention
// period, 7 days by default, so they are most of the store's live bytes.
// They are stored in a compact binary form and turned into the feed's JSON
// when read. The app and the event id are in the key and not stored again.
//
// Events carrying data or a fallback (inbound messages with data, fallback
// results), and events whose time is not UTC or outside years 0–9999, are
// stored as their JSON, as every event was by earlier versions; a record
// starting with '{' is JSON and is served as it is.
//
// Format: the version byte 1; the type, a byte: its index in eventTypes
// (from 1), or 0 followed by the type as a string; the time, as in status
// records; a uvarint with bit i set for each non-empty string field i of
// eventFields; then those strings, in that order. A string is a uvarint
// length and its bytes. eventTypes and eventFields only ever grow at the
// end: stored records refer to their positions.
const eventCodecV1 = 1

var errEventCodec = errors.New("queue: malformed event record")

var eventTypes = [...]string{
	EventSent, EventDelivered, EventRead, EventExpired, EventCancelled,
	EventCollapsed, EventFallbackSent, EventFallbackFailed, EventInbound,
	EventDeviceOnline, EventDeviceOffline, EventTokenInvalid, EventWakeSent,
}

// eventFields returns pointers to e's optional string fields, in the
// order of the format's bit mask.
func eventFields(e *Event) [11]*string {
	return [...]*string{
		&e.MessageID, &e.User, &e.Device, &e.Ref, &e.Status, &e.Reason,
		&e.Transport, &e.Channel, &e.InReplyTo, &e.Body, &e.Provider,
	}
}

// encodeEvent appends the stored form of e to b.
func encodeEvent(b []byte, e *Event) ([]byte, error) {
	if e.Data != nil || e.Fallback != nil || e.At.Location() != time.UTC || e.At.Year() < 0 || e.At.Year() > 9999 {
		return appendEvent(b, e)
	}
	b = append(b, eventCodecV1)
	code := 0
	for i, t := range eventTypes {
		if t == e.Type {
			code = i + 1
			break
		}
	}
	b = append(b, byte(code))
	if code == 0 {
		b = appendStr(b, e.Type)
	}
	b = appendTime(b, e.At)
	fields := eventFields(e)
	var mask uint64
	for i, f := range fields {
		if *f != "" {
			mask |= 1 << i
		}
	}
	b = binary.AppendUvarint(b, mask)
	for _, f := range fields {
		if *f != "" {
			b = appendStr(b, *f)
		}
	}
	return b, nil
}

// decodeEvent reads a binary event record (not JSON) of app into e.
func decodeEvent(v []byte, app string, seq uint64, e *Event) error {
	if len(v) == 0 || v[0] != eventCodecV1 {
		return errEventCodec
	}
	*e = Event{ID: EventID(seq), App: app, Seq: seq}
	// One string for the whole record: the fields are substrings of it.
	r := statusReader{s: string(v[1:])}
	switch code := int(r.byte()); {
	case code == 0:
		e.Type = r.str()
	case code <= len(eventTypes):
		e.Type = eventTypes[code-1]
	default:
		return errEventCodec
	}
	e.At = r.time()
	mask := r.uvarint()
	fields := eventFields(e)
	if mask >= 1<<len(fields) {
		return errEventCodec
	}
	for i, f := range fields {
		if mask&(1<<i) != 0 {
			if *f = r.str(); *f == "" {
				return errEventCodec // encodeEvent leaves empty fields out
			}
		}
	}
	if r.bad || len(r.s) != 0 {
		return errEventCodec
	}
	return nil
}

// renderEvent appends the feed's JSON of the stored event v (event seq of
// app) to b.
func renderEvent(b []byte, app string, seq uint64, v []byte) ([]byte, error) {
	if len(v) > 0 && v[0] == '{' {
		return append(b, v...), nil
	}
	var e Event
	if err := decodeEvent(v, app, seq, &e); err != nil {
		return b, err
	}
	return appendEvent(b, &e)
}

// eventTime returns the time of the stored event v.
func eventTime(v []byte) (time.Time, error) {
	if len(v) > 0 && v[0] == '{' {
		var e struct {
			At time.Time `json:"at"`
		}
		err := json.Unmarshal(v, &e)
		return e.At, err
	}
	if len(v) < 2 || v[0] != eventCodecV1 {
		return time.Time{}, errEventCodec
	}
	r := statusReader{s: string(v[1:])}
	if r.byte() == 0 {
		r.str()
	}
	at := r.time()
	if r.bad {
		return time.Time{}, errEventCodec
	}
	return at, nil
}
