package xmppxml

import "strconv"

// Byte classes for the ASCII fast paths. Bytes from 0x80 up are decoded
// as UTF-8 and checked by rune.
var (
	nameStart  [256]bool // NameStartChar, less ':' (a QName's parts have none)
	nameChar   [256]bool // NameChar, less ':'
	tagSpecial [256]bool // what the scanner looks at in a start tag
	textPlain  [256]bool // character data that needs no attention
	attrPlain  [256]bool // attribute value bytes that need no attention
)

func init() {
	for c := 'a'; c <= 'z'; c++ {
		nameStart[c], nameStart[c-'a'+'A'] = true, true
	}
	nameStart['_'] = true
	nameChar = nameStart
	for c := '0'; c <= '9'; c++ {
		nameChar[c] = true
	}
	nameChar['-'], nameChar['.'] = true, true
	for _, c := range []byte("<>'\"=/") {
		tagSpecial[c] = true
	}
	for c := 0x20; c < 0x80; c++ {
		textPlain[c], attrPlain[c] = true, true
	}
	textPlain['\t'], textPlain['\n'] = true, true
	for _, c := range []byte("<&]") {
		textPlain[c] = false
	}
	for _, c := range []byte("<&'\"") {
		attrPlain[c] = false
	}
}

// isSpace reports whether c is XML whitespace (the S production).
func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// isChar reports whether r is allowed in XML 1.0 (the Char production).
func isChar(r rune) bool {
	switch {
	case r < 0x20:
		return r == 0x09 || r == 0x0A || r == 0x0D
	case r <= 0xD7FF:
		return true
	case r < 0xE000:
		return false
	case r <= 0xFFFD:
		return true
	}
	return r >= 0x10000 && r <= 0x10FFFF
}

// isNameStartRune is NameStartChar (XML 1.0 fifth edition) above ASCII.
func isNameStartRune(r rune) bool {
	switch {
	case r < 0xC0:
		return false
	case r <= 0x2FF:
		return r != 0xD7 && r != 0xF7
	case r < 0x370:
		return false
	case r <= 0x1FFF:
		return r != 0x37E
	case r <= 0x200B:
		return false
	case r <= 0x200D:
		return true
	case r < 0x2070:
		return false
	case r <= 0x218F:
		return true
	case r < 0x2C00:
		return false
	case r <= 0x2FEF:
		return true
	case r < 0x3001:
		return false
	case r <= 0xD7FF:
		return true
	case r < 0xF900:
		return false
	case r <= 0xFDCF:
		return true
	case r < 0xFDF0:
		return false
	case r <= 0xFFFD:
		return true
	}
	return r >= 0x10000 && r <= 0xEFFFF
}

// isNameRune is NameChar above ASCII.
func isNameRune(r rune) bool {
	return isNameStartRune(r) || r == 0xB7 || r >= 0x300 && r <= 0x36F || r == 0x203F || r == 0x2040
}

// internName returns b as a string, without allocating for the names
// XMPP streams use most.
func internName(b []byte) string {
	switch string(b) {
	case "a":
		return "a"
	case "r":
		return "r"
	case "h":
		return "h"
	case "c":
		return "c"
	case "x":
		return "x"
	case "id":
		return "id"
	case "to":
		return "to"
	case "iq":
		return "iq"
	case "xml":
		return "xml"
	case "jid":
		return "jid"
	case "max":
		return "max"
	case "var":
		return "var"
	case "ver":
		return "ver"
	case "from":
		return "from"
	case "type":
		return "type"
	case "body":
		return "body"
	case "bind":
		return "bind"
	case "item":
		return "item"
	case "ping":
		return "ping"
	case "data":
		return "data"
	case "open":
		return "open"
	case "lang":
		return "lang"
	case "auth":
		return "auth"
	case "node":
		return "node"
	case "hash":
		return "hash"
	case "name":
		return "name"
	case "show":
		return "show"
	case "text":
		return "text"
	case "xmlns":
		return "xmlns"
	case "query":
		return "query"
	case "error":
		return "error"
	case "close":
		return "close"
	case "delay":
		return "delay"
	case "stamp":
		return "stamp"
	case "reply":
		return "reply"
	case "token":
		return "token"
	case "topic":
		return "topic"
	case "enable":
		return "enable"
	case "resume":
		return "resume"
	case "previd":
		return "previd"
	case "status":
		return "status"
	case "thread":
		return "thread"
	case "stream":
		return "stream"
	case "active":
		return "active"
	case "message":
		return "message"
	case "request":
		return "request"
	case "version":
		return "version"
	case "session":
		return "session"
	case "subject":
		return "subject"
	case "success":
		return "success"
	case "failure":
		return "failure"
	case "proceed":
		return "proceed"
	case "enabled":
		return "enabled"
	case "resumed":
		return "resumed"
	case "presence":
		return "presence"
	case "resource":
		return "resource"
	case "received":
		return "received"
	case "starttls":
		return "starttls"
	case "features":
		return "features"
	case "priority":
		return "priority"
	case "response":
		return "response"
	case "displayed":
		return "displayed"
	case "challenge":
		return "challenge"
	case "mechanism":
		return "mechanism"
	case "composing":
		return "composing"
	case "mechanisms":
		return "mechanisms"
	case "stream:stream":
		return "stream:stream"
	}
	return string(b)
}

// smallInts are the decimal strings 0 to 99: stream management counters
// and the like.
var smallInts = func() (s [100]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// internValue returns b as a string, without allocating for common
// attribute values: namespaces, stanza types, small numbers.
func internValue(b []byte) string {
	switch len(b) {
	case 0:
		return ""
	case 1:
		if '0' <= b[0] && b[0] <= '9' {
			return smallInts[b[0]-'0']
		}
	case 2:
		if '1' <= b[0] && b[0] <= '9' && '0' <= b[1] && b[1] <= '9' {
			return smallInts[int(b[0]-'0')*10+int(b[1]-'0')]
		}
	}
	switch string(b) {
	case "en":
		return "en"
	case "get":
		return "get"
	case "set":
		return "set"
	case "1.0":
		return "1.0"
	case "chat":
		return "chat"
	case "true":
		return "true"
	case "false":
		return "false"
	case "error":
		return "error"
	case "result":
		return "result"
	case "normal":
		return "normal"
	case "PLAIN":
		return "PLAIN"
	case "headline":
		return "headline"
	case "groupchat":
		return "groupchat"
	case "unavailable":
		return "unavailable"
	case "jabber:client":
		return "jabber:client"
	case "jabber:iq:roster":
		return "jabber:iq:roster"
	case "urn:xmpp:sm:3":
		return "urn:xmpp:sm:3"
	case "urn:xmpp:ping":
		return "urn:xmpp:ping"
	case "urn:xmpp:delay":
		return "urn:xmpp:delay"
	case "urn:xmpp:receipts":
		return "urn:xmpp:receipts"
	case "urn:xmpp:reply:0":
		return "urn:xmpp:reply:0"
	case "urn:xmpp:chat-markers:0":
		return "urn:xmpp:chat-markers:0"
	case "urn:xmpp:hints":
		return "urn:xmpp:hints"
	case "urn:xmpp:sid:0":
		return "urn:xmpp:sid:0"
	case "urn:xmpp:carbons:2":
		return "urn:xmpp:carbons:2"
	case "urn:tether:data:0":
		return "urn:tether:data:0"
	case "urn:tether:expire:0":
		return "urn:tether:expire:0"
	case "urn:tether:channel:0":
		return "urn:tether:channel:0"
	case "urn:tether:push:0":
		return "urn:tether:push:0"
	case "urn:tether:config:0":
		return "urn:tether:config:0"
	case "http://etherx.jabber.org/streams":
		return "http://etherx.jabber.org/streams"
	case "http://jabber.org/protocol/chatstates":
		return "http://jabber.org/protocol/chatstates"
	case "http://jabber.org/protocol/disco#info":
		return "http://jabber.org/protocol/disco#info"
	case "urn:ietf:params:xml:ns:xmpp-tls":
		return "urn:ietf:params:xml:ns:xmpp-tls"
	case "urn:ietf:params:xml:ns:xmpp-sasl":
		return "urn:ietf:params:xml:ns:xmpp-sasl"
	case "urn:ietf:params:xml:ns:xmpp-bind":
		return "urn:ietf:params:xml:ns:xmpp-bind"
	case "urn:ietf:params:xml:ns:xmpp-session":
		return "urn:ietf:params:xml:ns:xmpp-session"
	case "urn:ietf:params:xml:ns:xmpp-stanzas":
		return "urn:ietf:params:xml:ns:xmpp-stanzas"
	case "urn:ietf:params:xml:ns:xmpp-streams":
		return "urn:ietf:params:xml:ns:xmpp-streams"
	case "urn:ietf:params:xml:ns:xmpp-framing":
		return "urn:ietf:params:xml:ns:xmpp-framing"
	}
	return string(b)
}
