package sdkproto

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// SASL mechanism names the client implements.
const (
	MechSCRAMSHA256 = "SCRAM-SHA-256"
	MechSCRAMSHA1   = "SCRAM-SHA-1"
	MechPLAIN       = "PLAIN"
)

// maxSCRAMIterations bounds the PBKDF2 work a server can make the client do.
const maxSCRAMIterations = 1 << 22

// CredentialCache keeps SCRAM salted passwords, so that logging in again
// with the same user, password, salt, iteration count and mechanism skips
// PBKDF2, as real SDKs do. An entry is stored only after the server proved,
// with its signature, that it knows the same salted password. The key also
// carries a SHA-256 of the password, so a client given another password
// never uses the cached key.
//
// The zero value is an empty cache ready to use. A CredentialCache is safe
// for concurrent use and may be shared by any number of Clients; its
// methods do not block beyond a short mutex.
type CredentialCache struct {
	// MaxEntries bounds the cache; when it is full an arbitrary entry is
	// evicted. Zero means 1<<20. Set it before first use.
	MaxEntries int

	mu     sync.RWMutex
	m      map[credKey][]byte
	hits   atomic.Uint64
	misses atomic.Uint64
}

type credKey struct {
	mech       string
	user       string
	salt       string
	iterations int
	pw         [sha256.Size]byte
}

// CacheStats counts CredentialCache lookups.
type CacheStats struct {
	Hits    uint64 // logins that skipped PBKDF2
	Misses  uint64 // logins that ran PBKDF2
	Entries int    // salted passwords held
}

// Stats returns the cache's counters. Safe for concurrent use.
func (c *CredentialCache) Stats() CacheStats {
	c.mu.RLock()
	n := len(c.m)
	c.mu.RUnlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Entries: n}
}

func (c *CredentialCache) get(k credKey) []byte {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	v := c.m[k]
	c.mu.RUnlock()
	if v != nil {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
	return v
}

func (c *CredentialCache) put(k credKey, salted []byte) {
	if c == nil {
		return
	}
	limit := c.MaxEntries
	if limit <= 0 {
		limit = 1 << 20
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[credKey][]byte)
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= limit {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = salted
	c.mu.Unlock()
}

// saltPassword is PBKDF2; a variable so that tests can count calls.
var saltPassword = func(h func() hash.Hash, password string, salt []byte, iter int) ([]byte, error) {
	return pbkdf2.Key(h, password, salt, iter, h().Size())
}

// saslClient is one SASL exchange on the client side.
type saslClient interface {
	// start returns the initial response.
	start() ([]byte, error)
	// next answers a challenge.
	next(challenge []byte) ([]byte, error)
	// finish checks the additional data of <success/>.
	finish(data []byte) error
}

func newSASLClient(mech, user, password string, cache *CredentialCache) (saslClient, error) {
	switch mech {
	case MechPLAIN:
		return &plainClient{user: user, password: password}, nil
	case MechSCRAMSHA256:
		return &scramClient{mech: mech, h: sha256.New, user: user, password: password, cache: cache}, nil
	case MechSCRAMSHA1:
		return &scramClient{mech: mech, h: sha1.New, user: user, password: password, cache: cache}, nil
	}
	return nil, ErrMechanism
}

// plainClient is RFC 4616 PLAIN with an empty authorization identity.
type plainClient struct{ user, password string }

func (p *plainClient) start() ([]byte, error) {
	b := make([]byte, 0, 2+len(p.user)+len(p.password))
	b = append(b, 0)
	b = append(b, p.user...)
	b = append(b, 0)
	return append(b, p.password...), nil
}

func (p *plainClient) next([]byte) ([]byte, error) { return nil, ErrProtocol }
func (p *plainClient) finish([]byte) error         { return nil }

// scramClient is RFC 5802 / RFC 7677 SCRAM without channel binding
// (gs2 header "n,,").
type scramClient struct {
	mech     string
	h        func() hash.Hash
	user     string
	password string
	cache    *CredentialCache

	step        int
	clientFirst string // client-first-message-bare
	nonce       string
	authMessage []byte
	serverKey   []byte
	cacheKey    credKey
	salted      []byte
	fromCache   bool
}

const gs2Header = "n,,"

// errSCRAM reports a malformed server message.
var errSCRAM = errors.New("sdkproto: malformed SCRAM server message")

// scramNonce returns a fresh client nonce; a variable so that tests can
// replay published exchanges.
var scramNonce = func() (string, error) {
	var raw [18]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(raw[:]), nil
}

func (s *scramClient) start() ([]byte, error) {
	nonce, err := scramNonce()
	if err != nil {
		return nil, err
	}
	s.nonce = nonce
	s.clientFirst = "n=" + escapeSASLName(s.user) + ",r=" + s.nonce
	s.step = 1
	return []byte(gs2Header + s.clientFirst), nil
}

func escapeSASLName(s string) string {
	if !strings.ContainsAny(s, "=,") {
		return s
	}
	s = strings.ReplaceAll(s, "=", "=3D")
	return strings.ReplaceAll(s, ",", "=2C")
}

func (s *scramClient) next(challenge []byte) ([]byte, error) {
	if s.step == 2 {
		// RFC 6120 section 6.3.10 lets a server send its final message
		// as a challenge and then an empty <success/>.
		return nil, s.finish(challenge)
	}
	if s.step != 1 {
		return nil, ErrProtocol
	}
	s.step = 2
	var nonce, salt64, iterStr string
	for i, attr := range strings.Split(string(challenge), ",") {
		if len(attr) < 2 || attr[1] != '=' {
			return nil, errSCRAM
		}
		switch attr[0] {
		case 'r':
			nonce = attr[2:]
		case 's':
			salt64 = attr[2:]
		case 'i':
			iterStr = attr[2:]
		case 'm':
			if i == 0 {
				return nil, errSCRAM // mandatory extension we don't know
			}
		case 'e':
			return nil, &SASLError{Condition: "scram-error", Text: attr[2:]}
		}
	}
	if nonce == "" || salt64 == "" || iterStr == "" || len(nonce) <= len(s.nonce) || !strings.HasPrefix(nonce, s.nonce) {
		return nil, errSCRAM
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, errSCRAM
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > maxSCRAMIterations {
		return nil, errSCRAM
	}

	s.cacheKey = credKey{mech: s.mech, user: s.user, salt: string(salt), iterations: iter, pw: sha256.Sum256([]byte(s.password))}
	salted := s.cache.get(s.cacheKey)
	s.fromCache = salted != nil
	if salted == nil {
		salted, err = saltPassword(s.h, s.password, salt, iter)
		if err != nil {
			return nil, err
		}
	}
	s.salted = salted

	withoutProof := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2Header)) + ",r=" + nonce
	am := make([]byte, 0, len(s.clientFirst)+len(challenge)+len(withoutProof)+2)
	am = append(am, s.clientFirst...)
	am = append(am, ',')
	am = append(am, challenge...)
	am = append(am, ',')
	am = append(am, withoutProof...)
	s.authMessage = am

	clientKey := s.hmac(salted, "Client Key")
	hh := s.h()
	hh.Write(clientKey)
	storedKey := hh.Sum(nil)
	sig := s.hmac(storedKey, string(am))
	for i := range clientKey {
		clientKey[i] ^= sig[i]
	}
	s.serverKey = s.hmac(salted, "Server Key")

	out := make([]byte, 0, len(withoutProof)+3+base64.StdEncoding.EncodedLen(len(clientKey)))
	out = append(out, withoutProof...)
	out = append(out, ",p="...)
	return base64.StdEncoding.AppendEncode(out, clientKey), nil
}

func (s *scramClient) hmac(key []byte, msg string) []byte {
	m := hmac.New(s.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// finish verifies the server-final-message "v=<signature>".
func (s *scramClient) finish(data []byte) error {
	if s.step == 3 && len(data) == 0 {
		return nil // verified from a challenge already
	}
	if s.step != 2 {
		return ErrProtocol
	}
	s.step = 3
	if bytes.HasPrefix(data, []byte("e=")) {
		return &SASLError{Condition: "scram-error", Text: string(data[2:])}
	}
	if !bytes.HasPrefix(data, []byte("v=")) {
		return ErrServerSignature
	}
	v := data[2:]
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	got, err := base64.StdEncoding.DecodeString(string(v))
	if err != nil {
		return ErrServerSignature
	}
	if !hmac.Equal(got, s.hmac(s.serverKey, string(s.authMessage))) {
		return ErrServerSignature
	}
	if !s.fromCache {
		s.cache.put(s.cacheKey, s.salted)
	}
	return nil
}
