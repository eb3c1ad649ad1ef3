package queue

import "sync"

// statusCache keeps the encoded status records of recent messages, so that
// marking a message sent, delivered and read reads its status from memory
// rather than from the store (a Pebble Get was about 5 % of the gateway's
// CPU per delivered message in the soak). It is written through: a record
// enters only after the commit that stored it (tx.commit, under the user
// lock the change holds), and leaves when the store deletes it (status GC,
// DropApp clears it all). A miss reads the store. Bounded: beyond
// statusCacheMax entries per shard an arbitrary entry makes room.
type statusCache struct {
	shards [statusCacheShards]statusShard
}

type statusShard struct {
	mu sync.Mutex
	m  map[statusKey][]byte
}

type statusKey struct {
	app string
	seq uint64
}

const (
	statusCacheShards = 16
	statusCacheMax    = 8192 // per shard: 131,072 records, ~25 MiB at most
)

func (c *statusCache) shard(seq uint64) *statusShard { return &c.shards[seq%statusCacheShards] }

func (c *statusCache) get(app string, seq uint64) ([]byte, bool) {
	s := c.shard(seq)
	s.mu.Lock()
	v, ok := s.m[statusKey{app, seq}]
	s.mu.Unlock()
	return v, ok
}

// put stores v, which the cache then owns (never modified after).
func (c *statusCache) put(app string, seq uint64, v []byte) {
	s := c.shard(seq)
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[statusKey][]byte)
	}
	k := statusKey{app, seq}
	if _, ok := s.m[k]; !ok && len(s.m) >= statusCacheMax {
		for old := range s.m {
			delete(s.m, old)
			break
		}
	}
	s.m[k] = v
	s.mu.Unlock()
}

func (c *statusCache) del(app string, seq uint64) {
	s := c.shard(seq)
	s.mu.Lock()
	delete(s.m, statusKey{app, seq})
	s.mu.Unlock()
}

func (c *statusCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.m = nil
		s.mu.Unlock()
	}
}
