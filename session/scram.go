package session

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"hash"
	"strconv"
)

// The server side of SCRAM (RFC 5802, RFC 7677), without channel binding
// (no -PLUS mechanism is offered).
//
// It is written here rather than taken from mellium.im/sasl, which the
// gateway used before: that server (v0.3.2, scram_server.go) unescapes the
// username ("=3D" to "=") and then refuses any username that contains
// "=", so every user id with "=" (SPEC section 1 allows it, and base64-style
// ids end with it) failed with <malformed-request/>. The check cannot be
// worked around from outside: the client's proof signs the message as
// sent. The tests run this server against mellium's SCRAM client as well
// as the SDK's.

// errSCRAM is a malformed SCRAM message (<malformed-request/>), and
// errProof a proof that does not verify (<not-authorized/>).
var (
	errSCRAM  = errors.New("session: malformed SCRAM message")
	errProof  = errors.New("session: SCRAM proof does not verify")
	errCBind  = errors.New("session: SCRAM channel binding is not offered")
	clientKey = []byte("Client Key")
	serverKey = []byte("Server Key")
)

// scramNonceLen is the length of the server's part of the nonce, in random
// bytes (base64 encoded on the wire).
const scramNonceLen = 18

// scramState is one SCRAM exchange in progress: after the client's first
// message, what its final message is checked against.
type scramState struct {
	h          func() hash.Hash
	user       string // from the client-first message; "" until it parsed
	gs2Header  []byte
	authMsg    []byte // client-first-message-bare "," server-first-message ","
	nonce      []byte // the client's nonce and ours
	salted     []byte // the user's salted password
	credsFound bool   // false: the user does not exist, the proof will fail
	domain     string // the stream's domain: an authzid may be user@domain
}

func newSCRAM(mech string) *scramState {
	h := sha256.New
	if mech == "SCRAM-SHA-1" {
		h = sha1.New
	}
	return &scramState{h: h}
}

// first parses the client-first message; creds returns the user's salt,
// salted password and iteration count (found false for an unknown user:
// the exchange then goes on with made-up values and fails at the proof,
// as a wrong password does). It returns the server-first message.
func (st *scramState) first(msg []byte, creds func(user string) (salt, salted []byte, iter int, found bool, err error)) ([]byte, error) {
	// gs2-header: cbind-flag "," [authzid] ","
	flag, rest, ok := bytes.Cut(msg, []byte{','})
	if !ok {
		return nil, errSCRAM
	}
	switch {
	case bytes.HasPrefix(flag, []byte("p=")):
		return nil, errCBind
	case len(flag) == 1 && (flag[0] == 'n' || flag[0] == 'y'):
	default:
		return nil, errSCRAM
	}
	authz, bare, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return nil, errSCRAM
	}
	var authzID string
	if len(authz) > 0 {
		if !bytes.HasPrefix(authz, []byte("a=")) {
			return nil, errSCRAM
		}
		var err error
		if authzID, err = unescapeSaslname(authz[2:]); err != nil {
			return nil, err
		}
	}
	st.gs2Header = msg[:len(msg)-len(bare)]
	// client-first-message-bare: "n=" saslname "," "r=" nonce ["," ext]
	fields := bytes.Split(bare, []byte{','})
	if len(fields) < 2 || bytes.HasPrefix(fields[0], []byte("m=")) ||
		!bytes.HasPrefix(fields[0], []byte("n=")) || !bytes.HasPrefix(fields[1], []byte("r=")) {
		return nil, errSCRAM
	}
	user, err := unescapeSaslname(fields[0][2:])
	if err != nil || user == "" {
		return nil, errSCRAM
	}
	cnonce := fields[1][2:]
	if len(cnonce) == 0 || !printable(cnonce) {
		return nil, errSCRAM
	}
	st.user = user
	if authzID != "" && authzID != user && (st.domain == "" || authzID != user+"@"+st.domain) {
		return nil, errUnknownUser
	}
	salt, salted, iter, found, err := creds(user)
	if err != nil {
		return nil, err
	}
	st.salted, st.credsFound = salted, found

	var r [scramNonceLen]byte
	randRead(r[:])
	st.nonce = make([]byte, 0, len(cnonce)+base64.RawStdEncoding.EncodedLen(len(r)))
	st.nonce = append(st.nonce, cnonce...)
	st.nonce = base64.RawStdEncoding.AppendEncode(st.nonce, r[:])
	sf := make([]byte, 0, 64+len(st.nonce))
	sf = append(sf, "r="...)
	sf = append(sf, st.nonce...)
	sf = append(sf, ",s="...)
	sf = base64.StdEncoding.AppendEncode(sf, salt)
	sf = append(sf, ",i="...)
	sf = strconv.AppendInt(sf, int64(iter), 10)

	st.authMsg = make([]byte, 0, len(bare)+len(sf)+128)
	st.authMsg = append(st.authMsg, bare...)
	st.authMsg = append(st.authMsg, ',')
	st.authMsg = append(st.authMsg, sf...)
	st.authMsg = append(st.authMsg, ',')
	return sf, nil
}

// final checks the client-final message and returns the server-final
// message (its signature).
func (st *scramState) final(msg []byte) ([]byte, error) {
	// "c=" base64(gs2-header) "," "r=" nonce ["," ext] "," "p=" proof
	i := bytes.LastIndex(msg, []byte(",p="))
	if i < 0 {
		return nil, errSCRAM
	}
	without, proofB64 := msg[:i], msg[i+3:]
	fields := bytes.Split(without, []byte{','})
	if len(fields) < 2 || !bytes.HasPrefix(fields[0], []byte("c=")) || !bytes.HasPrefix(fields[1], []byte("r=")) {
		return nil, errSCRAM
	}
	cb, err := base64.StdEncoding.DecodeString(string(fields[0][2:]))
	if err != nil || !bytes.Equal(cb, st.gs2Header) {
		return nil, errSCRAM
	}
	if !bytes.Equal(fields[1][2:], st.nonce) {
		return nil, errSCRAM
	}
	proof, err := base64.StdEncoding.DecodeString(string(proofB64))
	if err != nil {
		return nil, errSCRAM
	}
	authMsg := append(st.authMsg, without...)

	ck := st.hmac(st.salted, clientKey)
	stored := st.sum(ck)
	sig := st.hmac(stored, authMsg)
	if len(proof) != len(sig) {
		return nil, errProof
	}
	got := make([]byte, len(sig))
	subtle.XORBytes(got, proof, sig)
	if subtle.ConstantTimeCompare(st.sum(got), stored) != 1 || !st.credsFound {
		return nil, errProof
	}
	sk := st.hmac(st.salted, serverKey)
	v := st.hmac(sk, authMsg)
	out := append([]byte("v="), base64.StdEncoding.EncodeToString(v)...)
	return out, nil
}

func (st *scramState) hmac(key, msg []byte) []byte {
	m := hmac.New(st.h, key)
	m.Write(msg)
	return m.Sum(nil)
}

func (st *scramState) sum(b []byte) []byte {
	h := st.h()
	h.Write(b)
	return h.Sum(nil)
}

// unescapeSaslname decodes RFC 5802's saslname: "=2C" is ',' and "=3D" is
// '='; any other '=' is malformed.
func unescapeSaslname(b []byte) (string, error) {
	if bytes.IndexByte(b, '=') < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '=' {
			out = append(out, b[i])
			continue
		}
		switch {
		case i+2 < len(b) && b[i+1] == '2' && b[i+2] == 'C':
			out = append(out, ',')
		case i+2 < len(b) && b[i+1] == '3' && b[i+2] == 'D':
			out = append(out, '=')
		default:
			return "", errSCRAM
		}
		i += 2
	}
	return string(out), nil
}

// printable reports whether b is RFC 5802's printable: ASCII 0x21-0x7E
// without ','.
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}
