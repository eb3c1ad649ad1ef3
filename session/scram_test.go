package session

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"hash"
	"testing"

	"mellium.im/sasl"
)

// scramCreds is a store of one user for the SCRAM server.
func scramCreds(user string, h func() hash.Hash, password string) func(string) ([]byte, []byte, int, bool, error) {
	salt := []byte("0123456789abcdef")
	salted := sasl.SCRAMSaltPassword(h, []byte(password), salt, 4096)
	return func(u string) ([]byte, []byte, int, bool, error) {
		if u != user {
			return []byte("made-up salt...."), []byte("no proof matches this key........"), 4096, false, nil
		}
		return salt, salted, 4096, true, nil
	}
}

// scramWithMellium runs one exchange between mellium's SCRAM client and
// the gateway's server; it returns the server's error, if any.
func scramWithMellium(t *testing.T, mech sasl.Mechanism, user, password string, creds func(string) ([]byte, []byte, int, bool, error)) error {
	t.Helper()
	c := sasl.NewClient(mech, sasl.Credentials(func() ([]byte, []byte, []byte) {
		return []byte(user), []byte(password), nil
	}))
	_, first, err := c.Step(nil)
	if err != nil {
		t.Fatalf("client first: %v", err)
	}
	st := newSCRAM(mech.Name)
	sf, err := st.first(first, creds)
	if err != nil {
		return err
	}
	_, final, err := c.Step(sf)
	if err != nil {
		t.Fatalf("client final: %v", err)
	}
	v, err := st.final(final)
	if err != nil {
		return err
	}
	// The client checks the server's signature.
	if _, _, err := c.Step(v); err != nil {
		t.Fatalf("the client refused the server's signature %q: %v", v, err)
	}
	return nil
}

// TestSCRAMServer: the server logs in mellium's client with SHA-256 and
// SHA-1, including user ids with '=' (escaped as =3D on the wire), and
// refuses a wrong password or an unknown user only at the proof, as the
// same error.
func TestSCRAMServer(t *testing.T) {
	for _, m := range []struct {
		mech sasl.Mechanism
		h    func() hash.Hash
	}{{sasl.ScramSha256, sha256.New}, {sasl.ScramSha1, sha1.New}} {
		for _, user := range []string{"alice", "a=b", "dXNlcg==", "+393331234567"} {
			t.Run(m.mech.Name+"/"+user, func(t *testing.T) {
				creds := scramCreds(user, m.h, "secret")
				if err := scramWithMellium(t, m.mech, user, "secret", creds); err != nil {
					t.Fatalf("right password: %v", err)
				}
				if err := scramWithMellium(t, m.mech, user, "wrong", creds); !errors.Is(err, errProof) {
					t.Fatalf("wrong password: %v, want errProof", err)
				}
				if err := scramWithMellium(t, m.mech, user+"x", "secret", creds); !errors.Is(err, errProof) {
					t.Fatalf("unknown user: %v, want errProof", err)
				}
			})
		}
	}
}

// TestSCRAMServerMalformed: malformed client messages are errSCRAM (or
// errCBind for channel binding), never a login.
func TestSCRAMServerMalformed(t *testing.T) {
	creds := scramCreds("alice", sha256.New, "secret")
	for _, tc := range []struct {
		name, first string
		want        error
	}{
		{"empty", "", errSCRAM},
		{"no gs2 header", "n=alice,r=abc", errSCRAM},
		{"bad cbind flag", "x,,n=alice,r=abc", errSCRAM},
		{"channel binding", "p=tls-unique,,n=alice,r=abc", errCBind},
		{"extension first", "n,,m=ext,n=alice,r=abc", errSCRAM},
		{"no nonce", "n,,n=alice", errSCRAM},
		{"empty nonce", "n,,n=alice,r=", errSCRAM},
		{"empty user", "n,,n=,r=abc", errSCRAM},
		{"bad escape", "n,,n=a=3Xb,r=abc", errSCRAM},
		{"bare =", "n,,n=a=,r=abc", errSCRAM},
		{"bad authzid", "n,x=bob,n=alice,r=abc", errSCRAM},
		{"other authzid", "n,a=bob,n=alice,r=abc", errUnknownUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newSCRAM("SCRAM-SHA-256").first([]byte(tc.first), creds)
			if !errors.Is(err, tc.want) {
				t.Fatalf("first(%q) = %v, want %v", tc.first, err, tc.want)
			}
		})
	}

	// Final messages that do not match the exchange.
	st := newSCRAM("SCRAM-SHA-256")
	sf, err := st.first([]byte("n,,n=alice,r=abc"), creds)
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.TrimPrefix(bytes.Split(sf, []byte{','})[0], []byte("r="))
	for _, final := range []string{
		"",
		"c=biws,r=" + string(nonce),             // no proof
		"c=eSws,r=" + string(nonce) + ",p=AAAA", // another gs2 header ("y,,")
		"c=biws,r=abc,p=AAAA",                   // the client's nonce alone
		"c=biws,r=" + string(nonce) + ",p=not base64!",      // bad proof encoding
		"r=" + string(nonce) + ",c=biws,p=AAAA",             // fields out of order
		"c=!!!!,r=" + string(nonce) + ",p=AAAA",             // bad channel binding encoding
		"c=biws,r=" + string(nonce) + ",p=AAAAAAAAAAAAAAAA", // a proof that does not verify
	} {
		st2 := *st
		if _, err := st2.final([]byte(final)); err == nil {
			t.Fatalf("final(%q) logged in", final)
		}
	}
}

// FuzzSCRAMServer: no client message makes the server panic, and none
// logs in without the password's proof.
func FuzzSCRAMServer(f *testing.F) {
	f.Add([]byte("n,,n=alice,r=abc"), []byte("c=biws,r=abc,p=AAAA"))
	f.Add([]byte("y,a=a=3Db,n=a=3Db,r=x,e=1"), []byte("c=eSxhPWE9M0RiLA==,r=x,p="))
	f.Add([]byte("p=x,,n=a,r=b"), []byte(","))
	creds := scramCreds("alice", sha256.New, "secret")
	f.Fuzz(func(t *testing.T, first, final []byte) {
		st := newSCRAM("SCRAM-SHA-256")
		if _, err := st.first(first, creds); err != nil {
			return
		}
		if _, err := st.final(final); err == nil {
			t.Fatalf("logged in without the password: %q then %q", first, final)
		}
	})
}
