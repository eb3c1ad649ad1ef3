package queue

// Internals the external tests need.

// NewMessageID formats a message id for seq (with fresh random bytes).
var NewMessageID = newMessageID

// MaxFallbacks is how many SMS sends may be in flight at once.
const MaxFallbacks = maxFallbacks
