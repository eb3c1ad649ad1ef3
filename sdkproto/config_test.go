package sdkproto

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	want := Config{
		Domain:             DefaultDomain,
		AckInterval:        DefaultAckInterval,
		AckEvery:           DefaultAckEvery,
		AckRequestEvery:    DefaultAckRequestEvery,
		AckRequestInterval: DefaultAckRequestInterval,
		DedupeWindow:       DefaultDedupeWindow,
		WriteTimeout:       DefaultWriteTimeout,
		HandshakeTimeout:   DefaultHandshakeTimeout,
		ReconnectMin:       DefaultReconnectMin,
		ReconnectMax:       DefaultReconnectMax,
	}
	require.Equal(t, want, Config{}.withDefaults())
	negative := Config{AckInterval: -1, AckEvery: -1, AckRequestEvery: -1, AckRequestInterval: -1, DedupeWindow: -1,
		WriteTimeout: -1, HandshakeTimeout: -1, ReconnectMin: -1, ReconnectMax: -1}
	require.Equal(t, want, negative.withDefaults(), "negative values mean the default too")
	set := Config{Domain: "example.com", AckInterval: time.Second, AckEvery: 1, AckRequestEvery: 2, AckRequestInterval: time.Minute,
		DedupeWindow: 3, WriteTimeout: 4 * time.Second, HandshakeTimeout: 5 * time.Second, ReconnectMin: time.Millisecond, ReconnectMax: time.Hour}
	require.Equal(t, set, set.withDefaults(), "set values are kept")
}
