package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"tether/internal/gatewaytest"
)

// TestGeneratedCertificate: without a configured certificate, a client
// that trusts the generated tls-cert.pem verifies the gateway under
// localhost and under an app domain, where it gets a leaf for exactly
// that name (Node and browsers refuse *.localhost for acme.localhost);
// the leaf is the same on the next handshake, on both TLS listeners; a
// name outside the base domain gets the CA's own certificate, which does
// not verify for it.
func TestGeneratedCertificate(t *testing.T) {
	g := gatewaytest.Start(t)
	pem, err := os.ReadFile(filepath.Join(g.DataDir, "tls-cert.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(pem))
	dial := func(addr, name string) (*tls.ConnectionState, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		st := c.ConnectionState()
		return &st, nil
	}
	st, err := dial(g.XMPPSAddr, "acme.localhost")
	require.NoError(t, err)
	leaf := st.PeerCertificates[0]
	require.Equal(t, []string{"acme.localhost"}, leaf.DNSNames, "a leaf for exactly the app domain")
	require.False(t, leaf.IsCA)
	require.Len(t, st.PeerCertificates, 2, "served with its CA")
	again, err := dial(g.XMPPSAddr, "ACME.localhost")
	require.NoError(t, err)
	require.Equal(t, leaf.Raw, again.PeerCertificates[0].Raw, "one leaf per name, kept")

	st, err = dial(g.XMPPSAddr, "localhost")
	require.NoError(t, err)
	require.True(t, st.PeerCertificates[0].IsCA, "the base domain: the CA's own certificate")

	_, err = dial(g.XMPPSAddr, "acme.example.com")
	require.Error(t, err, "a name outside the base domain does not verify")
	_, err = dial(g.XMPPSAddr, "a.b.localhost")
	require.Error(t, err, "two labels under the base domain: no leaf, and *.localhost does not cover it")
}
