package gateway

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"hash"
	"time"

	"mellium.im/sasl"

	"tether/storage"
)

// scramIterations is the PBKDF2 iteration count of stored SCRAM keys
// (RFC 7677 recommends at least 4096).
const scramIterations = 4096

// scramKey is what a SCRAM server needs for one mechanism: the salt, the
// iteration count and the salted password (RFC 5802 SaltedPassword). The
// password itself is never stored.
type scramKey struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iter"`
	Salted     []byte `json:"salted"`
}

// userRecord is a user as stored (table U).
type userRecord struct {
	CreatedAt time.Time `json:"created_at"`
	SHA1      scramKey  `json:"scram_sha1"`
	SHA256    scramKey  `json:"scram_sha256"`
}

func newScramKey(fn func() hash.Hash, password string) scramKey {
	salt := make([]byte, 16)
	rand.Read(salt)
	return scramKey{Salt: salt, Iterations: scramIterations, Salted: sasl.SCRAMSaltPassword(fn, []byte(password), salt, scramIterations)}
}

func newUserRecord(password string, now time.Time) *userRecord {
	return &userRecord{
		CreatedAt: now,
		SHA1:      newScramKey(sha1.New, password),
		SHA256:    newScramKey(sha256.New, password),
	}
}

// checkPassword verifies a clear-text password (SASL PLAIN, HTTP Basic)
// against the stored SCRAM-SHA-256 key, in constant time.
func (u *userRecord) checkPassword(password string) bool {
	k := u.SHA256
	got := sasl.SCRAMSaltPassword(sha256.New, []byte(password), k.Salt, k.Iterations)
	return subtle.ConstantTimeCompare(got, k.Salted) == 1
}

// users reads and writes user records.
type users struct{ db *storage.DB }

var errNoUser = errors.New("gateway: no such user")

func (us users) get(app, user string) (*userRecord, error) {
	v, err := us.db.GetUser(app, user)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoUser
	}
	if err != nil {
		return nil, err
	}
	rec := new(userRecord)
	if err := json.Unmarshal(v, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

func (us users) put(app, user string, rec *userRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b := us.db.NewBatch()
	b.PutUser(app, user, v)
	return b.Commit(true)
}

// generatePassword returns a random password for a user created without
// one: 26 base32 characters, 130 bits.
func generatePassword() string { return rand.Text() }
