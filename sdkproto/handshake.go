package sdkproto

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// handshakeResult is what negotiation established.
type handshakeResult struct {
	resumed   bool
	h         uint32  // server's h from <resumed/>
	failedH   *uint32 // server's h from <failed h/>, if it sent one
	jid       string
	smEnabled bool
	smID      string // resumption id, "" if not resumable
}

// handshake dials and negotiates a session: TLS, SASL, then resumption
// (if tryResume and we hold a resumable id) or bind and stream management.
// It runs in the calling goroutine while no reader goroutine runs.
func (c *Client) handshake(ctx context.Context, tryResume bool) (*session, handshakeResult, error) {
	var hs handshakeResult
	ctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	stopOnClose := context.AfterFunc(c.ctx, cancel)
	defer stopOnClose()

	var (
		tr  transport
		err error
	)
	if c.cfg.Transport == TransportWebSocket {
		tr, err = dialWS(ctx, &c.cfg, c.tlsCfg)
	} else {
		tr, err = dialTCP(ctx, &c.cfg, c.tlsCfg)
	}
	if err != nil {
		return nil, hs, fmt.Errorf("sdkproto: connect %s: %w", c.cfg.Transport, err)
	}
	if d, ok := ctx.Deadline(); ok {
		tr.setReadDeadline(d)
	}
	// Cancelling ctx aborts any blocked read or write.
	stopDrop := context.AfterFunc(ctx, func() { tr.drop() })

	hs, err = c.negotiate(ctx, tr, tryResume)
	if !stopDrop() || err != nil {
		tr.drop()
		if err == nil {
			err = ctx.Err()
		}
		if ctx.Err() != nil && !isFinal(err) {
			err = fmt.Errorf("sdkproto: handshake: %w (%w)", ctx.Err(), err)
		}
		return nil, hs, err
	}
	tr.setReadDeadline(time.Time{})
	return &session{tr: tr, done: make(chan struct{})}, hs, nil
}

// negotiate runs the XMPP negotiation on a connected transport: STARTTLS
// when the transport needs it, SASL, then resumption or bind and stream
// management.
//
// Once a Client has negotiated with the gateway, it remembers the features
// the server offered before and after authentication, and on the next
// connection it pipelines (as XEP-0305 describes): the SASL <auth/> goes
// out with the stream header, and the resume, or bind and enable, with the
// header of the authenticated stream, instead of each waiting for the
// server's features. A login then takes four round trips (TLS, stream and
// auth, SCRAM's final step, the bound stream) instead of seven; on a mobile
// network, where a woken device reconnects to fetch what waits for it,
// that is most of the time to its first message. The server answers every
// element in order, so the answers are read as before; a negotiation that
// fails forgets what was remembered, and the next one waits for each
// feature list again. Config.DisablePipelining turns it off.
func (c *Client) negotiate(ctx context.Context, tr transport, tryResume bool) (handshakeResult, error) {
	hs, err := c.negotiateStreams(ctx, tr, tryResume)
	if err != nil {
		c.mu.Lock()
		c.known = knownFeatures{}
		c.mu.Unlock()
	}
	return hs, err
}

func (c *Client) negotiateStreams(ctx context.Context, tr transport, tryResume bool) (handshakeResult, error) {
	var hs handshakeResult
	if !tr.secure() && c.cfg.Transport == TransportStartTLS {
		f, err := c.openStream(tr)
		if err != nil {
			return hs, err
		}
		if !f.startTLS {
			return hs, fmt.Errorf("%w: server does not offer STARTTLS", ErrProtocol)
		}
		if err := tr.write([]byte("<starttls xmlns='" + NSTLS + "'/>")); err != nil {
			return hs, err
		}
		e, err := c.expect(tr, func(e *Element) bool { return e.Name.Space == NSTLS })
		if err != nil {
			return hs, err
		}
		if e.Name.Local != "proceed" {
			return hs, fmt.Errorf("%w: STARTTLS refused", ErrProtocol)
		}
		if err := tr.startTLS(ctx, c.tlsCfg); err != nil {
			return hs, err
		}
	}

	c.mu.Lock()
	known := c.known
	prevID := c.smID
	c.mu.Unlock()
	if c.cfg.DisablePipelining {
		known = knownFeatures{}
	}

	// SASL.
	var (
		f    features
		sc   saslClient
		auth []byte
		err  error
	)
	if known.auth != nil {
		if sc, auth, err = c.saslStart(*known.auth, tr.secure()); err != nil {
			return hs, err
		}
		f, err = c.openStream(tr, auth)
	} else if f, err = c.openStream(tr); err == nil {
		if sc, auth, err = c.saslStart(f, tr.secure()); err == nil {
			err = tr.write(auth)
		}
	}
	if err != nil {
		return hs, err
	}
	if len(f.mechanisms) > 0 {
		fa := f
		known.auth = &fa
	}
	if err := c.saslFinish(tr, sc); err != nil {
		return hs, err
	}

	// The authenticated stream, with what the server offered last time
	// sent along with its header.
	tr.restart()
	resume := tryResume && prevID != "" && !c.cfg.DisableStreamManagement
	var sent struct{ resume, bind, enable bool } // went with the header
	var early [][]byte
	if k := known.bound; k != nil {
		useSM := k.streamManagement && !c.cfg.DisableStreamManagement
		switch {
		case resume && useSM:
			early, sent.resume = [][]byte{c.resumeFrame(prevID)}, true
		case k.bind && !k.sessionRequired:
			early, sent.bind = [][]byte{c.bindFrame()}, true
			if useSM {
				early, sent.enable = append(early, []byte(enableFrame)), true
			}
		}
	}
	if f, err = c.openStream(tr, early...); err != nil {
		return hs, err
	}
	fb := f
	known.bound = &fb
	c.mu.Lock()
	c.known = known
	c.mu.Unlock()

	useSM := f.streamManagement && !c.cfg.DisableStreamManagement
	if resume && (useSM || sent.resume) {
		if !sent.resume {
			if err := tr.write(c.resumeFrame(prevID)); err != nil {
				return hs, err
			}
		}
		e, err := c.expect(tr, func(e *Element) bool { return e.Is(NSSM, "resumed") || e.Is(NSSM, "failed") })
		if err != nil {
			return hs, err
		}
		if e.Name.Local == "resumed" {
			h, err := strconv.ParseUint(e.AttrValue("h"), 10, 32)
			if err != nil {
				return hs, fmt.Errorf("%w: bad <resumed h=%q/>", ErrProtocol, e.AttrValue("h"))
			}
			hs.resumed, hs.h, hs.smEnabled, hs.smID = true, uint32(h), true, prevID
			return hs, nil
		}
		c.stats.resumeFailures.Add(1)
		if h, err := strconv.ParseUint(e.AttrValue("h"), 10, 32); err == nil {
			h32 := uint32(h)
			hs.failedH = &h32
		}
	}

	if !f.bind && !sent.bind {
		return hs, fmt.Errorf("%w: server does not offer bind", ErrProtocol)
	}
	if !sent.bind {
		if err := tr.write(c.bindFrame()); err != nil {
			return hs, err
		}
	}
	res, err := c.expectIQ(tr, "b1")
	if err != nil {
		return hs, fmt.Errorf("sdkproto: bind: %w", err)
	}
	if j := res.Child(NSBind, "bind").Child(NSBind, "jid"); j != nil {
		hs.jid = j.Text
	}
	if f.sessionRequired {
		if err := tr.write([]byte("<iq type='set' id='s1'><session xmlns='" + NSSession + "'/></iq>")); err != nil {
			return hs, err
		}
		if _, err := c.expectIQ(tr, "s1"); err != nil {
			return hs, fmt.Errorf("sdkproto: session: %w", err)
		}
	}

	if useSM || sent.enable {
		if !sent.enable {
			if err := tr.write([]byte(enableFrame)); err != nil {
				return hs, err
			}
		}
		e, err := c.expect(tr, func(e *Element) bool { return e.Is(NSSM, "enabled") || e.Is(NSSM, "failed") })
		if err != nil {
			return hs, err
		}
		if e.Name.Local == "enabled" {
			hs.smEnabled = true
			if r := e.AttrValue("resume"); r == "true" || r == "1" {
				hs.smID = e.AttrValue("id")
			}
		}
	}
	return hs, nil
}

// knownFeatures are the feature lists of the last negotiation with the
// server: before authentication (on the encrypted stream) and after.
type knownFeatures struct {
	auth, bound *features
}

const enableFrame = "<enable xmlns='" + NSSM + "' resume='true'/>"

func (c *Client) resumeFrame(prevID string) []byte {
	b := []byte("<resume xmlns='" + NSSM + "' previd='")
	b = appendEscaped(b, prevID, true)
	b = append(b, "' h='"...)
	b = strconv.AppendUint(b, uint64(c.inH.Load()), 10)
	return append(b, "'/>"...)
}

func (c *Client) bindFrame() []byte {
	b := []byte("<iq type='set' id='b1'><bind xmlns='" + NSBind + "'><resource>")
	b = appendEscaped(b, c.cfg.Device, false)
	return append(b, "</resource></bind></iq>"...)
}

// openStream sends our stream header, then the frames of then in the same
// write, and reads the server's header and features.
func (c *Client) openStream(tr transport, then ...[]byte) (features, error) {
	if err := tr.writeHeader(c.to, then...); err != nil {
		return features{}, err
	}
	e, err := c.next(tr)
	if err != nil {
		return features{}, err
	}
	if !isHeader(e) {
		return features{}, fmt.Errorf("%w: expected a stream header, got <%s/>", ErrProtocol, e.Name.Local)
	}
	e, err = c.expect(tr, isFeatures)
	if err != nil {
		return features{}, err
	}
	return parseFeatures(e), nil
}

// saslStart picks the mechanism from f and returns the SASL client and
// its <auth/> element.
func (c *Client) saslStart(f features, secure bool) (saslClient, []byte, error) {
	mech := c.cfg.Mechanism
	if mech == "" {
		for _, m := range Mechanisms {
			if m == MechPLAIN && !secure {
				continue
			}
			if slices.Contains(f.mechanisms, m) {
				mech = m
				break
			}
		}
	} else if !slices.Contains(f.mechanisms, mech) {
		mech = ""
	}
	if mech == "" {
		return nil, nil, fmt.Errorf("%w: server offers %v", ErrMechanism, f.mechanisms)
	}
	sc, err := newSASLClient(mech, c.cfg.User, c.cfg.Password, c.cfg.Credentials)
	if err != nil {
		return nil, nil, err
	}
	initial, err := sc.start()
	if err != nil {
		return nil, nil, err
	}
	b := []byte("<auth xmlns='" + NSSASL + "' mechanism='" + mech + "'>")
	b = appendBase64(b, initial)
	return sc, append(b, "</auth>"...), nil
}

// saslFinish answers the server's challenges until <success/> or
// <failure/>.
func (c *Client) saslFinish(tr transport, sc saslClient) error {
	for {
		e, err := c.expect(tr, func(e *Element) bool { return e.Name.Space == NSSASL })
		if err != nil {
			return err
		}
		data, err := decodeSASL(e.Text)
		if err != nil && e.Name.Local != "failure" {
			return fmt.Errorf("%w: bad base64 in <%s/>", ErrProtocol, e.Name.Local)
		}
		switch e.Name.Local {
		case "challenge":
			resp, err := sc.next(data)
			if err != nil {
				tr.write([]byte("<abort xmlns='" + NSSASL + "'/>"))
				return err
			}
			b := []byte("<response xmlns='" + NSSASL + "'>")
			b = appendBase64(b, resp)
			b = append(b, "</response>"...)
			if err := tr.write(b); err != nil {
				return err
			}
		case "success":
			return sc.finish(data)
		case "failure":
			return parseSASLFailure(e)
		default:
			return fmt.Errorf("%w: unexpected <%s/> during SASL", ErrProtocol, e.Name.Local)
		}
	}
}

// decodeSASL decodes SASL data. "=" (the RFC 6120 spelling of an empty
// initial response, which some servers also use for empty success data)
// and surrounding whitespace are accepted.
func decodeSASL(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "=" {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// appendBase64 appends b in base64, or "=" for an empty initial response
// (RFC 6120 section 6.4.2).
func appendBase64(dst, b []byte) []byte {
	if len(b) == 0 {
		return append(dst, '=')
	}
	return base64.StdEncoding.AppendEncode(dst, b)
}

// next reads one element during negotiation; a stream error becomes a
// *StreamError and the end of the stream io.ErrUnexpectedEOF.
func (c *Client) next(tr transport) (*Element, error) {
	e, err := tr.next()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("sdkproto: server closed the stream during negotiation: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	if isStreamError(e) {
		return nil, parseStreamError(e)
	}
	return e, nil
}

// expect reads until an element matching want, skipping others (a
// whitespace-tolerant server may interleave pings or acks); at most a few.
func (c *Client) expect(tr transport, want func(*Element) bool) (*Element, error) {
	for range 16 {
		e, err := c.next(tr)
		if err != nil {
			return nil, err
		}
		if want(e) {
			return e, nil
		}
	}
	return nil, fmt.Errorf("%w: too many unexpected elements during negotiation", ErrProtocol)
}

// expectIQ waits for the result of IQ id; an error result becomes a
// *StanzaError.
func (c *Client) expectIQ(tr transport, id string) (*Element, error) {
	e, err := c.expect(tr, func(e *Element) bool { return isStanza(e, "iq") && e.AttrValue("id") == id })
	if err != nil {
		return nil, err
	}
	switch e.AttrValue("type") {
	case "result":
		return e, nil
	case "error":
		return nil, parseStanzaError(e)
	}
	return nil, fmt.Errorf("%w: IQ %s answered with type %q", ErrProtocol, id, e.AttrValue("type"))
}
