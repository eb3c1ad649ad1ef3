package sdkproto

// DefaultDedupeWindow is how many recent message ids a Client remembers to
// drop redeliveries.
const DefaultDedupeWindow = 4096

// dedupe remembers the last n message ids handed to the application, in a
// ring with a set for lookup. It is used by the reader goroutine only.
type dedupe struct {
	ring []string
	pos  int
	set  map[string]struct{}
}

func newDedupe(n int) *dedupe {
	if n <= 0 {
		n = DefaultDedupeWindow
	}
	return &dedupe{ring: make([]string, 0, min(n, 64)), set: make(map[string]struct{}, min(n, 64))}
}

// seen reports whether id is among the last ids added; if not, it adds it,
// evicting the oldest when the window is full.
func (d *dedupe) seen(id string, window int) bool {
	if _, ok := d.set[id]; ok {
		return true
	}
	if len(d.ring) < window {
		d.ring = append(d.ring, id)
	} else {
		delete(d.set, d.ring[d.pos])
		d.ring[d.pos] = id
		d.pos = (d.pos + 1) % window
	}
	d.set[id] = struct{}{}
	return false
}
