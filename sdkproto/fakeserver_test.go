package sdkproto_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"mellium.im/sasl"

	"tether/sdkproto"
)

// This file is a small scripted XMPP server for the client's tests: TLS,
// STARTTLS or WebSocket; SCRAM through mellium's server negotiator and
// PLAIN; bind; XEP-0198 with resumption; receipts for inbound messages and
// answers to the device IQs. It is not the gateway: it only speaks enough
// of the same protocol to drive every path of the client.

const (
	fakeApp    = "acme"
	fakeDomain = "acme.localhost"
	fakeUser   = "alice"
	fakePass   = "pencil-sharp"
)

type fakeOptions struct {
	mode            sdkproto.Transport
	noSM            bool
	failResume      bool
	noAutoAck       bool                  // do not answer <r/>
	resumeH         func(h uint32) uint32 // what to claim in <resumed h/>
	tamperSignature bool
	onBound         func(fc *fakeConn) // before presence is awaited
}

type fakeServer struct {
	t       testing.TB
	opts    fakeOptions
	tlsCfg  *tls.Config
	client  *tls.Config
	ln      net.Listener
	ws      *httptest.Server
	addr    string
	url     string
	salted  map[string][]byte // by mechanism
	salt    []byte
	iter    int
	ready   chan *fakeConn
	wg      sync.WaitGroup
	mu      sync.Mutex
	smByID  map[string]*fakeSession
	byRes   map[string]*fakeConn
	conns   []*fakeConn
	logins  int
	nextID  int
	pushes  []string
	stopped bool
}

type fakeSession struct {
	id       string
	mu       sync.Mutex
	inH      uint32   // client stanzas counted
	outH     uint32   // our stanzas sent
	outAcked uint32   // what the client acknowledged
	unacked  []string // our stanzas not acknowledged
	conn     *fakeConn
}

type fakeConn struct {
	srv    *fakeServer
	rw     frameRW
	sess   *fakeSession // nil without SM
	in     chan *sdkproto.Element
	done   chan struct{}
	wmu    sync.Mutex
	closed bool
}

// frameRW is one side of the server's connection.
type frameRW interface {
	next() (*sdkproto.Element, error)
	write(s string) error
	header() string
	restart()
	startTLS(cfg *tls.Config) error
	close()
	closeTag() string
}

func newFakeServer(t testing.TB, opts fakeOptions) *fakeServer {
	t.Helper()
	srvTLS, clientTLS := testCerts(t)
	s := &fakeServer{
		t: t, opts: opts, tlsCfg: srvTLS, client: clientTLS,
		salt: []byte("saltsaltsaltsalt"), iter: 4096,
		ready:  make(chan *fakeConn, 16),
		smByID: map[string]*fakeSession{},
		byRes:  map[string]*fakeConn{},
		salted: map[string][]byte{
			sdkproto.MechSCRAMSHA256: sasl.SCRAMSaltPassword(sha256.New, []byte(fakePass), []byte("saltsaltsaltsalt"), 4096),
			sdkproto.MechSCRAMSHA1:   sasl.SCRAMSaltPassword(sha1.New, []byte(fakePass), []byte("saltsaltsaltsalt"), 4096),
		},
	}
	switch opts.mode {
	case sdkproto.TransportWebSocket:
		s.ws = httptest.NewServer(http.HandlerFunc(s.serveWS))
		s.url = "ws" + strings.TrimPrefix(s.ws.URL, "http") + sdkproto.WebSocketPath
	default:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.ln, s.addr = ln, ln.Addr().String()
		s.wg.Add(1)
		go s.accept()
	}
	t.Cleanup(s.stop)
	return s
}

func (s *fakeServer) stop() {
	s.mu.Lock()
	s.stopped = true
	conns := append([]*fakeConn(nil), s.conns...)
	s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
	}
	for _, c := range conns {
		c.rw.close()
	}
	if s.ws != nil {
		s.ws.CloseClientConnections()
		s.ws.Close()
	}
	s.wg.Wait()
}

// config returns a client Config for this server.
func (s *fakeServer) config() sdkproto.Config {
	return sdkproto.Config{
		Transport: s.opts.mode, Addr: s.addr, URL: s.url,
		App: fakeApp, User: fakeUser, Password: fakePass, Device: "phone1",
		TLSConfig: s.client, SourceIP: "127.0.0.1",
	}
}

func (s *fakeServer) loginCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			var rw frameRW
			if s.opts.mode == sdkproto.TransportTLS {
				rw = newTCPRW(tls.Server(c, s.tlsCfg), c, true)
			} else {
				rw = newTCPRW(c, c, false)
			}
			s.serve(rw)
		}()
	}
}

func (s *fakeServer) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{sdkproto.WebSocketProtocol}})
	if err != nil {
		return
	}
	s.wg.Add(1)
	defer s.wg.Done()
	s.serve(&wsRW{c: c})
}

// serve negotiates and then runs the session.
func (s *fakeServer) serve(rw frameRW) {
	fc := &fakeConn{srv: s, rw: rw, in: make(chan *sdkproto.Element, 4096), done: make(chan struct{})}
	defer close(fc.done)
	defer rw.close()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.conns = append(s.conns, fc)
	s.mu.Unlock()

	if err := s.negotiate(fc); err != nil {
		return
	}
	fc.run()
}

func (s *fakeServer) features(inner string) string {
	return "<stream:features xmlns:stream='" + sdkproto.NSStream + "'>" + inner + "</stream:features>"
}

func (s *fakeServer) openStream(fc *fakeConn, features string) error {
	e, err := fc.rw.next()
	if err != nil {
		return err
	}
	if e.Name.Local != "stream" && e.Name.Local != "open" {
		return fmt.Errorf("fake: expected a header, got %s", e.Name.Local)
	}
	if e.AttrValue("to") != fakeDomain {
		fc.write(fc.rw.header(), "<stream:error xmlns:stream='"+sdkproto.NSStream+"'><host-unknown xmlns='"+sdkproto.NSStreams+"'/></stream:error>", fc.rw.closeTag())
		return errors.New("fake: host unknown")
	}
	return fc.write(fc.rw.header(), s.features(features))
}

func (s *fakeServer) negotiate(fc *fakeConn) error {
	mechs := "<mechanisms xmlns='" + sdkproto.NSSASL + "'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
	if s.opts.mode == sdkproto.TransportStartTLS {
		if err := s.openStream(fc, "<starttls xmlns='"+sdkproto.NSTLS+"'><required/></starttls>"); err != nil {
			return err
		}
		e, err := fc.rw.next()
		if err != nil || !e.Is(sdkproto.NSTLS, "starttls") {
			return fmt.Errorf("fake: expected starttls: %v", err)
		}
		fc.write("<proceed xmlns='" + sdkproto.NSTLS + "'/>")
		if err := fc.rw.startTLS(s.tlsCfg); err != nil {
			return err
		}
	}
	if err := s.openStream(fc, mechs); err != nil {
		return err
	}
	if err := s.sasl(fc); err != nil {
		return err
	}
	fc.rw.restart()
	sm := "<sm xmlns='" + sdkproto.NSSM + "'/>"
	if s.opts.noSM {
		sm = ""
	}
	if err := s.openStream(fc, "<bind xmlns='"+sdkproto.NSBind+"'/><session xmlns='"+sdkproto.NSSession+"'><optional/></session>"+sm); err != nil {
		return err
	}
	s.mu.Lock()
	s.logins++
	s.mu.Unlock()

	for {
		e, err := fc.rw.next()
		if err != nil {
			return err
		}
		switch {
		case e.Is(sdkproto.NSSM, "resume"):
			s.mu.Lock()
			sess := s.smByID[e.AttrValue("previd")]
			s.mu.Unlock()
			if sess == nil || s.opts.failResume {
				fc.write("<failed xmlns='" + sdkproto.NSSM + "'><item-not-found xmlns='" + sdkproto.NSStanzas + "'/></failed>")
				continue
			}
			h, _ := strconv.ParseUint(e.AttrValue("h"), 10, 32)
			sess.mu.Lock()
			if old := sess.conn; old != nil {
				old.rw.close()
			}
			sess.conn = fc
			fc.sess = sess
			sess.ackLocked(uint32(h))
			claim := sess.inH
			if s.opts.resumeH != nil {
				claim = s.opts.resumeH(sess.inH)
				sess.inH = claim
			}
			frames := []string{"<resumed xmlns='" + sdkproto.NSSM + "' previd='" + sess.id + "' h='" + strconv.FormatUint(uint64(claim), 10) + "'/>"}
			frames = append(frames, sess.unacked...)
			fc.write(frames...)
			sess.mu.Unlock()
			s.ready <- fc
			return nil
		case isIQ(e) && e.Child(sdkproto.NSBind, "bind") != nil:
			res := e.Child(sdkproto.NSBind, "bind").Child(sdkproto.NSBind, "resource").Text
			s.mu.Lock()
			old := s.byRes[res]
			s.byRes[res] = fc
			s.mu.Unlock()
			if old != nil {
				old.streamError("conflict")
			}
			fc.write("<iq type='result' id='" + e.AttrValue("id") + "'><bind xmlns='" + sdkproto.NSBind + "'><jid>" + fakeUser + "@" + fakeDomain + "/" + res + "</jid></bind></iq>")
		case isIQ(e) && e.Child(sdkproto.NSSession, "session") != nil:
			fc.write("<iq type='result' id='" + e.AttrValue("id") + "'/>")
		case e.Is(sdkproto.NSSM, "enable"):
			s.mu.Lock()
			s.nextID++
			sess := &fakeSession{id: "sm" + strconv.Itoa(s.nextID), conn: fc}
			s.smByID[sess.id] = sess
			s.mu.Unlock()
			fc.sess = sess
			fc.write("<enabled xmlns='" + sdkproto.NSSM + "' id='" + sess.id + "' resume='true' max='300'/>")
		case isPresence(e):
			if fc.sess != nil {
				fc.sess.mu.Lock()
				fc.sess.inH++
				fc.sess.mu.Unlock()
			}
			if s.opts.onBound != nil {
				s.opts.onBound(fc)
			}
			s.ready <- fc
			return nil
		default:
			return fmt.Errorf("fake: unexpected <%s/> before presence", e.Name.Local)
		}
	}
}

func isIQ(e *sdkproto.Element) bool       { return e.Name.Local == "iq" }
func isPresence(e *sdkproto.Element) bool { return e.Name.Local == "presence" }

func (s *fakeServer) sasl(fc *fakeConn) error {
	e, err := fc.rw.next()
	if err != nil {
		return err
	}
	if !e.Is(sdkproto.NSSASL, "auth") {
		return errors.New("fake: expected auth")
	}
	mech := e.AttrValue("mechanism")
	data, _ := base64.StdEncoding.DecodeString(e.Text)
	fail := func() error {
		fc.write("<failure xmlns='" + sdkproto.NSSASL + "'><not-authorized/></failure>")
		return errors.New("fake: not authorized")
	}
	if mech == sdkproto.MechPLAIN {
		if string(data) != "\x00"+fakeUser+"\x00"+fakePass {
			return fail()
		}
		return fc.write("<success xmlns='" + sdkproto.NSSASL + "'>=</success>") // as the gateway does
	}
	var m sasl.Mechanism
	switch mech {
	case sdkproto.MechSCRAMSHA256:
		m = sasl.ScramSha256
	case sdkproto.MechSCRAMSHA1:
		m = sasl.ScramSha1
	default:
		return fail()
	}
	n := sasl.NewServer(m, nil, sasl.SaltedCredentials(func(user, _ []byte, _ string) ([]byte, []byte, int64, error) {
		if string(user) != fakeUser {
			return nil, nil, 0, sasl.ErrAuthn
		}
		return s.salt, s.salted[mech], int64(s.iter), nil
	}))
	_, challenge, err := n.Step(data)
	if err != nil {
		return fail()
	}
	fc.write("<challenge xmlns='" + sdkproto.NSSASL + "'>" + base64.StdEncoding.EncodeToString(challenge) + "</challenge>")
	e, err = fc.rw.next()
	if err != nil {
		return err
	}
	data, _ = base64.StdEncoding.DecodeString(e.Text)
	_, final, err := n.Step(data)
	if err != nil {
		return fail()
	}
	if s.opts.tamperSignature {
		final = []byte("v=" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	}
	return fc.write("<success xmlns='" + sdkproto.NSSASL + "'>" + base64.StdEncoding.EncodeToString(final) + "</success>")
}

func (s *fakeSession) ackLocked(h uint32) {
	n := int(h - s.outAcked)
	if n < 0 || n > len(s.unacked) {
		return
	}
	s.unacked = s.unacked[n:]
	s.outAcked = h
}

// run reads the client's stanzas after presence.
func (fc *fakeConn) run() {
	for {
		e, err := fc.rw.next()
		if err == io.EOF {
			// A clean close: answer it; the session is over.
			if _, tcp := fc.rw.(*tcpRW); tcp {
				fc.write(fc.rw.closeTag())
			}
			if fc.sess != nil {
				fc.srv.mu.Lock()
				delete(fc.srv.smByID, fc.sess.id)
				fc.srv.mu.Unlock()
			}
			return
		}
		if err != nil {
			return
		}
		stanza := e.Name.Local == "message" || e.Name.Local == "iq" || e.Name.Local == "presence"
		if stanza && fc.sess != nil {
			fc.sess.mu.Lock()
			fc.sess.inH++
			fc.sess.mu.Unlock()
		}
		select {
		case fc.in <- e:
		default:
		}
		switch {
		case e.Is(sdkproto.NSSM, "r"):
			if !fc.srv.opts.noAutoAck && fc.sess != nil {
				fc.sess.mu.Lock()
				h := fc.sess.inH
				fc.sess.mu.Unlock()
				fc.write("<a xmlns='" + sdkproto.NSSM + "' h='" + strconv.FormatUint(uint64(h), 10) + "'/>")
			}
		case e.Is(sdkproto.NSSM, "a"):
			h, _ := strconv.ParseUint(e.AttrValue("h"), 10, 32)
			fc.sess.mu.Lock()
			fc.sess.ackLocked(uint32(h))
			fc.sess.mu.Unlock()
		case isIQ(e) && (e.AttrValue("type") == "get" || e.AttrValue("type") == "set"):
			id := e.AttrValue("id")
			switch {
			case e.Child(sdkproto.NSPing, "ping") != nil:
				fc.send("<iq type='result' id='" + id + "'/>")
			case e.Child(sdkproto.NSConfig, "config") != nil:
				fc.send("<iq type='result' id='" + id + "'><config xmlns='" + sdkproto.NSConfig + "'>{\"theme\":\"dark\"}</config></iq>")
			case e.Child(sdkproto.NSPush, "push") != nil:
				p := e.Child(sdkproto.NSPush, "push")
				fc.srv.mu.Lock()
				fc.srv.pushes = append(fc.srv.pushes, p.AttrValue("provider")+":"+p.AttrValue("token"))
				fc.srv.mu.Unlock()
				fc.send("<iq type='result' id='" + id + "'/>")
			default:
				fc.send("<iq type='error' id='" + id + "'><error type='cancel'><service-unavailable xmlns='" + sdkproto.NSStanzas + "'/></error></iq>")
			}
		case e.Name.Local == "message" && (e.Child(sdkproto.NSClient, "body") != nil || e.Child("", "body") != nil || e.Child(sdkproto.NSData, "data") != nil):
			if e.Child(sdkproto.NSReceipts, "request") != nil {
				fc.send("<message from='" + fakeDomain + "'><received xmlns='" + sdkproto.NSReceipts + "' id='" + e.AttrValue("id") + "'/></message>")
			}
		}
	}
}

// write sends raw frames.
func (fc *fakeConn) write(frames ...string) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	for _, f := range frames {
		if err := fc.rw.write(f); err != nil {
			return err
		}
	}
	return nil
}

// send sends a stanza, counted and kept for stream management.
func (fc *fakeConn) send(stanza string) {
	if s := fc.sess; s != nil {
		s.mu.Lock()
		s.outH++
		s.unacked = append(s.unacked, stanza)
		s.mu.Unlock()
	}
	fc.write(stanza)
}

// sendMessage sends a gateway message as SPEC section 6 shows it.
func (fc *fakeConn) sendMessage(id, body string) {
	fc.send(gatewayStanza(id, body))
}

func gatewayStanza(id, body string) string {
	return "<message from='" + fakeDomain + "' to='" + fakeUser + "@" + fakeDomain + "/phone1' id='" + id + "' type='normal'>" +
		"<body>" + body + "</body><data xmlns='urn:tether:data:0'>{\"n\":1}</data>" +
		"<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>" +
		"<delay xmlns='urn:xmpp:delay' from='" + fakeDomain + "' stamp='2026-11-22T10:00:00Z'/>" +
		"<expire xmlns='urn:tether:expire:0' at='2026-11-29T10:00:00Z'/>" +
		"<channel xmlns='urn:tether:channel:0'>alerts</channel></message>"
}

func (fc *fakeConn) streamError(cond string) {
	fc.write("<stream:error xmlns:stream='"+sdkproto.NSStream+"'><"+cond+" xmlns='"+sdkproto.NSStreams+"'/></stream:error>", fc.rw.closeTag())
	fc.rw.close()
}

// waitFor returns the first element from the client matching pred.
func (fc *fakeConn) waitFor(t testing.TB, what string, pred func(*sdkproto.Element) bool) *sdkproto.Element {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		select {
		case e := <-fc.in:
			if pred(e) {
				return e
			}
		case <-timer.C:
			t.Fatalf("fake server: no %s from the client", what)
			return nil
		}
	}
}

func (s *fakeServer) waitConn(t testing.TB) *fakeConn {
	t.Helper()
	return within(t, s.ready, 5*time.Second, "fake server: no session")
}

// tcpRW is the server side of XMPP over TCP.
type tcpRW struct {
	conn net.Conn
	raw  net.Conn
	br   *bufio.Reader
	rd   *sdkproto.Reader
}

func newTCPRW(conn, raw net.Conn, _ bool) *tcpRW {
	br := bufio.NewReader(conn)
	return &tcpRW{conn: conn, raw: raw, br: br, rd: sdkproto.NewReader(br)}
}

func (t *tcpRW) next() (*sdkproto.Element, error) {
	t.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	return t.rd.Next()
}

func (t *tcpRW) write(s string) error {
	t.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := t.conn.Write([]byte(s))
	return err
}

func (t *tcpRW) header() string {
	return "<?xml version='1.0'?><stream:stream from='" + fakeDomain + "' id='x' version='1.0' xmlns='" + sdkproto.NSClient + "' xmlns:stream='" + sdkproto.NSStream + "'>"
}

func (t *tcpRW) restart()         { t.rd.Reset(t.br) }
func (t *tcpRW) close()           { t.raw.Close() }
func (t *tcpRW) closeTag() string { return "</stream:stream>" }

func (t *tcpRW) startTLS(cfg *tls.Config) error {
	tc := tls.Server(t.raw, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	t.conn = tc
	t.br = bufio.NewReader(tc)
	t.rd = sdkproto.NewReader(t.br)
	return nil
}

// wsRW is the server side of RFC 7395.
type wsRW struct{ c *websocket.Conn }

func (w *wsRW) next() (*sdkproto.Element, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	e, err := sdkproto.ParseElement(b)
	if err != nil {
		return nil, err
	}
	if e.Is(sdkproto.NSFraming, "close") {
		w.write(w.closeTag())
		return nil, io.EOF
	}
	return e, nil
}

func (w *wsRW) write(s string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.c.Write(ctx, websocket.MessageText, []byte(s))
}

func (w *wsRW) header() string {
	return "<open xmlns='" + sdkproto.NSFraming + "' from='" + fakeDomain + "' id='x' version='1.0'/>"
}

func (w *wsRW) restart()                   {}
func (w *wsRW) close()                     { w.c.CloseNow() }
func (w *wsRW) closeTag() string           { return "<close xmlns='" + sdkproto.NSFraming + "'/>" }
func (w *wsRW) startTLS(*tls.Config) error { return errors.New("fake: no STARTTLS on WebSocket") }

// testCerts makes a self-signed certificate for localhost names.
func testCerts(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost", "*.localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool}
}
