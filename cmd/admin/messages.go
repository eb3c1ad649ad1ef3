package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"tether/gateway/api"
)

func send(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "APP USER[/DEVICE]... [--body TEXT] [--data JSON] [flags]")
	body := fs.String("body", "", "message `text`")
	data := fs.String("data", "", "message `JSON` payload (or @FILE)")
	var expiresIn, smsAfter optInt
	fs.Var(&expiresIn, "expires-in", "lifetime in `seconds` (0: only devices online now; default: the app's)")
	priority := fs.String("priority", "", "`priority`: high or normal")
	smsTo := fs.String("sms-to", "", "SMS fallback phone `number`")
	smsText := fs.String("sms-text", "", "SMS fallback `text` (default: the body)")
	fs.Var(&smsAfter, "sms-after", "send the SMS after this many `seconds` without delivery")
	ref := fs.String("ref", "", "your correlation `id`, echoed in every event")
	channel := fs.String("channel", "", "conversation `channel`")
	collapseKey := fs.String("collapse-key", "", "newer messages with this `key` replace older undelivered ones")
	delivery := fs.String("delivery", "", "`mode`: all (every device) or any (first device to acknowledge)")
	idemKey := fs.String("idempotency-key", "", "Idempotency-Key header `value`")
	pos, err := c.parse(fs, args, 2, -1)
	if err != nil {
		return err
	}
	req := api.SendRequest{
		To: pos[1:], Body: *body, ExpiresIn: expiresIn.v, Priority: *priority,
		CollapseKey: *collapseKey, Ref: *ref, Channel: *channel, Delivery: *delivery,
	}
	if *data != "" {
		if req.Data, err = readJSONArg("data", *data); err != nil {
			return err
		}
	}
	if *smsTo != "" {
		req.SMSFallback = &api.SMSFallback{To: *smsTo, Text: *smsText, After: smsAfter.v}
	} else if *smsText != "" || smsAfter.v != nil {
		return usagef("send: --sms-text and --sms-after need --sms-to")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	resp, err := cl.Send(ctx, pos[0], req, *idemKey)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout, "ID", "TO", "STATUS")
	for _, m := range resp.Messages {
		t.row(m.ID, m.To, m.Status)
	}
	return t.flush()
}

func status(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP MSGID"), args, 2, 2)
	if err != nil {
		return err
	}
	m, err := cl.GetMessage(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	t := newTable(c.stdout)
	t.row("id", m.ID)
	t.row("to", m.To)
	t.row("status", m.Status)
	if m.Reason != "" {
		t.row("reason", m.Reason)
	}
	if m.Ref != "" {
		t.row("ref", m.Ref)
	}
	t.row("created_at", fmtTime(m.CreatedAt))
	t.row("expires_at", fmtTime(m.ExpiresAt))
	t.row("sent_at", fmtTimePtr(m.SentAt))
	t.row("delivered_at", fmtTimePtr(m.DeliveredAt))
	t.row("read_at", fmtTimePtr(m.ReadAt))
	if f := m.Fallback; f != nil {
		at := ""
		if !f.At.IsZero() {
			at = fmtTime(f.At)
		}
		t.row("fallback", pairs("to", f.To, "status", f.Status, "at", at, "provider", f.Provider, "detail", quoteIf(f.Detail)))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(m.Devices) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	t = newTable(c.stdout, "DEVICE", "STATUS", "AT")
	for _, d := range m.Devices {
		t.row(d.Device, d.Status, fmtTime(d.At))
	}
	return t.flush()
}

func cancel(c *cli, ctx context.Context, name string, args []string) error {
	pos, cl, err := c.begin(c.flags(name, "APP MSGID"), args, 2, 2)
	if err != nil {
		return err
	}
	m, err := cl.CancelMessage(ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw()
	}
	st := "cancelled"
	if m != nil && m.Status != "" {
		st = m.Status
	}
	_, err = fmt.Fprintf(c.stdout, "message %s: %s\n", pos[1], st)
	return err
}

// followWait is the long-poll wait of events --follow, in seconds.
const followWait = 30

// followPause is the least time between two polls of events --follow that
// returned nothing, in case the gateway answers without waiting.
const followPause = time.Second

func events(c *cli, ctx context.Context, name string, args []string) error {
	fs := c.flags(name, "APP [--after CURSOR] [--limit N] [--wait SECONDS] [--follow]")
	after := fs.String("after", "", "start after this `cursor` (default: the oldest event)")
	limit := fs.Int("limit", 0, "at most `n` events per request (default: the gateway's)")
	wait := fs.Int("wait", 0, "long-poll up to `seconds` for the first new event (--follow: 30)")
	follow := fs.Bool("follow", false, "keep polling and print events as they come, until interrupted")
	pos, cl, err := c.begin(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if !*follow {
		resp, err := cl.Events(ctx, pos[0], *after, *limit, *wait)
		if err != nil {
			return err
		}
		if c.json() {
			return c.printRaw()
		}
		t := newTable(c.stdout, eventHeader...)
		for _, raw := range resp.Events {
			t.row(eventRow(raw)...)
		}
		if err := t.flush(); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "next: %s\n", resp.Next)
		return err
	}

	w := *wait
	if w <= 0 {
		w = followWait
	}
	cursor := *after
	if !c.json() {
		printFollowRow(c.stdout, eventHeader)
	}
	for {
		start := time.Now()
		resp, err := cl.Events(ctx, pos[0], cursor, *limit, w)
		if err != nil {
			if ctx.Err() != nil { // interrupted: a normal end
				return nil
			}
			return err
		}
		for _, raw := range resp.Events {
			if c.json() {
				var b bytes.Buffer
				if json.Compact(&b, raw) != nil {
					b.Reset()
					b.Write(raw)
				}
				b.WriteByte('\n')
				if _, err := c.stdout.Write(b.Bytes()); err != nil {
					return err
				}
				continue
			}
			printFollowRow(c.stdout, eventRow(raw))
		}
		if resp.Next != "" {
			cursor = resp.Next
		}
		if len(resp.Events) == 0 && time.Since(start) < followPause {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(followPause):
			}
		}
	}
}

var eventHeader = []string{"AT", "TYPE", "USER", "DEVICE", "MESSAGE", "DETAIL"}

// eventRow formats one feed event for a table.
func eventRow(raw json.RawMessage) []string {
	var e api.Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return []string{"-", "?", "", "", "", truncate(string(raw), 80)}
	}
	detail := pairs("status", e.Status, "reason", quoteIf(e.Reason), "transport", e.Transport,
		"channel", e.Channel, "ref", e.Ref, "in_reply_to", e.InReplyTo)
	if e.Body != "" {
		detail = pairs("body", quoteIf(truncate(e.Body, 40))) + " " + detail
	}
	if len(e.Data) > 0 {
		detail += " data=" + truncate(string(e.Data), 40)
	}
	if f := e.Fallback; f != nil {
		detail += " " + pairs("fallback", f.Status, "sms_to", f.To)
	}
	return []string{fmtTime(e.At), e.Type, e.User, e.Device, e.MessageID, strings.TrimSpace(detail)}
}

// printFollowRow prints a row with fixed column widths, since rows of
// events --follow arrive one batch at a time.
func printFollowRow(w io.Writer, cols []string) {
	c := make([]any, len(cols))
	for i, col := range cols {
		if col = cellReplacer.Replace(col); col == "" {
			col = "-"
		}
		c[i] = col
	}
	fmt.Fprintf(w, "%-20s  %-22s  %-16s  %-12s  %-26s  %s\n", c...)
}
