package queue

import "sync"

// statusCache keeps the encoded status records of recent messages, so that
// marking a message sent, delivered and read reads its status from memory
// rather than from the store (a Pebble Get was about 5 % of the gateway's
// CPU per delivered message in the soak). It is written through: a record
// enters only after the commit that stored it (tx.commit, under the user
// lock the change holds), and leaves when the store deletes it (status GC,
// DropApp clears it all). A miss reads the store.
//
// It is direct-mapped by seq: a record's slot is its seq modulo the
// cache's size, so each message takes the slot of the one
// statusCacheShards*statusCacheMax messages before it, and the cache holds
// the most recent messages, the ones acknowledged next. A map evicting
// arbitrary entries allocated as it churned (its tables rehashed past the
// deletions), 4 % of the gateway's allocations in the soak; the slots are
// made once.
type statusCache struct {
	shards [statusCacheShards]statusShard
}

type statusShard struct {
	mu    sync.Mutex
	slots []statusSlot // statusCacheMax of them, made by the first put
}

type statusSlot struct {
	app string
	seq uint64
	v   []byte // nil: empty
}

const (
	statusCacheShards = 16
	statusCacheMax    = 8192 // per shard: 131,072 records, ~25 MiB at most
)

// slot returns seq's slot in its shard, locked; nil if the shard has none
// yet and create is false. The caller unlocks the shard.
func (c *statusCache) slot(seq uint64, create bool) (*statusShard, *statusSlot) {
	s := &c.shards[seq%statusCacheShards]
	s.mu.Lock()
	if s.slots == nil {
		if !create {
			return s, nil
		}
		s.slots = make([]statusSlot, statusCacheMax)
	}
	return s, &s.slots[seq/statusCacheShards%statusCacheMax]
}

func (c *statusCache) get(app string, seq uint64) ([]byte, bool) {
	s, e := c.slot(seq, false)
	defer s.mu.Unlock()
	if e == nil || e.v == nil || e.seq != seq || e.app != app {
		return nil, false
	}
	return e.v, true
}

// put stores v, which the cache then owns (never modified after).
func (c *statusCache) put(app string, seq uint64, v []byte) {
	s, e := c.slot(seq, true)
	*e = statusSlot{app, seq, v}
	s.mu.Unlock()
}

func (c *statusCache) del(app string, seq uint64) {
	s, e := c.slot(seq, false)
	if e != nil && e.seq == seq && e.app == app {
		*e = statusSlot{}
	}
	s.mu.Unlock()
}

func (c *statusCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.slots = nil
		s.mu.Unlock()
	}
}
