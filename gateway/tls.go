package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// certStore holds the serving certificate; Reload swaps it without
// touching open connections.
//
// Without a configured certificate the gateway generates a self-signed CA
// in the data dir (tls-cert.pem) whose names are localhost, *.localhost,
// the base domain and *.<domain>, and serves, for an SNI name one label
// under the base domain (an app domain), a leaf for exactly that name
// issued from it: Node and browsers take no wildcard right under a
// one-label name such as localhost, so *.localhost did not cover
// acme.localhost for them. A client that trusts tls-cert.pem verifies
// either.
type certStore struct {
	cert     atomic.Pointer[tls.Certificate]
	certFile string
	keyFile  string
	domain   string // set when the certificate is the generated CA

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by server name, issued from cert
}

// maxLeaves bounds the leaves kept (one per app domain a client asked
// for); past it the CA's own certificate is served.
const maxLeaves = 4096

// loadCert loads the configured certificate, or generates (once) and reuses
// a self-signed one in the data dir.
func loadCert(cfg *Config) (*certStore, error) {
	cs := &certStore{certFile: cfg.TLSCert, keyFile: cfg.TLSKey}
	if cs.certFile == "" {
		cs.domain = cfg.Domain
		cs.certFile = filepath.Join(cfg.DataDir, "tls-cert.pem")
		cs.keyFile = filepath.Join(cfg.DataDir, "tls-key.pem")
		if _, err := os.Stat(cs.certFile); errors.Is(err, os.ErrNotExist) {
			if err := generateCert(cs.certFile, cs.keyFile, cfg.Domain); err != nil {
				return nil, err
			}
		}
	}
	return cs, cs.Reload()
}

// Reload reads the certificate files again.
func (cs *certStore) Reload() error {
	c, err := tls.LoadX509KeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		return fmt.Errorf("gateway: load TLS certificate: %w", err)
	}
	cs.mu.Lock()
	cs.cert.Store(&c)
	cs.leaves = nil
	cs.mu.Unlock()
	return nil
}

// serve returns the certificate for a TLS handshake.
func (cs *certStore) serve(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ca := cs.cert.Load()
	if cs.domain == "" || hello.ServerName == "" {
		return ca, nil
	}
	label, ok := strings.CutSuffix(strings.ToLower(hello.ServerName), "."+cs.domain)
	if !ok || !dnsLabel(label) || ca.Leaf == nil || !ca.Leaf.IsCA {
		return ca, nil
	}
	name := label + "." + cs.domain
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if ca != cs.cert.Load() {
		return cs.cert.Load(), nil // reloaded meanwhile
	}
	if c, ok := cs.leaves[name]; ok {
		return c, nil
	}
	if len(cs.leaves) >= maxLeaves {
		return ca, nil
	}
	c, err := issueLeaf(ca, name)
	if err != nil {
		return ca, nil
	}
	if cs.leaves == nil {
		cs.leaves = make(map[string]*tls.Certificate)
	}
	cs.leaves[name] = c
	return c, nil
}

// dnsLabel reports whether s is one DNS label (letters, digits, hyphens).
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// issueLeaf makes a server certificate for name signed by ca, valid as
// long as ca (at most a year), served with ca.
func issueLeaf(ca *tls.Certificate, name string) (*tls.Certificate, error) {
	signer, ok := ca.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("gateway: CA key cannot sign")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	notAfter := time.Now().AddDate(1, 0, 0)
	if ca.Leaf.NotAfter.Before(notAfter) {
		notAfter = ca.Leaf.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Tether self-signed"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.Certificate[0]}, PrivateKey: key, Leaf: leaf}, nil
}

// TLSConfig returns a server config (TLS 1.2 or newer) that always serves
// the current certificate.
func (cs *certStore) TLSConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     nextProtos,
		GetCertificate: cs.serve,
	}
}

func generateCert(certFile, keyFile, domain string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	names := []string{"localhost", "*.localhost"}
	if domain != "localhost" {
		names = append(names, domain, "*."+domain)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain, Organization: []string{"Tether self-signed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFileAtomic writes data to a temp file, syncs it and renames it into
// place, so a crash never leaves a half-written file.
func writeFileAtomic(name string, data []byte, mode os.FileMode) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// loadAdminToken returns the configured admin token, or the one generated
// into the data dir (creating it on first start). It reports whether it was
// generated now.
func loadAdminToken(cfg *Config) (token string, generated bool, err error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, false, nil
	}
	name := filepath.Join(cfg.DataDir, "admin-token")
	b, err := os.ReadFile(name)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	token = "tadm_" + randomToken(24)
	if err := writeFileAtomic(name, []byte(token+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return token, true, nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
