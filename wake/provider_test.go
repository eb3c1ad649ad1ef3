package wake_test

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/wake"
)

func TestOutcomeLabels(t *testing.T) {
	t.Parallel()
	for o, want := range map[wake.Outcome]string{
		wake.Delivered: "delivered", wake.TokenInvalid: "token_invalid", wake.RetryAfter: "retry", wake.Failed: "failed", 0: "unknown",
	} {
		require.Equal(t, want, o.String())
	}
}

func TestTokenRef(t *testing.T) {
	t.Parallel()
	tok := "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	ref := wake.TokenRef(tok)
	require.Len(t, ref, 12)
	require.Equal(t, ref, wake.TokenRef(tok), "stable")
	require.NotEqual(t, ref, wake.TokenRef(tok[:63]))
	require.NotContains(t, tok, ref)
}

// newAdapter builds an adapter (or SMS sender) with build from cfg,
// changed by adjust when it is not nil, and closes it with t.Cleanup.
func newAdapter[C any, A interface{ Close() }](t *testing.T, build func(C) (A, error), cfg C, adjust func(*C)) A {
	t.Helper()
	if adjust != nil {
		adjust(&cfg)
	}
	a, err := build(cfg)
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a
}

// requireAnswer requires a result with outcome, the provider's HTTP
// status and reason.
func requireAnswer(t *testing.T, res wake.Result, outcome wake.Outcome, status int, reason string) {
	t.Helper()
	require.Equal(t, outcome, res.Outcome)
	require.Equal(t, status, res.Status)
	require.Equal(t, reason, res.Reason)
}

// deadAddr returns a loopback address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}
