package queue

// Internals the external tests need.

// NewMessageID formats a message id for seq (with fresh random bytes).
var NewMessageID = newMessageID

// MaxFallbacks is how many SMS sends may be in flight at once.
const MaxFallbacks = maxFallbacks

// DeviceCacheCap is the most users the device cache keeps.
const DeviceCacheCap = deviceCacheShards * deviceCacheUsers

// CachedUsers counts the users whose device lists (or too-large markers)
// the device cache holds.
func CachedUsers(q *Queue) int {
	n := 0
	for i := range q.devs.shards {
		s := &q.devs.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// KnownDevices lists the devices of app/user that messages to the whole
// user wait for, as an acknowledgement reads them (under the user's lock).
func KnownDevices(q *Queue, app, user string) ([]string, error) {
	unlock := q.lockUser(app, user)
	defer unlock()
	t := q.begin()
	defer t.abort()
	return q.knownDevices(t, app, user)
}
