package gateway_test

// Delivery promises under concurrency and mixed transports (SPEC sections
// 3, 4 and 6; docs/protocol.md): per-user order while devices churn on
// XMPP over TLS, STARTTLS, WebSocket and HTTP pull at once; delivery "any"
// with acknowledgements at the same moment; collapse keys and cancellation
// racing delivery; read markers; one user on XMPP and HTTP pull; a fan-out
// that names a user and one of its devices; and after each, the event feed
// against the REST status (dlCheckFeed). Every test runs a real gateway on
// loopback with a real store, through the Go SDK (sdkproto) or dlRaw, a
// hand-written XMPP client for what the SDK does by itself (acknowledging)
// or never does (binding without presence, resuming with a chosen h).

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tether/gateway/api"
	"tether/internal/gatewaytest"
	"tether/sdkproto"
)

const dlPass = "dl-password-123"

// dlWait bounds every wait for an asynchronous outcome.
const dlWait = 10 * time.Second

// dlEnv is a gateway with app acme, and what the tests share.
type dlEnv struct {
	g     *gatewaytest.Gateway
	app   *api.Client
	ctx   context.Context
	creds *sdkproto.CredentialCache // skips PBKDF2 on the many reconnects
}

func dlStart(t *testing.T) *dlEnv {
	g := gatewaytest.Start(t)
	return &dlEnv{g: g, app: g.App(t, "acme"), ctx: ctxT(t), creds: &sdkproto.CredentialCache{}}
}

func (e *dlEnv) user(t *testing.T, user string) {
	t.Helper()
	_, err := e.app.PutUser(e.ctx, "acme", user, api.PutUserRequest{Password: dlPass})
	require.NoError(t, err)
}

// send posts req to acme and returns the ids, in the order of req.To.
func (e *dlEnv) send(t *testing.T, req api.SendRequest) []string {
	t.Helper()
	res, err := e.app.Send(e.ctx, "acme", req, "")
	require.NoError(t, err)
	require.Len(t, res.Messages, len(req.To))
	ids := make([]string, len(res.Messages))
	for i, m := range res.Messages {
		ids[i] = m.ID
	}
	return ids
}

func (e *dlEnv) status(t *testing.T, id string) *api.MessageStatus {
	t.Helper()
	st, err := e.app.GetMessage(e.ctx, "acme", id)
	require.NoError(t, err)
	return st
}

// waitStatus waits until message id has status want.
func (e *dlEnv) waitStatus(t *testing.T, id, want string) *api.MessageStatus {
	t.Helper()
	var st *api.MessageStatus
	eventually(t, dlWait, "message "+id+" "+want, func() bool {
		st = e.status(t, id)
		return st.Status == want
	})
	return st
}

// waitDrained waits until no message waits for any device.
func (e *dlEnv) waitDrained(t *testing.T) {
	t.Helper()
	eventually(t, dlWait, "queue depth 0", func() bool {
		s, err := e.g.Admin().Stats(e.ctx)
		require.NoError(t, err)
		return s.QueueDepth == 0
	})
}

// events reads acme's whole event feed, page by page.
func (e *dlEnv) events(t *testing.T) []api.Event {
	t.Helper()
	var out []api.Event
	after := ""
	for {
		page, err := e.app.Events(e.ctx, "acme", after, 1000, 0)
		require.NoError(t, err)
		for _, raw := range page.Events {
			var ev api.Event
			require.NoError(t, json.Unmarshal(raw, &ev))
			out = append(out, ev)
		}
		if len(page.Events) == 0 {
			return out
		}
		after = page.Next
	}
}

// dlMsgHandler runs in a Client's reader for each message (once per id per
// Client); it gets the Client so that it can Ack or MarkRead.
type dlMsgHandler func(c *sdkproto.Client, m *sdkproto.Message)

// dialE connects user's device over tr with the SDK. It may run on any
// goroutine; the caller closes the Client.
func (e *dlEnv) dialE(app, user, device string, tr sdkproto.Transport, h dlMsgHandler, mod func(*sdkproto.Config)) (*sdkproto.Client, error) {
	cfg := sdkproto.Config{
		Transport: tr, App: app, User: user, Password: dlPass, Device: device,
		TLSConfig:   &tls.Config{InsecureSkipVerify: true},
		Credentials: e.creds,
	}
	switch tr {
	case sdkproto.TransportWebSocket:
		cfg.URL = "ws://" + e.g.Addr("http") + sdkproto.WebSocketPath
	case sdkproto.TransportStartTLS:
		cfg.Addr = e.g.XMPPAddr
	default:
		cfg.Addr = e.g.XMPPSAddr
	}
	var c *sdkproto.Client
	if h != nil {
		cfg.OnMessage = func(m *sdkproto.Message) { h(c, m) }
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := sdkproto.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(e.ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dial is dialE for acme on the test's goroutine, closed with the test.
func (e *dlEnv) dial(t *testing.T, user, device string, tr sdkproto.Transport, h dlMsgHandler, mod func(*sdkproto.Config)) *sdkproto.Client {
	t.Helper()
	c, err := e.dialE("acme", user, device, tr, h, mod)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// dlSettle returns once the gateway handled everything cs sent before:
// the gateway answers a stream's stanzas in order, so its receipts and markers
// are recorded when the ping's answer comes.
func dlSettle(t *testing.T, ctx context.Context, cs ...*sdkproto.Client) {
	t.Helper()
	for _, c := range cs {
		require.NoError(t, c.Ping(ctx))
	}
}

// pull is one GET /v1/device/messages of user's device (HTTP pull).
func (e *dlEnv) pull(ctx context.Context, user, device string, wait int) ([]api.PulledMessage, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/device/messages?wait=%d&limit=1000", e.g.URL, wait), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user+"@acme", dlPass)
	req.Header.Set("Tether-Device", device)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pull: status %d", resp.StatusCode)
	}
	var pr api.PullResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		return nil, err
	}
	return pr.Messages, nil
}

// ack is one POST /v1/device/acks of user's device.
func (e *dlEnv) ack(ctx context.Context, user, device string, acks api.AcksRequest) error {
	b, _ := json.Marshal(acks)
	req, err := http.NewRequestWithContext(ctx, "POST", e.g.URL+"/v1/device/acks", strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	req.SetBasicAuth(user+"@acme", dlPass)
	req.Header.Set("Tether-Device", device)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("acks: status %d", resp.StatusCode)
	}
	return nil
}

func (e *dlEnv) mustPull(t *testing.T, user, device string) []string {
	t.Helper()
	ms, err := e.pull(e.ctx, user, device, 0)
	require.NoError(t, err)
	return dlPulledIDs(ms)
}

func (e *dlEnv) mustAck(t *testing.T, user, device string, acks api.AcksRequest) {
	t.Helper()
	require.NoError(t, e.ack(e.ctx, user, device, acks))
}

func dlPulledIDs(ms []api.PulledMessage) []string {
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

// dlLog records the ids a device was given, repeats included.
type dlLog struct {
	mu  sync.Mutex
	ids []string
}

func (l *dlLog) add(ids ...string) {
	l.mu.Lock()
	l.ids = append(l.ids, ids...)
	l.mu.Unlock()
}

// all returns every id recorded, repeats included.
func (l *dlLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ids)
}

// distinct returns the ids in first-arrival order without repeats: what an
// application that drops repeats by id shows.
func (l *dlLog) distinct() []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range l.all() {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func (l *dlLog) count() int { return len(l.distinct()) }

// dlCheckSeq reports how got (after dedupe) differs from want: missing
// ids, ids not in want, and the first place the order goes back.
func dlCheckSeq(t *testing.T, device string, want, got []string) {
	t.Helper()
	in := map[string]bool{}
	for _, id := range want {
		in[id] = true
	}
	have := map[string]bool{}
	for i, id := range got {
		if !in[id] {
			t.Errorf("%s: got %s (position %d), which was not sent to it", device, id, i)
		}
		if i > 0 && id < got[i-1] {
			t.Errorf("%s: out of enqueue order at position %d: %s after %s", device, i, id, got[i-1])
		}
		have[id] = true
	}
	var missing []string
	for _, id := range want {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s: %d of %d messages never arrived, first %s", device, len(missing), len(want), missing[0])
	}
}

var (
	dlStepRank   = map[string]int{"message.sent": 1, "message.delivered": 2, "message.read": 3}
	dlStatusRank = map[string]int{"enqueued": 0, "sent": 1, "delivered": 2, "read": 3}
)

// dlCheckFeed checks that the event feed and the REST status agree on each
// message of ids (SPEC section 4): every status change of a device is one
// event naming the device, in lifecycle order, never repeated (an <a h/>
// and a receipt for the same message, a resumption's replay, a late ack);
// each device's REST status is the furthest its events reached, and every
// device with an event is listed; the message's status is the furthest any
// device reached, unless a final state ended it, which is one event
// without a device, and for collapsed and cancelled comes only before any
// delivery. It returns the statuses.
func dlCheckFeed(t *testing.T, e *dlEnv, ids []string) map[string]*api.MessageStatus {
	t.Helper()
	byMsg := map[string][]api.Event{}
	for _, ev := range e.events(t) {
		if ev.MessageID != "" {
			byMsg[ev.MessageID] = append(byMsg[ev.MessageID], ev)
		}
	}
	out := map[string]*api.MessageStatus{}
	for _, id := range ids {
		st := e.status(t, id)
		out[id] = st
		seen := map[string]bool{}
		furthest := map[string]int{}
		var finals []string
		for _, ev := range byMsg[id] {
			key := ev.Type + " " + ev.Device
			if seen[key] {
				t.Errorf("message %s: %s for device %q twice", id, ev.Type, ev.Device)
			}
			seen[key] = true
			r, perDevice := dlStepRank[ev.Type]
			if !perDevice {
				finals = append(finals, ev.Type)
				if ev.Device != "" {
					t.Errorf("message %s: final %s names device %q", id, ev.Type, ev.Device)
				}
				continue
			}
			if ev.Device == "" {
				t.Errorf("message %s: %s names no device", id, ev.Type)
				continue
			}
			if r <= furthest[ev.Device] {
				t.Errorf("message %s: %s for %s after a later state", id, ev.Type, ev.Device)
			} else if r != furthest[ev.Device]+1 {
				t.Errorf("message %s: %s for %s without the states before it", id, ev.Type, ev.Device)
			}
			furthest[ev.Device] = max(furthest[ev.Device], r)
		}
		listed := map[string]bool{}
		for _, d := range st.Devices {
			listed[d.Device] = true
			if got, want := dlStatusRank[d.Status], furthest[d.Device]; got != want {
				t.Errorf("message %s: REST says %s is %s, its events reached rank %d", id, d.Device, d.Status, want)
			}
		}
		top := 0
		for d, r := range furthest {
			top = max(top, r)
			if !listed[d] {
				t.Errorf("message %s: device %s has events but no REST status", id, d)
			}
		}
		if rank, live := dlStatusRank[st.Status]; live {
			if len(finals) > 0 {
				t.Errorf("message %s: status %s but final events %v", id, st.Status, finals)
			}
			if rank != top {
				t.Errorf("message %s: status %s, the furthest device reached rank %d", id, st.Status, top)
			}
			continue
		}
		if len(finals) != 1 || finals[0] != "message."+st.Status {
			t.Errorf("message %s: status %s, final events %v", id, st.Status, finals)
		}
		if (st.Status == "cancelled" || st.Status == "collapsed") && top >= 2 {
			t.Errorf("message %s: %s after a device acknowledged it", id, st.Status)
		}
	}
	return out
}

// dlAckedDevices lists the devices of st at delivered or read.
func dlAckedDevices(st *api.MessageStatus) []string {
	var out []string
	for _, d := range st.Devices {
		if d.Status == "delivered" || d.Status == "read" {
			out = append(out, d.Device)
		}
	}
	slices.Sort(out)
	return out
}

// dlCount counts the events of type typ for message id.
func dlCount(evs []api.Event, id, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.MessageID == id && ev.Type == typ {
			n++
		}
	}
	return n
}

// --- a raw XMPP client -----------------------------------------------------------

// dlRaw is a hand-written XMPP client over direct TLS (PLAIN inside TLS).
// After the handshake a goroutine reads the server's elements into in and
// counts the stanzas (XEP-0198 h).
type dlRaw struct {
	t     *testing.T
	tcp   net.Conn
	conn  *tls.Conn
	br    *bufio.Reader
	rd    *sdkproto.Reader
	in    chan *sdkproto.Element
	h     atomic.Uint32
	smid  string
	pings int
}

// raw opens an authenticated stream for user of acme: bind or resume next.
func (e *dlEnv) raw(t *testing.T, user string) *dlRaw {
	t.Helper()
	tcp, err := net.DialTimeout("tcp", e.g.XMPPSAddr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { tcp.Close() })
	conn := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true, ServerName: "acme.localhost"})
	r := &dlRaw{t: t, tcp: tcp, conn: conn, br: bufio.NewReader(conn)}
	r.rd = sdkproto.NewReader(r.br)
	r.open()
	cred := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + dlPass))
	r.write("<auth xmlns='" + sdkproto.NSSASL + "' mechanism='PLAIN'>" + cred + "</auth>")
	el := r.read()
	require.Equal(t, "success", el.Name.Local, "%s", el)
	r.rd.Reset(r.br) // a new stream, on the same buffered input
	r.open()
	return r
}

func (r *dlRaw) open() {
	r.t.Helper()
	r.write("<?xml version='1.0'?><stream:stream to='acme.localhost' version='1.0' xmlns='jabber:client' xmlns:stream='" + sdkproto.NSStream + "'>")
	r.read() // the server's stream header
	f := r.read()
	require.Equal(r.t, "features", f.Name.Local, "%s", f)
}

// read reads one element during the handshake (before start).
func (r *dlRaw) read() *sdkproto.Element {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	el, err := r.rd.Next()
	require.NoError(r.t, err)
	r.conn.SetReadDeadline(time.Time{})
	return el
}

func (r *dlRaw) write(s string) {
	r.t.Helper()
	r.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.conn.Write([]byte(s))
	require.NoError(r.t, err)
}

// bind binds device and enables stream management with resumption; the
// stream is not ready (no presence) until presence.
func (r *dlRaw) bind(device string) {
	r.t.Helper()
	r.write("<iq type='set' id='b1'><bind xmlns='" + sdkproto.NSBind + "'><resource>" + device + "</resource></bind></iq>")
	el := r.read()
	require.Equal(r.t, "result", el.AttrValue("type"), "%s", el)
	r.write("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	el = r.read()
	require.Equal(r.t, "enabled", el.Name.Local, "%s", el)
	r.smid = el.AttrValue("id")
	r.start()
}

// resume resumes session smid, telling the server h stanzas were received.
func (r *dlRaw) resume(smid string, h uint32) {
	r.t.Helper()
	r.write(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", smid, h))
	el := r.read()
	require.Equal(r.t, "resumed", el.Name.Local, "%s", el)
	r.smid = smid
	r.h.Store(h)
	r.start()
}

func (r *dlRaw) start() {
	r.in = make(chan *sdkproto.Element, 4096)
	go func() {
		defer close(r.in)
		for {
			el, err := r.rd.Next()
			if err != nil {
				return
			}
			switch el.Name.Local {
			case "message", "iq", "presence":
				r.h.Add(1)
			}
			r.in <- el
		}
	}()
}

func (r *dlRaw) presence() { r.write("<presence/>") }

// next returns the server's next element.
func (r *dlRaw) next() *sdkproto.Element {
	r.t.Helper()
	select {
	case el, ok := <-r.in:
		require.True(r.t, ok, "the gateway closed the stream")
		return el
	case <-time.After(dlWait):
		r.t.Fatal("raw client: nothing from the gateway")
		return nil
	}
}

// message waits for the next message with content, skipping the rest.
func (r *dlRaw) message() *sdkproto.Message {
	r.t.Helper()
	for {
		if m, ok := sdkproto.ParseMessage(r.next()); ok {
			return m
		}
	}
}

// ping sends an XEP-0199 ping and returns the ids of the messages that came
// before its answer: the gateway handles a stream's stanzas in order, so
// what the stanzas sent before caused (a receipt recorded, messages
// resent) is done when the answer comes.
func (r *dlRaw) ping() []string {
	r.t.Helper()
	r.pings++
	id := fmt.Sprintf("ping%d", r.pings)
	r.write("<iq type='get' id='" + id + "'><ping xmlns='" + sdkproto.NSPing + "'/></iq>")
	var ids []string
	for {
		el := r.next()
		if el.Name.Local == "iq" && el.AttrValue("id") == id {
			return ids
		}
		if m, ok := sdkproto.ParseMessage(el); ok {
			ids = append(ids, m.ID)
		}
	}
}

func (r *dlRaw) smAck(h uint32) { r.write(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", h)) }

func (r *dlRaw) receipt(id string) {
	r.write("<message to='acme.localhost'><received xmlns='" + sdkproto.NSReceipts + "' id='" + id + "'/></message>")
}

func (r *dlRaw) displayed(id string) {
	r.write("<message to='acme.localhost'><displayed xmlns='" + sdkproto.NSMarkers + "' id='" + id + "'/></message>")
}

// drop cuts the TCP connection without ending the stream, as a lost
// network does: the session waits for resumption.
func (r *dlRaw) drop() {
	r.tcp.Close()
	for range r.in { // the reader ends
	}
}

// --- order ------------------------------------------------------------------------

// dlChurned is one device of the order test that keeps reconnecting.
type dlChurned struct {
	name string
	tr   sdkproto.Transport
	h    dlMsgHandler
	log  dlLog
	mu   sync.Mutex
	c    *sdkproto.Client
}

func (d *dlChurned) client() *sdkproto.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

func (d *dlChurned) set(c *sdkproto.Client) {
	d.mu.Lock()
	d.c = c
	d.mu.Unlock()
}

// TestDlOrderPerUserUnderChurn: SPEC 4 "per user, messages are delivered
// in enqueue order" and "every device of the user gets every message".
// Six posters enqueue concurrently to alice (message ids sort in enqueue
// order, so they are the reference) while four devices of alice take them
// at once: XMPP over TLS acknowledging with receipts, over WebSocket with
// XEP-0198 acks only, over STARTTLS with read markers only, and HTTP pull.
// The three XMPP devices keep dropping and coming back: resumption, clean
// end then a fresh session, and a lost connection then a fresh bind over
// the detached session; the pull device's long polls are cut short and it
// skips some acks. Every device must show each id exactly once after
// dedupe, in increasing order; in the end every message is delivered to
// all four, and the feed agrees with the statuses.
func TestDlOrderPerUserUnderChurn(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	total, posters, churns := 480, 6, 12
	if raceEnabled {
		total, churns = 240, 9
	}
	ctx := e.ctx

	devs := []*dlChurned{
		{name: "tls", tr: sdkproto.TransportTLS, h: func(c *sdkproto.Client, m *sdkproto.Message) { c.Ack(m.ID) }},
		{name: "ws", tr: sdkproto.TransportWebSocket, h: func(*sdkproto.Client, *sdkproto.Message) {}},
		{name: "starttls", tr: sdkproto.TransportStartTLS, h: func(c *sdkproto.Client, m *sdkproto.Message) { c.MarkRead(m.ID) }},
	}
	for _, d := range devs {
		h := d.h
		d.h = func(c *sdkproto.Client, m *sdkproto.Message) { d.log.add(m.ID); h(c, m) }
		d.set(e.dial(t, "alice", d.name, d.tr, d.h, nil))
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.client().Close()
		}
	})
	var web dlLog
	_, err := e.pull(ctx, "alice", "web", 0) // known before the first message
	require.NoError(t, err)

	var (
		wg        sync.WaitGroup
		idsMu     sync.Mutex
		ids       []string
		posted    atomic.Bool
		churned   atomic.Int64
		resumed   atomic.Int64
		maxChurns = 10 * churns
	)
	for p := range posters {
		wg.Go(func() {
			var mine []string
			rng := rand.New(rand.NewPCG(uint64(p), 2))
			for i := range total / posters {
				time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond) // spread the posts over the churn
				res, err := e.app.Send(ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: fmt.Sprintf("p%d-%d", p, i)}, "")
				if err != nil {
					t.Errorf("poster %d: %v", p, err)
					return
				}
				mine = append(mine, res.Messages[0].ID)
			}
			if !slices.IsSorted(mine) {
				t.Errorf("poster %d: the ids of its sequential posts do not sort in the order of their 202s", p)
			}
			idsMu.Lock()
			ids = append(ids, mine...)
			idsMu.Unlock()
		})
	}
	var churn sync.WaitGroup
	for i, d := range devs {
		churn.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			// At least churns times, and on while posts go on.
			for k := 0; k < maxChurns && (k < churns || !posted.Load()); k++ {
				time.Sleep(time.Duration(10+rng.IntN(60)) * time.Millisecond) // let messages flow between two churns
				cur := d.client()
				churned.Add(1)
				switch (k + i) % 3 {
				case 0: // lost network, XEP-0198 resumption (or a fresh bind if refused)
					cur.Drop()
					ok, err := cur.Resume(ctx)
					if err != nil {
						t.Errorf("%s: resume: %v", d.name, err)
						return
					}
					if ok {
						resumed.Add(1)
					}
					continue
				case 1: // clean end of stream, then a new session
					cur.Close()
				case 2: // lost network, then a new session binding over the detached one
					cur.Drop()
					cur.Close()
				}
				c, err := e.dialE("acme", "alice", d.name, d.tr, d.h, nil)
				if err != nil {
					t.Errorf("%s: reconnect: %v", d.name, err)
					return
				}
				d.set(c)
			}
		})
	}
	pullDone := make(chan struct{})
	go func() {
		defer close(pullDone)
		rng := rand.New(rand.NewPCG(99, 1))
		deadline := time.Now().Add(dlWait)
		for k := 0; time.Now().Before(deadline); k++ {
			all := web.count() >= total
			wait := 1
			if all {
				wait = 0 // everything seen: drain what is not acknowledged yet
			}
			pctx, cancel := context.WithTimeout(ctx, time.Duration(30+rng.IntN(400))*time.Millisecond)
			ms, err := e.pull(pctx, "alice", "web", wait)
			cancel()
			if err != nil {
				continue // the poll was cut short: its messages come again
			}
			web.add(dlPulledIDs(ms)...)
			if all && len(ms) == 0 {
				return
			}
			if len(ms) > 0 && (all || k%4 != 3) { // some batches are not acknowledged
				if err := e.ack(ctx, "alice", "web", api.AcksRequest{Delivered: dlPulledIDs(ms)}); err != nil {
					t.Errorf("web: %v", err)
				}
			}
		}
		t.Errorf("web: pulled %d of %d before the deadline", web.count(), total)
	}()
	wg.Wait()
	posted.Store(true)
	churn.Wait()
	t.Logf("%d churns while posting, %d of them resumptions", churned.Load(), resumed.Load())
	slices.Sort(ids)
	require.Len(t, ids, total)
	eventually(t, dlWait, "every XMPP device got every message", func() bool {
		for _, d := range devs {
			if d.log.count() < total {
				return false
			}
		}
		return true
	})
	<-pullDone

	for _, d := range devs {
		dlCheckSeq(t, d.name, ids, d.log.distinct())
		t.Logf("%s: %d arrivals for %d messages", d.name, len(d.log.all()), total)
	}
	dlCheckSeq(t, "web", ids, web.distinct())
	t.Logf("web: %d arrivals for %d messages", len(web.all()), total)

	for _, d := range devs {
		d.client().Close() // acknowledges what it received
	}
	e.waitDrained(t)
	sts := dlCheckFeed(t, e, ids)
	for _, id := range ids {
		require.Equal(t, []string{"starttls", "tls", "web", "ws"}, dlAckedDevices(sts[id]), "message %s", id)
	}
}

// --- delivery any ------------------------------------------------------------------

// dlGate holds a device's message callback until the test releases it, so
// that two devices acknowledge at the same moment.
type dlGate struct {
	mu      sync.Mutex
	release chan struct{}
	arrived chan [2]string // device, id
	acked   chan [2]string
}

func dlNewGate() *dlGate {
	return &dlGate{release: make(chan struct{}), arrived: make(chan [2]string, 16), acked: make(chan [2]string, 16)}
}

// arm makes the next callbacks wait for a new release, and returns it.
func (g *dlGate) arm() chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.release = make(chan struct{})
	return g.release
}

// handler signals the arrival, waits for the release, acknowledges with a
// receipt and signals that.
func (g *dlGate) handler(device string) dlMsgHandler {
	return func(c *sdkproto.Client, m *sdkproto.Message) {
		g.mu.Lock()
		rel := g.release
		g.mu.Unlock()
		g.arrived <- [2]string{device, m.ID}
		select {
		case <-rel:
		case <-time.After(dlWait):
		}
		c.Ack(m.ID)
		g.acked <- [2]string{device, m.ID}
	}
}

// wait collects n signals from ch for message id.
func (g *dlGate) wait(t *testing.T, ch chan [2]string, id string, n int) []string {
	t.Helper()
	var devs []string
	for len(devs) < n {
		select {
		case a := <-ch:
			require.Equal(t, id, a[1], "a device got another message")
			devs = append(devs, a[0])
		case <-time.After(dlWait):
			t.Fatalf("message %s: %d of %d devices", id, len(devs), n)
		}
	}
	slices.Sort(devs)
	return devs
}

// TestDlDeliveryAnySimultaneousAcks: delivery "any" completes on the
// first device that acknowledges and withdraws the message from the
// user's other devices (SPEC 3). Both devices online get it, and their
// receipts (each with its <a/>) leave at the same moment, round after
// round: one device is the delivered one, with one message.delivered
// event. The message never comes back to either after a fresh session
// or a resumption, nor to a pull device that never asked.
func TestDlDeliveryAnySimultaneousAcks(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	gate := dlNewGate()
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, gate.handler("phone"), nil)
	tablet := e.dial(t, "alice", "tablet", sdkproto.TransportWebSocket, gate.handler("tablet"), nil)
	require.Empty(t, e.mustPull(t, "alice", "web")) // known, not polling

	const rounds = 12
	var ids []string
	winners := map[string]int{}
	bad := 0
	for r := range rounds {
		rel := gate.arm()
		id := e.send(t, api.SendRequest{To: []string{"alice"}, Body: fmt.Sprintf("any %d", r), Delivery: "any"})[0]
		ids = append(ids, id)
		require.Equal(t, []string{"phone", "tablet"}, gate.wait(t, gate.arrived, id, 2))
		close(rel) // both receipts leave now
		gate.wait(t, gate.acked, id, 2)
		dlSettle(t, e.ctx, phone, tablet)
		st := e.waitStatus(t, id, "delivered")
		acked := dlAckedDevices(st)
		winners[strings.Join(acked, "+")]++
		if n := dlCount(e.events(t), id, "message.delivered"); len(acked) != 1 || n != 1 {
			bad++
			t.Errorf("round %d: delivery any, both devices acknowledging at once: devices at delivered %v, %d message.delivered events; want one", r, acked, n)
		}
	}
	t.Logf("devices at delivered, per round: %v; %d of %d rounds with more than one", winners, bad, rounds)

	// Never again: a fresh session, a resumption, a pull.
	phone.Close()
	e.dial(t, "alice", "phone", sdkproto.TransportTLS, gate.handler("phone"), nil)
	tablet.Drop()
	_, err := tablet.Resume(e.ctx)
	require.NoError(t, err)
	dlSettle(t, e.ctx, tablet)
	require.Empty(t, e.mustPull(t, "alice", "web"))
	select {
	case a := <-gate.arrived:
		t.Fatalf("%s got delivery-any message %s again", a[0], a[1])
	default:
	}
	dlCheckFeed(t, e, ids)
}

// TestDlDeliveryAnyWithdrawnFromOtherDevice: a device that got a delivery
// "any" message and did not acknowledge it loses it once another device
// acknowledges: a resumption does not send it again, nor does a fresh
// session or a pull; an <a h/> of the withdrawn device that counts it
// afterwards does not make it a delivered device. A receipt it sends late
// for it does not either (one delivered device, one message.delivered).
func TestDlDeliveryAnyWithdrawnFromOtherDevice(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	require.Empty(t, e.mustPull(t, "alice", "web"))
	tab := e.raw(t, "alice")
	tab.bind("tablet")
	tab.presence()

	// m1: tablet holds it, drops; phone acknowledges; tablet resumes.
	m1 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "any 1", Delivery: "any"})[0]
	require.Equal(t, m1, tab.message().ID)
	smid := tab.smid
	tab.drop()
	var plog dlLog
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, func(c *sdkproto.Client, m *sdkproto.Message) { plog.add(m.ID); c.Ack(m.ID) }, nil)
	e.waitStatus(t, m1, "delivered")
	tab = e.raw(t, "alice")
	tab.resume(smid, 0)
	require.Empty(t, tab.ping(), "a resumption sent again a delivery-any message another device acknowledged")

	// m2: tablet online, phone acknowledges; then tablet's <a/> counts it.
	m2 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "any 2", Delivery: "any"})[0]
	require.Equal(t, m2, tab.message().ID)
	e.waitStatus(t, m2, "delivered")
	dlSettle(t, e.ctx, phone)
	tab.smAck(tab.h.Load())
	tab.ping()
	st := e.status(t, m2)
	require.Equal(t, []string{"phone"}, dlAckedDevices(st), "an <a/> counting a withdrawn message")

	// A fresh session of tablet, and the pull device: nothing.
	tab.drop()
	fresh := e.raw(t, "alice")
	fresh.bind("tablet")
	fresh.presence()
	require.Empty(t, fresh.ping(), "a fresh session got a delivery-any message another device acknowledged")
	require.Empty(t, e.mustPull(t, "alice", "web"))

	// Late explicit receipts of the withdrawn device.
	fresh.receipt(m1)
	fresh.receipt(m2)
	fresh.ping()
	sts := dlCheckFeed(t, e, []string{m1, m2})
	evs := e.events(t)
	for _, id := range []string{m1, m2} {
		require.Equal(t, []string{"phone"}, dlAckedDevices(sts[id]), "message %s: a late receipt of a device it was withdrawn from", id)
		require.Equal(t, 1, dlCount(evs, id, "message.delivered"), "message %s", id)
	}
	require.Equal(t, []string{m1, m2}, plog.distinct())
}

// --- collapse ---------------------------------------------------------------------------

// TestDlCollapseRaces: messages with one collapse key posted by two
// posters to alice while her phone receives and acknowledges them, and
// with the same key to bob (offline) in between. The phone never gets a
// collapsed message after the one that replaced it (its ids only
// increase); every alice message ends delivered (the phone had it) or
// collapsed by a newer alice message, never both; the newest is
// delivered. Bob's messages collapse only among themselves: all but his
// newest, which waits. A fresh session of the phone gets nothing more.
func TestDlCollapseRaces(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	e.user(t, "bob")
	var plog dlLog
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, func(c *sdkproto.Client, m *sdkproto.Message) { plog.add(m.ID); c.Ack(m.ID) }, nil)

	const per = 30
	var (
		mu               sync.Mutex
		aliceIDs, bobIDs []string
		wg               sync.WaitGroup
	)
	post := func(user string, out *[]string) {
		for i := range per {
			res, err := e.app.Send(e.ctx, "acme", api.SendRequest{To: []string{user}, Body: fmt.Sprintf("code %d", i), CollapseKey: "otp"}, "")
			if err != nil {
				t.Errorf("%s: %v", user, err)
				return
			}
			mu.Lock()
			*out = append(*out, res.Messages[0].ID)
			mu.Unlock()
		}
	}
	wg.Go(func() { post("alice", &aliceIDs) })
	wg.Go(func() { post("alice", &aliceIDs) })
	wg.Go(func() { post("bob", &bobIDs) })
	wg.Wait()
	slices.Sort(aliceIDs)
	slices.Sort(bobIDs)
	newest := aliceIDs[len(aliceIDs)-1]
	e.waitStatus(t, newest, "delivered")
	dlSettle(t, e.ctx, phone)

	got := plog.distinct()
	pos := map[string]int{}
	for i, id := range got {
		pos[id] = i
		if i > 0 {
			require.Greater(t, id, got[i-1], "the phone got %s after the newer %s", id, got[i-1])
		}
	}
	sts := dlCheckFeed(t, e, append(slices.Clone(aliceIDs), bobIDs...))
	isAlice := map[string]bool{}
	for _, id := range aliceIDs {
		isAlice[id] = true
	}
	counts := map[string]int{}
	for _, id := range aliceIDs {
		st := sts[id]
		counts[st.Status]++
		switch st.Status {
		case "delivered":
			_, had := pos[id]
			require.True(t, had, "message %s delivered but the phone never got it", id)
		case "collapsed":
			by, ok := strings.CutPrefix(st.Reason, "replaced by ")
			require.True(t, ok, "reason %q", st.Reason)
			require.True(t, isAlice[by], "alice's %s collapsed by %s, not hers", id, by)
			require.Greater(t, by, id, "collapsed by an older message")
			if pa, had := pos[id]; had {
				if pb, hadB := pos[by]; hadB {
					require.Less(t, pa, pb, "the phone got collapsed %s after its replacement %s", id, by)
				}
			}
		default:
			t.Errorf("alice's %s: status %s", id, st.Status)
		}
	}
	require.Equal(t, "delivered", sts[newest].Status)
	t.Logf("alice: %v of %d; the phone got %d", counts, len(aliceIDs), len(got))
	for i, id := range bobIDs {
		st := sts[id]
		if i == len(bobIDs)-1 {
			require.Equal(t, "enqueued", st.Status, "bob's newest")
			continue
		}
		require.Equal(t, "collapsed", st.Status, "bob's %s", id)
		by, _ := strings.CutPrefix(st.Reason, "replaced by ")
		require.Equal(t, bobIDs[i+1], by, "bob's %s is replaced by his next message", id)
	}

	phone.Close()
	again := e.dial(t, "alice", "phone", sdkproto.TransportTLS, func(c *sdkproto.Client, m *sdkproto.Message) { plog.add(m.ID) }, nil)
	dlSettle(t, e.ctx, again)
	require.Equal(t, got, plog.all(), "a fresh session got messages again")
}

// TestDlCollapseScopeIsTheUser: collapse is per user (SPEC 4: "a newer
// message with the same collapse_key to the same user"), whatever devices
// the messages name: one for alice/tablet replaces an older one for
// alice/phone, so the phone gets neither (neither the SPEC nor the docs
// say whether a key is meant per device target; this pins the SPEC's
// wording), and one for alice replaces both; the same key to bob or in
// another app replaces nothing of alice's.
func TestDlCollapseScopeIsTheUser(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	beta := e.g.App(t, "beta")
	toPhone := e.send(t, api.SendRequest{To: []string{"alice/phone"}, Body: "phone code", CollapseKey: "otp"})[0]
	toTablet := e.send(t, api.SendRequest{To: []string{"alice/tablet"}, Body: "tablet code", CollapseKey: "otp"})[0]
	st := e.status(t, toPhone)
	require.Equal(t, "collapsed", st.Status)
	require.Equal(t, "replaced by "+toTablet, st.Reason)
	toBob := e.send(t, api.SendRequest{To: []string{"bob"}, Body: "bob code", CollapseKey: "otp"})[0]
	_, err := beta.Send(e.ctx, "beta", api.SendRequest{To: []string{"alice"}, Body: "beta code", CollapseKey: "otp"}, "")
	require.NoError(t, err)
	require.Equal(t, "enqueued", e.status(t, toTablet).Status, "collapsed by another user's or app's message")
	toAll := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "code", CollapseKey: "otp"})[0]
	require.Equal(t, "collapsed", e.status(t, toTablet).Status)
	require.Equal(t, []string{toAll}, e.mustPull(t, "alice", "tablet"))
	dlCheckFeed(t, e, []string{toPhone, toTablet, toBob, toAll})
}

// TestDlCollapseUserNamedTwiceInOnePost: a POST naming "alice" and
// "alice/phone" with a collapse key enqueues two messages for alice with
// that key; a newer POST with the key to alice must replace every one
// of them not delivered (SPEC 4), so that the phone never gets two
// codes. The whole-user one escapes: the collapse mapping keeps only the
// last message of the first POST (queue.put reads the mapping from the
// store, not from the batch being built).
func TestDlCollapseUserNamedTwiceInOnePost(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	first := e.send(t, api.SendRequest{To: []string{"alice", "alice/phone"}, Body: "code 1", CollapseKey: "otp"})
	newer := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "code 2", CollapseKey: "otp"})[0]
	for _, id := range first {
		st := e.status(t, id)
		require.Equal(t, "collapsed", st.Status, "message %s of the first POST (to %s), reason %q", id, st.To, st.Reason)
	}
	require.Equal(t, []string{newer}, e.mustPull(t, "alice", "phone"), "the phone gets only the newest code")
	dlCheckFeed(t, e, append(first, newer))
}

// --- cancel -------------------------------------------------------------------------------

// TestDlCancelRacingAck: DELETE of a message at the moment its device's
// receipt leaves, round after round, in both orders. Each answer is
// either cancelled (and the status stays cancelled, no delivered event)
// or 409 (and the message is delivered, no cancelled event); never both.
func TestDlCancelRacingAck(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	gate := dlNewGate()
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, gate.handler("phone"), nil)

	const rounds = 24
	var ids []string
	outcome := map[string]int{}
	for r := range rounds {
		rel := gate.arm()
		id := e.send(t, api.SendRequest{To: []string{"alice/phone"}, Body: fmt.Sprintf("r%d", r)})[0]
		ids = append(ids, id)
		gate.wait(t, gate.arrived, id, 1)
		start := make(chan struct{})
		var (
			wg     sync.WaitGroup
			cst    *api.MessageStatus
			cerr   error
			cancel = func() { cst, cerr = e.app.CancelMessage(e.ctx, "acme", id) }
		)
		wg.Go(func() {
			<-start
			if r%2 == 0 {
				close(rel)
				cancel()
			} else {
				cancel()
				close(rel)
			}
		})
		close(start)
		wg.Wait()
		gate.wait(t, gate.acked, id, 1)
		dlSettle(t, e.ctx, phone)
		st := e.status(t, id)
		if cerr == nil {
			require.Equal(t, "cancelled", cst.Status)
			require.Equal(t, "cancelled", st.Status, "round %d: cancelled, then", r)
			require.Nil(t, st.DeliveredAt)
			outcome["cancelled"]++
		} else {
			apiErr(t, cerr, 409, api.CodeConflict, "")
			require.Equal(t, "delivered", st.Status, "round %d: 409, then", r)
			outcome["409"]++
		}
	}
	t.Logf("outcomes: %v", outcome)
	evs := e.events(t)
	for _, id := range ids {
		require.False(t, dlCount(evs, id, "message.cancelled") > 0 && dlCount(evs, id, "message.delivered") > 0, "message %s both cancelled and delivered", id)
	}
	dlCheckFeed(t, e, ids)
}

// TestDlCancelledNeverRedelivered: messages a device had (sent, not
// acknowledged) and the backend then cancelled never reach a device
// again: not on resumption (raw XMPP, h 0), not on a fresh session (the
// raw device binding again, an SDK device without stream management
// reconnecting), not through HTTP pull; the others do, in order. Late
// acknowledgements of the cancelled ones change nothing.
func TestDlCancelledNeverRedelivered(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	tab := e.raw(t, "alice")
	tab.bind("tablet")
	tab.presence()
	var llog dlLog
	noSM := func(c *sdkproto.Config) { c.DisableStreamManagement = true } // no acks at all: only receipts would
	laptop := e.dial(t, "alice", "laptop", sdkproto.TransportWebSocket, func(_ *sdkproto.Client, m *sdkproto.Message) { llog.add(m.ID) }, noSM)

	var ids []string
	for i := range 6 {
		ids = append(ids, e.send(t, api.SendRequest{To: []string{"alice"}, Body: fmt.Sprintf("m%d", i)})[0])
	}
	for _, id := range ids {
		require.Equal(t, id, tab.message().ID)
	}
	eventually(t, dlWait, "the laptop got all", func() bool { return llog.count() == len(ids) })
	require.Equal(t, ids, e.mustPull(t, "alice", "web"))

	var cancelled, kept []string
	for i, id := range ids {
		if i%2 == 1 {
			kept = append(kept, id)
			continue
		}
		st, err := e.app.CancelMessage(e.ctx, "acme", id)
		require.NoError(t, err)
		require.Equal(t, "cancelled", st.Status)
		cancelled = append(cancelled, id)
	}

	smid := tab.smid
	tab.drop()
	tab = e.raw(t, "alice")
	tab.resume(smid, 0)
	require.Equal(t, kept, tab.ping(), "resumption")
	tab.drop()
	tab = e.raw(t, "alice")
	tab.bind("tablet")
	tab.presence()
	require.Equal(t, kept, tab.ping(), "fresh session")

	laptop.Close()
	var llog2 dlLog
	laptop = e.dial(t, "alice", "laptop", sdkproto.TransportWebSocket, func(_ *sdkproto.Client, m *sdkproto.Message) { llog2.add(m.ID) }, noSM)
	dlSettle(t, e.ctx, laptop)
	require.Equal(t, kept, llog2.all(), "fresh SDK session")
	require.Equal(t, kept, e.mustPull(t, "alice", "web"), "pull")

	for _, id := range cancelled {
		tab.receipt(id)
		tab.displayed(id)
	}
	tab.ping()
	e.mustAck(t, "alice", "web", api.AcksRequest{Delivered: cancelled, Read: cancelled})
	sts := dlCheckFeed(t, e, ids)
	for _, id := range cancelled {
		require.Equal(t, "cancelled", sts[id].Status)
		require.Empty(t, dlAckedDevices(sts[id]), "a late ack of a cancelled message")
	}
}

// --- read markers ------------------------------------------------------------------------------

// TestDlReadMarkers: a displayed marker without a receipt (and without
// stream management, so no <a/>) makes the message read with delivered
// implied (sent, delivered and read events for the device, once each); a
// marker or receipt for another user's message, from another user of the
// app or the same user name in another app, over XMPP or HTTP, is
// ignored; a marker for a message the device was never sent (bound, no
// presence yet) walks it through sent, delivered and read, and the
// device does not get the message when it becomes ready.
func TestDlReadMarkers(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	e.user(t, "bob")
	beta := e.g.App(t, "beta")
	_, err := beta.PutUser(e.ctx, "beta", "alice", api.PutUserRequest{Password: dlPass})
	require.NoError(t, err)

	// Displayed only.
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, func(c *sdkproto.Client, m *sdkproto.Message) { c.MarkRead(m.ID) },
		func(c *sdkproto.Config) { c.DisableStreamManagement = true })
	read := e.send(t, api.SendRequest{To: []string{"alice/phone"}, Body: "read me"})[0]
	st := e.waitStatus(t, read, "read")
	require.NotNil(t, st.DeliveredAt)
	require.Equal(t, []string{"phone"}, dlAckedDevices(st))
	require.Equal(t, []string{"message.sent", "message.delivered", "message.read"}, edgeTypesFor(e.events(t), read))
	dlSettle(t, e.ctx, phone)

	// Someone else's marker.
	other := e.send(t, api.SendRequest{To: []string{"alice/tablet"}, Body: "not yours"})[0]
	bob := e.dial(t, "bob", "tablet", sdkproto.TransportTLS, nil, nil)
	require.NoError(t, bob.MarkRead(other))
	require.NoError(t, bob.Ack(other))
	betaAlice, err := e.dialE("beta", "alice", "tablet", sdkproto.TransportWebSocket, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { betaAlice.Close() })
	require.NoError(t, betaAlice.MarkRead(other))
	require.NoError(t, betaAlice.Ack(other))
	dlSettle(t, e.ctx, bob, betaAlice)
	e.mustAck(t, "bob", "tablet", api.AcksRequest{Delivered: []string{other}, Read: []string{other}})
	require.NoError(t, phone.MarkRead(other)) // alice's phone: the message is for alice/tablet only
	dlSettle(t, e.ctx, phone)
	st = e.status(t, other)
	require.Equal(t, "enqueued", st.Status)
	require.Empty(t, st.Devices)
	require.Empty(t, edgeTypesFor(e.events(t), other))

	// Read before sent.
	pc := e.raw(t, "alice")
	pc.bind("pc")
	early := e.send(t, api.SendRequest{To: []string{"alice/pc"}, Body: "early"})[0]
	pc.displayed(early)
	require.Empty(t, pc.ping(), "a stream without presence got a message")
	st = e.status(t, early)
	require.Equal(t, "read", st.Status)
	require.Equal(t, []string{"message.sent", "message.delivered", "message.read"}, edgeTypesFor(e.events(t), early))
	pc.presence()
	require.Empty(t, pc.ping(), "the device got a message it had marked read")
	pc.receipt(early)
	pc.displayed(early)
	pc.ping()
	dlCheckFeed(t, e, []string{read, other, early})
}

// --- XMPP and HTTP pull together -----------------------------------------------------------------

// TestDlXMPPAndPullSameUser: alice's phone on XMPP and her web client on
// HTTP pull both get every message, in order. Acknowledgements through
// pull count only for the pull device: one for a message addressed to
// alice/phone is ignored, and one for a message the phone has but did not
// acknowledge leaves it pending for the phone, which gets it again.
func TestDlXMPPAndPullSameUser(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	var plog dlLog
	e.dial(t, "alice", "phone", sdkproto.TransportTLS, func(_ *sdkproto.Client, m *sdkproto.Message) { plog.add(m.ID) }, nil)
	require.Empty(t, e.mustPull(t, "alice", "web"))

	const n = 40
	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	for p := range 4 {
		wg.Go(func() {
			for i := range n / 4 {
				res, err := e.app.Send(e.ctx, "acme", api.SendRequest{To: []string{"alice"}, Body: fmt.Sprintf("%d-%d", p, i)}, "")
				if err != nil {
					t.Errorf("send: %v", err)
					return
				}
				mu.Lock()
				ids = append(ids, res.Messages[0].ID)
				mu.Unlock()
			}
		})
	}
	var wlog dlLog
	deadline := time.Now().Add(dlWait)
	for wlog.count() < n && time.Now().Before(deadline) {
		ms, err := e.pull(e.ctx, "alice", "web", 1)
		require.NoError(t, err)
		wlog.add(dlPulledIDs(ms)...)
		if len(ms) > 0 {
			e.mustAck(t, "alice", "web", api.AcksRequest{Delivered: dlPulledIDs(ms)})
		}
	}
	wg.Wait()
	slices.Sort(ids)
	eventually(t, dlWait, "the phone got all", func() bool { return plog.count() == n })
	dlCheckSeq(t, "phone", ids, plog.distinct())
	dlCheckSeq(t, "web", ids, wlog.distinct())
	e.waitDrained(t)
	sts := dlCheckFeed(t, e, ids)
	for _, id := range ids {
		require.Equal(t, []string{"phone", "web"}, dlAckedDevices(sts[id]), "message %s", id)
	}

	// A message for alice/phone, acknowledged by web: ignored.
	forPhone := e.send(t, api.SendRequest{To: []string{"alice/phone"}, Body: "phone only"})[0]
	e.waitStatus(t, forPhone, "delivered")
	e.mustAck(t, "alice", "web", api.AcksRequest{Delivered: []string{forPhone}, Read: []string{forPhone}})
	st := e.status(t, forPhone)
	require.Equal(t, "delivered", st.Status)
	require.Equal(t, []string{"phone"}, dlAckedDevices(st))
	require.Len(t, st.Devices, 1)

	// A device that holds a message without acknowledging it, and web
	// acknowledging it through pull without having pulled it.
	var llog dlLog
	noSM := func(c *sdkproto.Config) { c.DisableStreamManagement = true }
	laptop := e.dial(t, "alice", "laptop", sdkproto.TransportWebSocket, func(_ *sdkproto.Client, m *sdkproto.Message) { llog.add(m.ID) }, noSM)
	held := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "held"})[0]
	eventually(t, dlWait, "the laptop got it", func() bool { return llog.count() == 1 })
	e.mustAck(t, "alice", "web", api.AcksRequest{Delivered: []string{held}})
	e.waitStatus(t, held, "delivered")
	eventually(t, dlWait, "the phone acknowledged it", func() bool {
		return slices.Contains(dlAckedDevices(e.status(t, held)), "phone")
	})
	st = e.status(t, held)
	require.Equal(t, []string{"phone", "web"}, dlAckedDevices(st), "web's pull ack counted for another device")
	laptop.Close()
	var llog2 dlLog
	laptop = e.dial(t, "alice", "laptop", sdkproto.TransportWebSocket, func(_ *sdkproto.Client, m *sdkproto.Message) { llog2.add(m.ID) }, noSM)
	dlSettle(t, e.ctx, laptop)
	require.Equal(t, []string{held}, llog2.all(), "still pending for the laptop")
	dlCheckFeed(t, e, append(ids, forPhone, held))
}

// --- fan-out -----------------------------------------------------------------------------------------

// TestDlFanOutUserAndItsDevice: one POST to 1,000 recipients among which
// "alice", "alice/phone" and "alice/tablet". The answer has 1,000 ids, in
// the order of to, in enqueue order. Each device of alice gets the
// whole-user message and the one addressed to it: two messages with the
// same content and different ids (an SDK cannot drop the second as a
// repeat), each once, in order.
func TestDlFanOutUserAndItsDevice(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	var plog, tlog dlLog
	ack := func(l *dlLog) dlMsgHandler {
		return func(c *sdkproto.Client, m *sdkproto.Message) { l.add(m.ID); c.Ack(m.ID) }
	}
	phone := e.dial(t, "alice", "phone", sdkproto.TransportTLS, ack(&plog), nil)
	tablet := e.dial(t, "alice", "tablet", sdkproto.TransportWebSocket, ack(&tlog), nil)

	to := []string{"alice", "alice/phone"}
	for i := 0; len(to) < 999; i++ {
		to = append(to, fmt.Sprintf("u%04d", i))
	}
	to = append(to, "alice/tablet")
	res, err := e.app.Send(e.ctx, "acme", api.SendRequest{To: to, Body: "fan"}, "")
	require.NoError(t, err)
	require.Len(t, res.Messages, 1000)
	ids := make([]string, len(to))
	for i, m := range res.Messages {
		require.Equal(t, to[i], m.To)
		require.Equal(t, "enqueued", m.Status)
		ids[i] = m.ID
	}
	require.True(t, slices.IsSorted(ids), "ids in the order of to")
	require.Len(t, slices.Compact(slices.Clone(ids)), 1000, "unique ids")
	whole, forPhone, forTablet := ids[0], ids[1], ids[999]

	eventually(t, dlWait, "both devices got two", func() bool { return plog.count() == 2 && tlog.count() == 2 })
	dlSettle(t, e.ctx, phone, tablet)
	require.Equal(t, []string{whole, forPhone}, plog.all())
	require.Equal(t, []string{whole, forTablet}, tlog.all())
	t.Logf("1000 recipients: %d ids; alice/phone got %d messages with the same body (%v)", len(ids), len(plog.all()), plog.all())
	e.waitStatus(t, forTablet, "delivered")
	sts := dlCheckFeed(t, e, []string{whole, forPhone, forTablet, ids[2], ids[998]})
	require.Equal(t, []string{"phone", "tablet"}, dlAckedDevices(sts[whole]))
	require.Equal(t, []string{"phone"}, dlAckedDevices(sts[forPhone]))
	require.Equal(t, []string{"tablet"}, dlAckedDevices(sts[forTablet]))
	require.Equal(t, "enqueued", sts[ids[2]].Status)
}

// --- one event per device and status ------------------------------------------------------------------

// TestDlOneEventPerDeviceAcrossAckForms: a message acknowledged by both
// an <a h/> and a receipt (in either order), one acknowledged by the h of
// a <resume/> and then by a receipt, one sent again on resumption (same
// id) and then acknowledged both ways, and HTTP acks of the same device
// for all of them afterwards: one message.sent and one message.delivered
// per message for the device, and a fresh session gets nothing again.
func TestDlOneEventPerDeviceAcrossAckForms(t *testing.T) {
	e := dlStart(t)
	e.user(t, "alice")
	r := e.raw(t, "alice")
	r.bind("phone")
	r.presence()

	m1 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "1"})[0]
	m2 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "2"})[0]
	require.Equal(t, m1, r.message().ID)
	h1 := r.h.Load()
	require.Equal(t, m2, r.message().ID)
	h2 := r.h.Load()
	r.smAck(h1) // m1 by <a/>, then by receipt
	r.receipt(m1)
	r.receipt(m2) // m2 by receipt, then by <a/>
	r.smAck(h2)
	r.ping()
	require.Equal(t, "delivered", e.status(t, m1).Status)
	require.Equal(t, "delivered", e.status(t, m2).Status)

	// m3: counted only by the h of the resumption, then a receipt.
	m3 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "3"})[0]
	require.Equal(t, m3, r.message().ID)
	h := r.h.Load()
	smid := r.smid
	r.drop()
	r = e.raw(t, "alice")
	r.resume(smid, h)
	r.receipt(m3)
	require.Empty(t, r.ping(), "a resumption that counted everything sent something again")
	require.Equal(t, "delivered", e.status(t, m3).Status)

	// m4: not counted at the resumption: sent again, same id.
	m4 := e.send(t, api.SendRequest{To: []string{"alice"}, Body: "4"})[0]
	require.Equal(t, m4, r.message().ID)
	before := r.h.Load() - 1 // m4 not counted
	r.drop()
	r = e.raw(t, "alice")
	r.resume(smid, before)
	require.Equal(t, m4, r.message().ID, "sent again on resumption with the same id")
	r.smAck(r.h.Load())
	r.receipt(m4)
	r.ping()

	all := []string{m1, m2, m3, m4}
	e.mustAck(t, "alice", "phone", api.AcksRequest{Delivered: all, Read: []string{m1}})
	r.drop()
	fresh := e.raw(t, "alice")
	fresh.bind("phone")
	fresh.presence()
	require.Empty(t, fresh.ping())

	sts := dlCheckFeed(t, e, all)
	evs := e.events(t)
	for _, id := range all {
		require.Equal(t, 1, dlCount(evs, id, "message.sent"), "message %s", id)
		require.Equal(t, 1, dlCount(evs, id, "message.delivered"), "message %s", id)
	}
	require.Equal(t, "read", sts[m1].Status)
}
