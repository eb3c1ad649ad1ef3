package gateway

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"tether/gateway/api"
	"tether/storage"
)

// keyGrace is how long a rotated-out API key keeps working.
const keyGrace = 24 * time.Hour

// appRecord is an app as stored (table A). Secrets are kept because the
// gateway needs them in clear (webhook HMAC, APNs signing); API keys are
// stored only as SHA-256 hashes, in table K.
type appRecord struct {
	ID           string             `json:"id"`
	Name         string             `json:"name"`
	CreatedAt    time.Time          `json:"created_at"`
	Webhook      *api.WebhookConfig `json:"webhook,omitempty"`
	APNS         *api.APNSConfig    `json:"apns,omitempty"`
	FCM          *api.FCMConfig     `json:"fcm,omitempty"`
	SMS          *api.SMSConfig     `json:"sms,omitempty"`
	Defaults     api.Defaults       `json:"defaults"`
	ClientConfig json.RawMessage    `json:"client_config,omitempty"`
	KeyHash      []byte             `json:"key_hash"`
	PrevKeyHash  []byte             `json:"prev_key_hash,omitempty"`
	PrevKeyUntil time.Time          `json:"prev_key_until,omitzero"`
}

// keyRecord is what table K holds for one API key hash.
type keyRecord struct {
	App   string    `json:"app"`
	Until time.Time `json:"until,omitzero"` // zero: no expiry
}

// apps is the app directory: records cached in memory (tenants are few and
// read on every request), API key lookups cached by hash.
type apps struct {
	db  *storage.DB
	now func() time.Time

	mu   sync.RWMutex
	byID map[string]*appRecord
	keys map[[32]byte]keyRecord
}

var (
	errAppExists = errors.New("gateway: app exists")
	errNoApp     = errors.New("gateway: no such app")
)

func newApps(db *storage.DB, now func() time.Time) (*apps, error) {
	a := &apps{db: db, now: now, byID: map[string]*appRecord{}, keys: map[[32]byte]keyRecord{}}
	var derr error
	err := db.ScanApps(func(id string, v []byte) bool {
		rec := new(appRecord)
		if err := json.Unmarshal(v, rec); err != nil {
			derr = fmt.Errorf("gateway: app %s: %w", id, err)
			return false
		}
		a.byID[id] = rec
		return true
	})
	return a, errors.Join(err, derr)
}

// get returns a copy-safe pointer to the app record (treat as read-only).
func (a *apps) get(id string) (*appRecord, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	r, ok := a.byID[id]
	return r, ok
}

func (a *apps) list() []*appRecord {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.SortedFunc(maps.Values(a.byID), func(x, y *appRecord) int {
		if x.ID < y.ID {
			return -1
		}
		if x.ID > y.ID {
			return 1
		}
		return 0
	})
}

func (a *apps) count() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.byID)
}

// create stores a new app and returns it with its first API key.
func (a *apps) create(id, name string) (*appRecord, string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.byID[id]; ok {
		return nil, "", errAppExists
	}
	if name == "" {
		name = id
	}
	key := newAPIKey()
	h := storage.Hash(key)
	rec := &appRecord{ID: id, Name: name, CreatedAt: a.now().UTC(), KeyHash: h[:]}
	b := a.db.NewBatch()
	if err := putApp(b, rec); err != nil {
		b.Close()
		return nil, "", err
	}
	kv, _ := json.Marshal(keyRecord{App: id})
	b.PutAPIKey(h, kv)
	if err := b.Commit(true); err != nil {
		return nil, "", err
	}
	a.byID[id] = rec
	a.keys[h] = keyRecord{App: id}
	return rec, key, nil
}

func putApp(b *storage.Batch, rec *appRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b.PutApp(rec.ID, v)
	return nil
}

// update applies fn to a copy of the app record and stores it.
func (a *apps) update(id string, fn func(rec *appRecord) error) (*appRecord, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, ok := a.byID[id]
	if !ok {
		return nil, errNoApp
	}
	rec := *cur
	if err := fn(&rec); err != nil {
		return nil, err
	}
	b := a.db.NewBatch()
	if err := putApp(b, &rec); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.Commit(true); err != nil {
		return nil, err
	}
	a.byID[id] = &rec
	return &rec, nil
}

// rotate issues a new API key; the previous one works for keyGrace more.
func (a *apps) rotate(id string) (string, time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, ok := a.byID[id]
	if !ok {
		return "", time.Time{}, errNoApp
	}
	rec := *cur
	key := newAPIKey()
	h := storage.Hash(key)
	until := a.now().UTC().Add(keyGrace)
	b := a.db.NewBatch()
	if rec.PrevKeyHash != nil { // a key rotated out earlier stops now
		old := [32]byte(rec.PrevKeyHash)
		b.DeleteAPIKey(old)
		delete(a.keys, old)
	}
	prev := [32]byte(rec.KeyHash)
	pv, _ := json.Marshal(keyRecord{App: id, Until: until})
	b.PutAPIKey(prev, pv)
	nv, _ := json.Marshal(keyRecord{App: id})
	b.PutAPIKey(h, nv)
	rec.PrevKeyHash, rec.PrevKeyUntil, rec.KeyHash = rec.KeyHash, until, h[:]
	if err := putApp(b, &rec); err != nil {
		b.Close()
		return "", time.Time{}, err
	}
	if err := b.Commit(true); err != nil {
		return "", time.Time{}, err
	}
	a.byID[id] = &rec
	a.keys[prev] = keyRecord{App: id, Until: until}
	a.keys[h] = keyRecord{App: id}
	return key, until, nil
}

// remove forgets an app and its keys; the caller drops its data.
func (a *apps) remove(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, ok := a.byID[id]
	if !ok {
		return errNoApp
	}
	b := a.db.NewBatch()
	for _, h := range [][]byte{rec.KeyHash, rec.PrevKeyHash} {
		if h != nil {
			b.DeleteAPIKey([32]byte(h))
			delete(a.keys, [32]byte(h))
		}
	}
	if err := b.Commit(true); err != nil {
		return err
	}
	delete(a.byID, id)
	return nil
}

// authenticate returns the app an API key belongs to.
func (a *apps) authenticate(key string) (string, bool) {
	h := storage.Hash(key)
	a.mu.RLock()
	kr, ok := a.keys[h]
	a.mu.RUnlock()
	if !ok {
		v, err := a.db.GetAPIKey(h)
		if err != nil || json.Unmarshal(v, &kr) != nil {
			return "", false
		}
		a.mu.Lock()
		if _, exists := a.byID[kr.App]; exists {
			a.keys[h] = kr
		}
		a.mu.Unlock()
	}
	if !kr.Until.IsZero() && !a.now().Before(kr.Until) {
		return "", false
	}
	if _, ok := a.get(kr.App); !ok {
		return "", false
	}
	return kr.App, true
}

func newAPIKey() string { return "tk_" + randomToken(24) }

// constantTimeEqual compares secrets without leaking their common prefix.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
