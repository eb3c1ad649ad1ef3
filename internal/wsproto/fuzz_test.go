package wsproto

import (
	"bytes"
	"testing"
)

// buildFrames turns fuzz input into mostly well-formed client frames, so
// the fuzzer reaches fragmentation, control frames between fragments and
// the limits rather than stopping at the first unmasked frame. Each frame
// is a control byte, a length byte and that many payload bytes. The
// control byte picks the opcode (continuation more often than the others),
// FIN, a longer payload (the given one repeated past 300 or past 70000
// bytes), a 16-bit length for a short payload, and now and then a
// reserved bit or no mask. The output stops growing past 160 KiB.
func buildFrames(spec []byte) []byte {
	ops := [8]Opcode{OpText, OpContinuation, OpContinuation, OpBinary, OpPing, OpPong, OpClose, OpContinuation}
	var out []byte
	for len(spec) >= 2 && len(out) < 160<<10 { // bounded, to keep executions fast
		ctl, n := spec[0], min(int(spec[1]), len(spec)-2)
		payload := spec[2 : 2+n]
		spec = spec[2+n:]
		op := ops[ctl&7]
		b0 := byte(op)
		if ctl&0x08 != 0 {
			b0 |= 0x80
		}
		lenBytes := 0
		switch ctl >> 4 {
		case 0xf:
			b0 |= 0x40
		case 0xe:
			b0 |= 0x20
		case 0xd:
			if len(payload) > 0 {
				payload = bytes.Repeat(payload, 300/len(payload)+1)
			}
		case 0xc:
			if len(payload) > 0 {
				payload = bytes.Repeat(payload, 70000/len(payload)+1)
			}
		case 0xb:
			lenBytes = 2
		}
		out = append(out, rawFrame(b0, ctl>>4 != 0xa, lenBytes, payload)...)
	}
	return out
}

// FuzzReader parses arbitrary bytes (or frames built from them) in an
// arbitrary chunking, with and without Compact: it must not panic, every
// call must consume or advance (drive checks), the result must be the
// same for every chunking, and it must agree with the simple reference
// parser.
func FuzzReader(f *testing.F) {
	for _, c := range readerCases() {
		if len(c.in) > 4096 {
			continue // big inputs make mutation slow; structured input builds them
		}
		f.Add(c.in, []byte{0}, uint16(c.limit), false)
		f.Add(c.in, []byte{2, 0, 6}, uint16(c.limit), false)
	}
	f.Add([]byte("\x00\x03abc\x05\x01p\x09\x02de"), []byte{1}, uint16(0), true)
	f.Add([]byte("\x00\x03abc\xd0\x02xy\x0c\x00\x09\x01z\x01\x00"), []byte{1, 200}, uint16(0), true)
	f.Add([]byte("\x08\x05\xe2\x9c\x93ok\x0e\x02\x03\xe8"), []byte{0}, uint16(4), true)
	f.Fuzz(func(t *testing.T, data, chunks []byte, limit uint16, structured bool) {
		if structured {
			data = buildFrames(data)
		}
		lim := int(limit)
		whole := drive(t, data, lim, nil, false)
		if ref := reference(data, lim); !ref.equal(whole, true) {
			t.Fatalf("reference %s, Reader %s", short(ref.String()), short(whole.String()))
		}
		sizes := make([]int, len(chunks))
		for i, c := range chunks {
			sizes[i] = int(c) + 1
		}
		if len(sizes) == 0 {
			sizes = []int{1}
		}
		if got := drive(t, data, lim, sizes, false); !got.equal(whole, true) {
			t.Fatalf("chunked %v: %s, whole: %s", sizes, short(got.String()), short(whole.String()))
		}
		if got := drive(t, data, lim, sizes, true); !got.equal(whole, false) {
			t.Fatalf("chunked %v with Compact: %s, whole: %s", sizes, short(got.String()), short(whole.String()))
		}
	})
}
