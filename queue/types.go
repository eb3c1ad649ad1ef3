package queue

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"time"
)

// State is the delivery state of a message, for one device or overall.
// The order matters: a higher non-final state supersedes a lower one.
type State uint8

// States, in lifecycle order. Final states follow StateRead.
const (
	StateEnqueued State = iota
	StateSent
	StateDelivered
	StateRead
	StateExpired
	StateCancelled
	StateCollapsed
	StateFallbackSent
	StateFallbackFailed
)

var stateNames = [...]string{"enqueued", "sent", "delivered", "read", "expired", "cancelled", "collapsed", "fallback_sent", "fallback_failed"}

// String returns the state's name as the REST API spells it.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Final reports whether no further delivery can happen in state s
// (expired, cancelled, collapsed or a fallback outcome).
func (s State) Final() bool { return s >= StateExpired }

// Acked reports whether a device acknowledged the message (delivered or
// read).
func (s State) Acked() bool { return s == StateDelivered || s == StateRead }

// MarshalJSON encodes the state as its name.
func (s State) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON decodes a state name.
func (s *State) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err != nil {
		return err
	}
	for i, n := range stateNames {
		if n == name {
			*s = State(i)
			return nil
		}
	}
	return ErrCorrupt
}

// Priority is a message's priority; it picks wake push priority and the
// fallback delay default.
type Priority uint8

// Priorities.
const (
	PriorityNormal Priority = iota
	PriorityHigh
)

// String returns "normal" or "high".
func (p Priority) String() string {
	if p == PriorityHigh {
		return "high"
	}
	return "normal"
}

// Delivery says which devices of a user must acknowledge a message.
type Delivery uint8

// Delivery modes.
const (
	// DeliveryAll: every known device of the user gets the message.
	DeliveryAll Delivery = iota
	// DeliveryAny: the first device to acknowledge completes the message
	// and it is withdrawn from the user's other devices.
	DeliveryAny
)

// String returns "all" or "any".
func (d Delivery) String() string {
	if d == DeliveryAny {
		return "any"
	}
	return "all"
}

// SMSFallback asks for an SMS when the message is not delivered in time.
type SMSFallback struct {
	To    string `json:"to"`
	Text  string `json:"text,omitempty"`
	After int64  `json:"after,omitempty"` // seconds after enqueue; 0: at expiry
}

// Message is one message in one user's queue. Messages handed out by the
// queue are shared and must not be modified.
type Message struct {
	Seq         uint64          `json:"-"`
	ID          string          `json:"id"`
	App         string          `json:"-"`
	User        string          `json:"-"`
	Device      string          `json:"dv,omitempty"` // the one target device; empty: every device of the user
	Body        string          `json:"b,omitempty"`
	Data        json.RawMessage `json:"dt,omitempty"`
	Priority    Priority        `json:"p,omitempty"`
	Delivery    Delivery        `json:"dl,omitempty"`
	CollapseKey string          `json:"ck,omitempty"`
	Ref         string          `json:"r,omitempty"`
	Channel     string          `json:"ch,omitempty"`
	CreatedAt   time.Time       `json:"-"`
	ExpiresAt   time.Time       `json:"-"`
	Fallback    *SMSFallback    `json:"fb,omitempty"`
	// OnlineOnly names the devices online when an expires_in 0 message
	// was posted: only they get it (a device of the user that connects
	// during its grace was not online "now").
	OnlineOnly []string `json:"on,omitempty"`

	// On-disk times, in Unix milliseconds.
	Created int64 `json:"c"`
	Expires int64 `json:"x"`

	onlineOnly bool // expires_in 0: only for a device online now
}

// To returns the recipient as the REST API names it: "user" or
// "user/device".
func (m *Message) To() string {
	if m.Device != "" {
		return m.User + "/" + m.Device
	}
	return m.User
}

func (m *Message) encode() ([]byte, error) {
	m.Created, m.Expires = m.CreatedAt.UnixMilli(), m.ExpiresAt.UnixMilli()
	// Without HTML escaping: json.Marshal would store (and devices would
	// get) each & < > of the data as a six-byte \u escape.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

func decodeMessage(app, user string, seq uint64, v []byte) (*Message, error) {
	m := new(Message)
	if err := json.Unmarshal(v, m); err != nil {
		return nil, ErrCorrupt
	}
	m.App, m.User, m.Seq = app, user, seq
	m.CreatedAt, m.ExpiresAt = time.UnixMilli(m.Created).UTC(), time.UnixMilli(m.Expires).UTC()
	return m, nil
}

// DeviceStatus is one device's progress on a message.
type DeviceStatus struct {
	Device string    `json:"device"`
	Status State     `json:"status"`
	At     time.Time `json:"at"`
}

// FallbackInfo records an SMS fallback attempt.
type FallbackInfo struct {
	To string `json:"to"`
	// Status: "pending" (not due), "sending" (handed to the provider, or
	// a hand-off a crash interrupted), FallbackWaiting (the provider asked
	// to be tried later; the next attempt is due at FallbackRetry),
	// "sent", "failed", "not_needed" or "cancelled". See PublicStatus.
	Status   string    `json:"status"`
	At       time.Time `json:"at,omitzero"`
	Provider string    `json:"provider,omitempty"`
	Detail   string    `json:"detail,omitempty"` // the provider's answer
	// Attempts counts the hand-offs to the provider that were answered
	// (or timed out); more than one when the provider asked to try later.
	Attempts int `json:"attempts,omitempty"`
}

// FallbackWaiting is the fallback status between attempts, once the
// provider asked to be tried later. The backend sees it as "sending"
// (PublicStatus); the queue tells it apart because a message may be
// cancelled then, not while an attempt is under way.
const FallbackWaiting = "waiting"

// underway reports whether the SMS was handed to the provider, or is
// between attempts, with no outcome yet.
func (f *FallbackInfo) underway() bool {
	return f != nil && (f.Status == "sending" || f.Status == FallbackWaiting)
}

// PublicStatus is the fallback status the API shows: FallbackWaiting reads
// "sending", as the SMS is still on its way.
func (f *FallbackInfo) PublicStatus() string {
	if f.Status == FallbackWaiting {
		return "sending"
	}
	return f.Status
}

// Status is the status record of one message, kept 7 days after the
// message is done.
type Status struct {
	ID          string         `json:"id"`
	User        string         `json:"user"`
	Device      string         `json:"device,omitempty"`
	Status      State          `json:"status"`
	Delivery    Delivery       `json:"delivery,omitempty"`
	Ref         string         `json:"ref,omitempty"`
	CollapseKey string         `json:"collapse_key,omitempty"`
	Reason      string         `json:"reason,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	ExpiresAt   time.Time      `json:"expires_at"`
	SentAt      time.Time      `json:"sent_at,omitzero"`
	DeliveredAt time.Time      `json:"delivered_at,omitzero"`
	ReadAt      time.Time      `json:"read_at,omitzero"`
	FinalAt     time.Time      `json:"final_at,omitzero"`
	DoneAt      time.Time      `json:"done_at,omitzero"` // when the payload left the store
	Devices     []DeviceStatus `json:"devices,omitempty"`
	Fallback    *FallbackInfo  `json:"fallback,omitempty"`
	// SMSText is the text of a fallback SMS being sent, kept until the
	// provider answered so a crash can retry it; FallbackRetry is when.
	SMSText       string `json:"sms_text,omitempty"`
	FallbackRetry int64  `json:"fallback_retry,omitempty"`

	App string `json:"-"`
	Seq uint64 `json:"-"`
}

// To returns the recipient as the REST API names it.
func (s *Status) To() string {
	if s.Device != "" {
		return s.User + "/" + s.Device
	}
	return s.User
}

// device returns the status entry of dev, or nil.
func (s *Status) device(dev string) *DeviceStatus {
	for i := range s.Devices {
		if s.Devices[i].Device == dev {
			return &s.Devices[i]
		}
	}
	return nil
}

// DeviceState returns dev's state for the message (enqueued if none).
func (s *Status) DeviceState(dev string) State {
	if d := s.device(dev); d != nil {
		return d.Status
	}
	return StateEnqueued
}

// Done reports whether the message needs no further delivery.
func (s *Status) Done() bool { return !s.DoneAt.IsZero() || s.Status.Final() }

// Event is one entry of an app's event feed, and what webhooks carry.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	At        time.Time       `json:"at"`
	App       string          `json:"app"`
	MessageID string          `json:"message_id,omitempty"`
	User      string          `json:"user,omitempty"`
	Device    string          `json:"device,omitempty"`
	Ref       string          `json:"ref,omitempty"`
	Status    string          `json:"status,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Transport string          `json:"transport,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	InReplyTo string          `json:"in_reply_to,omitempty"`
	Body      string          `json:"body,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Fallback  *FallbackInfo   `json:"fallback,omitempty"`
	Provider  string          `json:"provider,omitempty"`

	Seq uint64 `json:"-"`
}

// Event types.
const (
	EventSent           = "message.sent"
	EventDelivered      = "message.delivered"
	EventRead           = "message.read"
	EventExpired        = "message.expired"
	EventCancelled      = "message.cancelled"
	EventCollapsed      = "message.collapsed"
	EventFallbackSent   = "message.fallback_sent"
	EventFallbackFailed = "message.fallback_failed"
	EventInbound        = "message.inbound"
	EventDeviceOnline   = "device.online"
	EventDeviceOffline  = "device.offline"
	EventTokenInvalid   = "device.token_invalid"
	EventWakeSent       = "device.wake_sent"
)

// eventType maps a state to the type of the event announcing it.
func eventType(s State) string {
	return [...]string{"", EventSent, EventDelivered, EventRead, EventExpired, EventCancelled, EventCollapsed, EventFallbackSent, EventFallbackFailed}[s]
}

// EventID formats an event sequence number as the event id and feed cursor.
func EventID(seq uint64) string {
	var b [16]byte
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hex[seq&0xf]
		seq >>= 4
	}
	return string(b[:])
}

// ParseEventID is the inverse of EventID.
func ParseEventID(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, ErrBadID
	}
	var v uint64
	for i := 0; i < 16; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, ErrBadID
		}
	}
	return v, nil
}

// Message ids are the lower-case base32hex encoding of the 8-byte sequence
// number followed by 5 random bytes: they sort in enqueue order, tell the
// store where the status record is, and cannot be guessed from another id.
var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

const idRandom = 5

// IDLen is the length of a message id.
var IDLen = idEncoding.EncodedLen(8 + idRandom)

func newMessageID(seq uint64) string {
	var b [8 + idRandom]byte
	binary.BigEndian.PutUint64(b[:8], seq)
	rand.Read(b[8:])
	return toLower(idEncoding.EncodeToString(b[:]))
}

// ParseMessageID returns the sequence number inside a message id, or
// ErrBadID if s is not one. A well-formed id still has to match the stored
// record to name a message.
func ParseMessageID(s string) (uint64, error) {
	if len(s) != IDLen {
		return 0, ErrBadID
	}
	var up [32]byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'v':
		default:
			return 0, ErrBadID
		}
		if c >= 'a' {
			c -= 'a' - 'A'
		}
		up[i] = c
	}
	b, err := idEncoding.DecodeString(string(up[:len(s)]))
	if err != nil || len(b) != 8+idRandom {
		return 0, ErrBadID
	}
	return binary.BigEndian.Uint64(b[:8]), nil
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
