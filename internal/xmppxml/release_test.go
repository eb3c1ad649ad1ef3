package xmppxml_test

import (
	"testing"

	"tether/internal/xmppxml"
)

// A released tree's blocks serve the next item: what was read from the
// first tree before the release (strings) stays intact, the second tree
// is whole, and releasing saves the allocations of the blocks.
func TestRelease(t *testing.T) {
	var s xmppxml.Stream
	if _, _, _, err := s.Next([]byte(header)); err != nil {
		t.Fatal(err)
	}
	first := []byte("<message id='m1' to='a@x/p'><body>one</body><received xmlns='urn:xmpp:receipts' id='r1'/></message>")
	second := []byte("<message id='m2' to='b@x/q'><body>two</body><displayed xmlns='urn:xmpp:chat-markers:0' id='r2'/></message>")
	_, _, e1, err := s.Next(first)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := e1.Attr("", "id")
	body1 := e1.Children[0].Text
	e1.Release()
	e1.Release() // twice: nothing
	_, _, e2, err := s.Next(second)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != "m1" || body1 != "one" {
		t.Fatalf("strings of the released tree changed: %q %q", id1, body1)
	}
	id2, _ := e2.Attr("", "id")
	if id2 != "m2" || len(e2.Children) != 2 || e2.Children[0].Text != "two" || e2.Children[1].Name.Local != "displayed" {
		t.Fatalf("second tree: id %q, %d children", id2, len(e2.Children))
	}
	if v, _ := e2.Children[1].Attr("", "id"); v != "r2" {
		t.Fatalf("second tree's marker id %q", v)
	}
	e2.Children[0].Release() // not a root: nothing
	if e2.Children[0].Text != "two" {
		t.Fatal("Release on a child cleared it")
	}
	e2.Release()

	keep := testing.AllocsPerRun(200, func() {
		if _, _, _, err := s.Next(first); err != nil {
			t.Fatal(err)
		}
	})
	released := testing.AllocsPerRun(200, func() {
		_, _, e, err := s.Next(first)
		if err != nil {
			t.Fatal(err)
		}
		e.Release()
	})
	if released > keep-2 {
		t.Fatalf("allocations per stanza: %.1f released, %.1f kept: the blocks were not reused", released, keep)
	}

	// A frame parsed and released, and a failed parse, leave the pool usable.
	f, err := xmppxml.ParseFrame(second)
	if err != nil {
		t.Fatal(err)
	}
	f.Release()
	if _, err := xmppxml.ParseFrame([]byte("<message><body></message>")); err == nil {
		t.Fatal("bad frame accepted")
	}
	g, err := xmppxml.ParseFrame(first)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := g.Attr("", "id"); v != "m1" || g.Children[0].Text != "one" {
		t.Fatalf("frame after a failed one: id %q", v)
	}
	g.Release()
}
