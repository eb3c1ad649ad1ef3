package wsproto

import (
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"time"
)

// HandshakeError is a refused opening handshake; Upgrade has answered it
// with Status.
type HandshakeError struct {
	Status int
	Reason string
}

func (e *HandshakeError) Error() string { return "wsproto: handshake refused: " + e.Reason }

// handshakeWriteTimeout bounds writing the 101 response.
const handshakeWriteTimeout = 10 * time.Second

// acceptGUID is appended to the client's key (RFC 6455 section 1.3).
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Upgrade answers the opening handshake of a WebSocket connection (RFC
// 6455 section 4.2) and takes the connection over from net/http.
//
// It checks that the request is a GET over HTTP/1.1 with websocket among
// the Upgrade tokens, upgrade among the Connection tokens, version 13 and
// a key that is 16 bytes in base64. A request that is not a WebSocket
// handshake at all is answered 426 Upgrade Required (or 405 for a method
// other than GET); a missing or malformed version or key 400 Bad Request;
// another version 426 with Sec-WebSocket-Version: 13. The error is then a
// *HandshakeError and the ResponseWriter has been used.
//
// protocol is the first of protocols that the client offered in
// Sec-WebSocket-Protocol, or "" when it offered none of them: the
// handshake still succeeds, and the caller decides whether to go on (RFC
// 6455 lets the server close the connection then). No extension is
// negotiated, whatever the client offers. The Origin header is not
// checked (see the package documentation).
//
// On success the connection (a *tls.Conn under HTTPS) belongs to the
// caller, with no deadlines set; pending holds the bytes the client sent
// after its request that net/http had already read, to be parsed before
// anything read from conn (nil if none). net/http's buffers for the
// connection are not kept. The caller's ResponseWriter header is not sent.
func Upgrade(w http.ResponseWriter, r *http.Request, protocols []string) (conn net.Conn, pending []byte, protocol string, err error) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return nil, nil, "", refuse(w, http.StatusMethodNotAllowed, "method is not GET")
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return nil, nil, "", refuse(w, http.StatusBadRequest, "not HTTP/1.1")
	}
	if !hasToken(r.Header, "Upgrade", "websocket") || !hasToken(r.Header, "Connection", "upgrade") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		return nil, nil, "", refuse(w, http.StatusUpgradeRequired, "not a WebSocket upgrade")
	}
	switch v := r.Header.Values("Sec-WebSocket-Version"); {
	case len(v) == 0 || strings.TrimSpace(v[0]) == "":
		return nil, nil, "", refuse(w, http.StatusBadRequest, "no Sec-WebSocket-Version")
	case len(v) > 1 || strings.TrimSpace(v[0]) != "13":
		w.Header().Set("Sec-WebSocket-Version", "13")
		return nil, nil, "", refuse(w, http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version")
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 || !validKey(strings.TrimSpace(keys[0])) {
		return nil, nil, "", refuse(w, http.StatusBadRequest, "missing or malformed Sec-WebSocket-Key")
	}
	key := strings.TrimSpace(keys[0])
	protocol = choose(r.Header.Values("Sec-WebSocket-Protocol"), protocols)

	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take over the connection", http.StatusInternalServerError)
		return nil, nil, "", err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pending = append([]byte(nil), b...)
	}

	resp := make([]byte, 0, 160)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = appendAccept(resp, key)
	if protocol != "" {
		resp = append(resp, "\r\nSec-WebSocket-Protocol: "...)
		resp = append(resp, protocol...)
	}
	resp = append(resp, "\r\n\r\n"...)
	c.SetWriteDeadline(time.Now().Add(handshakeWriteTimeout))
	if _, err := c.Write(resp); err != nil {
		c.Close()
		return nil, nil, "", err
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, nil, "", err
	}
	return c, pending, protocol, nil
}

func refuse(w http.ResponseWriter, status int, reason string) error {
	http.Error(w, "websocket: "+reason, status)
	return &HandshakeError{Status: status, Reason: reason}
}

// hasToken reports whether the comma-separated lists in header name hold
// token, compared without case.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// choose returns the first of ours that the client offered.
func choose(offered []string, ours []string) string {
	for _, p := range ours {
		if p == "" {
			continue
		}
		for _, v := range offered {
			for t := range strings.SplitSeq(v, ",") {
				if strings.TrimSpace(t) == p {
					return p
				}
			}
		}
	}
	return ""
}

func validKey(k string) bool {
	if len(k) != 24 {
		return false
	}
	var b [18]byte
	n, err := base64.StdEncoding.Strict().Decode(b[:], []byte(k))
	return err == nil && n == 16
}

func appendAccept(dst []byte, key string) []byte {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(dst, h.Sum(sum[:0]))
}
