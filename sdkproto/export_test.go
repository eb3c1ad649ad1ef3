package sdkproto

// LoseInbound makes c discard the next n stanzas it reads, uncounted and
// undelivered, as if they had been lost in flight when the connection
// broke: tests of stream-management resumption use it.
func LoseInbound(c *Client, n int) { c.loseIn.Store(int32(n)) }
