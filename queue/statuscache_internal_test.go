package queue

import "testing"

// The cache holds the most recent records by seq: a record is found until
// the message statusCacheShards*statusCacheMax seqs later takes its slot,
// never under another app or seq, and del and clear remove it.
func TestStatusCache(t *testing.T) {
	var c statusCache
	size := uint64(statusCacheShards * statusCacheMax)
	if _, ok := c.get("a", 1); ok {
		t.Fatal("empty cache found a record")
	}
	c.put("a", 1, []byte("one"))
	c.put("a", 2, []byte("two"))
	if v, ok := c.get("a", 1); !ok || string(v) != "one" {
		t.Fatalf("get 1: %q %v", v, ok)
	}
	if _, ok := c.get("b", 1); ok {
		t.Fatal("found under another app")
	}
	if _, ok := c.get("a", 1+size); ok {
		t.Fatal("found under the seq sharing its slot")
	}
	c.put("a", 1+size, []byte("later"))
	if _, ok := c.get("a", 1); ok {
		t.Fatal("an older record survived the newer one taking its slot")
	}
	if v, ok := c.get("a", 1+size); !ok || string(v) != "later" {
		t.Fatalf("get later: %q %v", v, ok)
	}
	c.del("a", 1) // not there any more: leaves the slot's record alone
	if _, ok := c.get("a", 1+size); !ok {
		t.Fatal("del of an evicted seq removed the slot's record")
	}
	c.del("a", 2)
	if _, ok := c.get("a", 2); ok {
		t.Fatal("found after del")
	}
	c.clear()
	if _, ok := c.get("a", 1+size); ok {
		t.Fatal("found after clear")
	}
	c.del("a", 3) // on a cleared shard: nothing
	x := []byte("x")
	if n := testing.AllocsPerRun(100, func() { c.put("a", 5, x); c.get("a", 5) }); n != 0 {
		t.Fatalf("put and get allocate %.0f times", n)
	}
}
