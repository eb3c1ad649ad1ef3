package xmppxml_test

import (
	"errors"
	"strconv"
	"strings"

	"tether/internal/xmppxml"
)

// dump renders a tree compactly: {space}local[attrs]"text"(children).
func dump(e *xmppxml.Element) string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	dumpTo(&b, e)
	return b.String()
}

func dumpTo(b *strings.Builder, e *xmppxml.Element) {
	if e.Name.Space != "" {
		b.WriteString("{" + e.Name.Space + "}")
	}
	b.WriteString(e.Name.Local)
	if len(e.Attrs) > 0 {
		b.WriteByte('[')
		for i, a := range e.Attrs {
			if i > 0 {
				b.WriteByte(' ')
			}
			if a.Name.Space != "" {
				b.WriteString("{" + a.Name.Space + "}")
			}
			b.WriteString(a.Name.Local + "=" + strconv.Quote(a.Value))
		}
		b.WriteByte(']')
	}
	if e.Text != "" {
		b.WriteString(strconv.Quote(e.Text))
	}
	if len(e.Children) > 0 {
		b.WriteByte('(')
		for i, c := range e.Children {
			if i > 0 {
				b.WriteByte(' ')
			}
			dumpTo(b, c)
		}
		b.WriteByte(')')
	}
}

// errString is "" for nil, "need more", or the syntax error's message.
func errString(err error) string {
	var se *xmppxml.SyntaxError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, xmppxml.ErrNeedMore):
		return "need more"
	case errors.As(err, &se):
		return se.Msg
	}
	return "unexpected: " + err.Error()
}

// runStream feeds all of in to a Stream and returns what it found, one
// line per item, ending with the error ("need more" if the input stops
// inside an item, "" if it ends between items). Consecutive whitespace
// items are merged. feed says how many more bytes each call may see.
func runStream(in []byte, feed func(have int) int) []string {
	var s xmppxml.Stream
	var out []string
	pos, have := 0, 0
	for calls := 0; calls < 4*len(in)+10; calls++ {
		if have < len(in) {
			have = min(len(in), have+feed(have))
		}
		n, kind, e, err := s.Next(in[pos:have])
		if err == xmppxml.ErrNeedMore {
			if have < len(in) {
				continue
			}
			if pos == len(in) {
				return append(out, "error: ")
			}
		}
		if err != nil {
			return append(out, "error: "+errString(err))
		}
		if n < 0 || n > have-pos {
			return append(out, "bad n "+strconv.Itoa(n))
		}
		pos += n
		line := kind.String()
		if e != nil {
			line += " " + dump(e)
		}
		if kind == xmppxml.KindWhitespace && len(out) > 0 && out[len(out)-1] == line {
			continue
		}
		out = append(out, line)
		if kind == xmppxml.KindEnd {
			return out
		}
	}
	return append(out, "no progress")
}

func whole(int) int { return 1 << 30 }
