package sdkproto

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"mellium.im/sasl"
)

// scramServer is mellium's SCRAM server negotiator over one stored user.
type scramServer struct {
	mech   sasl.Mechanism
	h      func() hash.Hash
	user   string
	salt   []byte
	iter   int
	salted []byte
}

func newSCRAMServer(mech, user, password string, iter int) *scramServer {
	s := &scramServer{user: user, salt: []byte("0123456789abcdef"), iter: iter}
	switch mech {
	case MechSCRAMSHA256:
		s.mech, s.h = sasl.ScramSha256, sha256.New
	case MechSCRAMSHA1:
		s.mech, s.h = sasl.ScramSha1, sha1.New
	}
	s.salted = sasl.SCRAMSaltPassword(s.h, []byte(password), s.salt, iter)
	return s
}

func (s *scramServer) negotiator() *sasl.Negotiator {
	return sasl.NewServer(s.mech, nil, sasl.SaltedCredentials(
		func(user, _ []byte, _ string) ([]byte, []byte, int64, error) {
			if string(user) != s.user {
				return nil, nil, 0, sasl.ErrAuthn
			}
			return s.salt, s.salted, int64(s.iter), nil
		}))
}

// exchange runs a full client/server SCRAM exchange; tamper may change the
// server-final message. It returns the server's and the client's verdicts.
func exchange(t *testing.T, c saslClient, srv *sasl.Negotiator, tamper func([]byte) []byte) (serverErr, clientErr error) {
	t.Helper()
	first, err := c.start()
	require.NoError(t, err)
	more, serverFirst, err := srv.Step(first)
	require.NoError(t, err)
	require.True(t, more)
	final, err := c.next(serverFirst)
	require.NoError(t, err)
	_, serverFinal, err := srv.Step(final)
	if err != nil {
		return err, nil
	}
	if tamper != nil {
		serverFinal = tamper(serverFinal)
	}
	return nil, c.finish(serverFinal)
}

// countPBKDF2 counts calls to saltPassword for the duration of the test.
func countPBKDF2(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	orig := saltPassword
	saltPassword = func(h func() hash.Hash, password string, salt []byte, iter int) ([]byte, error) {
		n.Add(1)
		return orig(h, password, salt, iter)
	}
	t.Cleanup(func() { saltPassword = orig })
	return &n
}

func TestSCRAMAgainstMellium(t *testing.T) {
	for _, mech := range []string{MechSCRAMSHA256, MechSCRAMSHA1} {
		t.Run(mech, func(t *testing.T) {
			srv := newSCRAMServer(mech, "alice", "pencil", 4096)

			t.Run("success", func(t *testing.T) {
				c, err := newSASLClient(mech, "alice", "pencil", nil)
				require.NoError(t, err)
				serr, cerr := exchange(t, c, srv.negotiator(), nil)
				require.NoError(t, serr)
				require.NoError(t, cerr)
			})
			t.Run("wrong password", func(t *testing.T) {
				cache := &CredentialCache{}
				c, err := newSASLClient(mech, "alice", "pen", cache)
				require.NoError(t, err)
				serr, _ := exchange(t, c, srv.negotiator(), nil)
				require.Error(t, serr, "the server must refuse the proof")
				require.Zero(t, cache.Stats().Entries, "a failed login must not be cached")
			})
			t.Run("unknown user", func(t *testing.T) {
				c, err := newSASLClient(mech, "mallory", "pencil", nil)
				require.NoError(t, err)
				first, err := c.start()
				require.NoError(t, err)
				_, _, err = srv.negotiator().Step(first)
				require.ErrorIs(t, err, sasl.ErrAuthn)
			})
			t.Run("tampered server signature", func(t *testing.T) {
				cache := &CredentialCache{}
				c, err := newSASLClient(mech, "alice", "pencil", cache)
				require.NoError(t, err)
				serr, cerr := exchange(t, c, srv.negotiator(), func(b []byte) []byte {
					b = append([]byte(nil), b...)
					b[len(b)-3] ^= 1 // inside the base64 signature
					return b
				})
				require.NoError(t, serr)
				require.ErrorIs(t, cerr, ErrServerSignature)
				require.Zero(t, cache.Stats().Entries)
			})
			t.Run("server error attribute", func(t *testing.T) {
				c, err := newSASLClient(mech, "alice", "pencil", nil)
				require.NoError(t, err)
				_, cerr := exchange(t, c, srv.negotiator(), func([]byte) []byte { return []byte("e=invalid-proof") })
				var se *SASLError
				require.ErrorAs(t, cerr, &se)
				require.Equal(t, "invalid-proof", se.Text)
			})
			t.Run("cache hit skips PBKDF2", func(t *testing.T) {
				calls := countPBKDF2(t)
				cache := &CredentialCache{}
				for i := range 3 {
					c, err := newSASLClient(mech, "alice", "pencil", cache)
					require.NoError(t, err)
					serr, cerr := exchange(t, c, srv.negotiator(), nil)
					require.NoError(t, serr, "login %d", i)
					require.NoError(t, cerr, "login %d", i)
				}
				require.EqualValues(t, 1, calls.Load(), "only the first login derives the key")
				st := cache.Stats()
				require.EqualValues(t, 2, st.Hits)
				require.EqualValues(t, 1, st.Misses)
				require.Equal(t, 1, st.Entries)

				// Another password under the same user and salt misses
				// the cache and fails as it should.
				c, err := newSASLClient(mech, "alice", "wrong", cache)
				require.NoError(t, err)
				serr, _ := exchange(t, c, srv.negotiator(), nil)
				require.Error(t, serr)
				require.EqualValues(t, 2, calls.Load())
			})
		})
	}
}

// TestSCRAMSHA256Vector replays the exchange of RFC 7677 section 3.
func TestSCRAMSHA256Vector(t *testing.T) {
	orig := scramNonce
	scramNonce = func() (string, error) { return "rOprNGfwEbeRWgbNEkqO", nil }
	t.Cleanup(func() { scramNonce = orig })

	c, err := newSASLClient(MechSCRAMSHA256, "user", "pencil", nil)
	require.NoError(t, err)
	first, err := c.start()
	require.NoError(t, err)
	require.Equal(t, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", string(first))
	final, err := c.next([]byte("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"))
	require.NoError(t, err)
	require.Equal(t, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", string(final))
	require.NoError(t, c.finish([]byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")))
}

func TestSCRAMMalformedServerFirst(t *testing.T) {
	orig := scramNonce
	scramNonce = func() (string, error) { return "abc", nil }
	t.Cleanup(func() { scramNonce = orig })

	for _, tc := range []struct{ name, msg string }{
		{"empty", ""},
		{"foreign nonce", "r=xyz123,s=c2FsdA==,i=4096"},
		{"nonce not extended", "r=abc,s=c2FsdA==,i=4096"},
		{"bad salt", "r=abcdef,s=!!,i=4096"},
		{"zero iterations", "r=abcdef,s=c2FsdA==,i=0"},
		{"huge iterations", "r=abcdef,s=c2FsdA==,i=999999999"},
		{"mandatory extension", "m=ext,r=abcdef,s=c2FsdA==,i=4096"},
		{"missing salt", "r=abcdef,i=4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newSASLClient(MechSCRAMSHA256, "user", "pencil", nil)
			require.NoError(t, err)
			_, err = c.start()
			require.NoError(t, err)
			_, err = c.next([]byte(tc.msg))
			require.Error(t, err)
		})
	}
}

func TestSCRAMUsernames(t *testing.T) {
	// Phone-number user ids need no escaping.
	srv := newSCRAMServer(MechSCRAMSHA256, "+393331234567", "pw", 4096)
	c, err := newSASLClient(MechSCRAMSHA256, "+393331234567", "pw", nil)
	require.NoError(t, err)
	serr, cerr := exchange(t, c, srv.negotiator(), nil)
	require.NoError(t, serr)
	require.NoError(t, cerr)

	// '=' and ',' are escaped as RFC 5802 section 5.1 requires. (mellium's
	// server, v0.3.2, refuses a name containing '=' even when escaped.)
	c, err = newSASLClient(MechSCRAMSHA256, "a=b,c", "pw", nil)
	require.NoError(t, err)
	first, err := c.start()
	require.NoError(t, err)
	require.Contains(t, string(first), "n=a=3Db=2Cc,")
}

func TestPLAIN(t *testing.T) {
	c, err := newSASLClient(MechPLAIN, "alice", "pencil", nil)
	require.NoError(t, err)
	b, err := c.start()
	require.NoError(t, err)
	require.Equal(t, "\x00alice\x00pencil", string(b))
	require.NoError(t, c.finish(nil))
	_, err = newSASLClient("DIGEST-MD5", "alice", "pencil", nil)
	require.ErrorIs(t, err, ErrMechanism)
}

func TestCredentialCacheConcurrentAndBounded(t *testing.T) {
	cache := &CredentialCache{MaxEntries: 8}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				k := credKey{mech: MechSCRAMSHA256, user: string(rune('a' + g)), iterations: i}
				cache.put(k, []byte{byte(i)})
				_ = cache.get(k)
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, cache.Stats().Entries, 8)

	var nilCache *CredentialCache
	require.Nil(t, nilCache.get(credKey{}))
	nilCache.put(credKey{}, []byte{1}) // no-op, no panic
}

// FuzzSCRAMServerMessages feeds arbitrary server-first and server-final
// messages to the client: it must fail cleanly, never panic, and never
// accept a server-final message it did not verify.
func FuzzSCRAMServerMessages(f *testing.F) {
	f.Add([]byte("r=NONCEabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), []byte("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
	f.Add([]byte("r=NONCE,s=,i=1"), []byte("e=invalid-proof"))
	f.Add([]byte("m=x,r=NONCEa,s=c2FsdA==,i=2"), []byte(""))
	f.Add([]byte("r=NONCEa,s=c2FsdA==,i=2,x=ext"), []byte("v=,"))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		origNonce, origSalt := scramNonce, saltPassword
		scramNonce = func() (string, error) { return "NONCE", nil }
		// Any iteration count the server names must not make the fuzzer
		// slow: a cheap stand-in for PBKDF2.
		saltPassword = func(h func() hash.Hash, password string, salt []byte, _ int) ([]byte, error) {
			return hmacSum(h, []byte(password), salt), nil
		}
		defer func() { scramNonce, saltPassword = origNonce, origSalt }()
		c, err := newSASLClient(MechSCRAMSHA256, "user", "pencil", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.start(); err != nil {
			t.Fatal(err)
		}
		sc := c.(*scramClient)
		if _, err := sc.next(first); err != nil {
			return
		}
		if sc.finish(final) == nil {
			want := "v=" + base64.StdEncoding.EncodeToString(sc.hmac(sc.serverKey, string(sc.authMessage)))
			if !strings.HasPrefix(string(final), want) {
				t.Fatalf("accepted an unverified server-final %q", final)
			}
		}
	})
}

func hmacSum(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}
