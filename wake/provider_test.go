package wake_test

import (
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
