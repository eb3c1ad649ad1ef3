package gateway

import (
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
	"sync/atomic"
	"time"
)

// certStore holds the serving certificate; Reload swaps it without
// touching open connections.
type certStore struct {
	cert         atomic.Pointer[tls.Certificate]
	certFile     string
	keyFile      string
	generatedFor []string
}

// loadCert loads the configured certificate, or generates (once) and reuses
// a self-signed one in the data dir.
func loadCert(cfg *Config) (*certStore, error) {
	cs := &certStore{certFile: cfg.TLSCert, keyFile: cfg.TLSKey}
	if cs.certFile == "" {
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
	cs.cert.Store(&c)
	return nil
}

// TLSConfig returns a server config (TLS 1.2 or newer) that always serves
// the current certificate.
func (cs *certStore) TLSConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cs.cert.Load(), nil
		},
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
