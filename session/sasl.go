package session

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"

	"tether/queue"
)

func randRead(b []byte) { rand.Read(b) }

// errUnknownUser makes a SCRAM exchange fail like a wrong password, and
// errThrottled with <temporary-auth-failure/>.
var (
	errUnknownUser = errors.New("session: unknown user")
	errThrottled   = errors.New("session: throttled")
)

// sasl runs one SASL step. SCRAM (scram.go) checks the client's proof
// against the stored salted password (the password itself is never
// stored); PLAIN is checked against the same key, and only offered inside
// TLS.
func (s *Session) sasl(e *element) CloseReason {
	if s.state&StateSecure == 0 {
		return ReasonPolicy // SASL only inside TLS
	}
	if s.state&StateAuthn != 0 {
		return ReasonPolicy
	}
	switch e.Name.Local {
	case "auth":
		mech := e.Value("mechanism")
		payload, err := decodeSASL(e.Text)
		if err != nil {
			s.saslFailure("incorrect-encoding")
			return ""
		}
		s.authTries++
		if s.authTries > 5 {
			return ReasonPolicy
		}
		switch mech {
		case "PLAIN":
			return s.plain(payload)
		case "SCRAM-SHA-256", "SCRAM-SHA-1":
			return s.scramStart(mech, payload)
		default:
			s.saslFailure("invalid-mechanism")
		}
	case "response":
		if s.scram == nil {
			s.saslFailure("malformed-request")
			return ""
		}
		payload, err := decodeSASL(e.Text)
		if err != nil {
			s.scram = nil
			s.saslFailure("incorrect-encoding")
			return ""
		}
		return s.scramStep(payload)
	case "abort":
		s.scram = nil
		s.saslFailure("aborted")
	default:
		return ReasonNotWellFormed
	}
	return ""
}

func decodeSASL(s string) ([]byte, error) {
	s = string(bytes.TrimSpace([]byte(s)))
	if s == "=" || s == "" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

func (s *Session) sourceAddr() netip.Addr {
	if a := s.t.remoteAddr(); a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr()
		}
	}
	return netip.Addr{}
}

func (s *Session) plain(payload []byte) CloseReason {
	parts := bytes.Split(payload, []byte{0})
	if len(parts) != 3 {
		s.saslFailure("malformed-request")
		return ""
	}
	authz, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if authz != "" && authz != user && authz != user+"@"+s.domain {
		s.saslFailure("invalid-authzid")
		return ""
	}
	if !validUser(user) {
		// No such user can exist; the throttle does not keep the name.
		s.saslFailure("not-authorized")
		s.srv.m.handshakes.WithLabelValues(s.kind, "auth_failed").Inc()
		return ""
	}
	if !s.srv.thr.allow(s.app, user, s.sourceAddr()) {
		s.saslFailure("temporary-auth-failure")
		return ""
	}
	if !s.srv.dir.CheckPassword(s.app, user, pass) {
		s.srv.thr.fail(s.app, user, s.sourceAddr())
		s.saslFailure("not-authorized")
		s.srv.m.handshakes.WithLabelValues(s.kind, "auth_failed").Inc()
		return ""
	}
	return s.authenticated(user, nil)
}

func (s *Session) scramStart(mech string, payload []byte) CloseReason {
	st := newSCRAM(mech)
	st.domain = s.domain
	sf, err := st.first(payload, func(user string) ([]byte, []byte, int, bool, error) {
		if !validUser(user) {
			// No such user can exist: a malformed request, not a try
			// the throttle keeps (nor keeps the client's name for).
			return nil, nil, 0, false, errSCRAM
		}
		if !s.srv.thr.allow(s.app, user, s.sourceAddr()) {
			return nil, nil, 0, false, errThrottled
		}
		salt, salted, iter, err := s.srv.dir.SaltedCredentials(s.app, user, mech)
		if err != nil {
			// An unknown user gets a salt of its own, the same at every
			// try, and fails at the proof: the exchange does not tell
			// which user ids exist.
			salt, salted, iter = s.srv.fakeCredentials(s.app, user)
			return salt, salted, iter, false, nil
		}
		return salt, salted, iter, true, nil
	})
	if err != nil {
		return s.scramFailed(st, err)
	}
	s.scram = st
	s.send([]byte("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(sf) + "</challenge>"))
	return ""
}

func (s *Session) scramStep(payload []byte) CloseReason {
	st := s.scram
	s.scram = nil
	final, err := st.final(payload)
	if err != nil {
		return s.scramFailed(st, err)
	}
	return s.authenticated(st.user, final)
}

// scramFailed answers a failed SCRAM step: a wrong proof (or user) counts
// against the login throttle, a malformed message does not.
func (s *Session) scramFailed(st *scramState, err error) CloseReason {
	switch {
	case errors.Is(err, errThrottled):
		s.saslFailure("temporary-auth-failure")
	case errors.Is(err, errCBind):
		s.saslFailure("invalid-mechanism")
	case errors.Is(err, errSCRAM) || st.user == "":
		s.saslFailure("malformed-request")
	default:
		s.srv.thr.fail(s.app, st.user, s.sourceAddr())
		s.srv.m.handshakes.WithLabelValues(s.kind, "auth_failed").Inc()
		s.saslFailure("not-authorized")
	}
	return ""
}

func (s *Session) authenticated(user string, final []byte) CloseReason {
	if !validUser(user) {
		s.saslFailure("not-authorized")
		return ""
	}
	s.user = user
	s.state |= StateAuthn
	s.srv.thr.succeed(s.app, user)
	body := "="
	if len(final) > 0 {
		body = base64.StdEncoding.EncodeToString(final)
	}
	s.send([]byte("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + body + "</success>"))
	s.t.restart()
	s.domain = "" // a new stream header follows
	return ""
}

func (s *Session) saslFailure(cond string) {
	s.send([]byte("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><" + cond + "/></failure>"))
}

// validUser is the user id grammar (SPEC section 1, plus a leading '+').
func validUser(u string) bool {
	if len(u) == 0 || len(u) > 128 {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '+':
		case i > 0 && (c == '.' || c == '_' || c == '=' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validDevice is the device id grammar, without ids made only of dots
// ("." and ".." are path segments a URL client resolves away).
func validDevice(d string) bool {
	if len(d) == 0 || len(d) > 64 || strings.Trim(d, ".") == "" {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

var _ = queue.DeviceRef{}
