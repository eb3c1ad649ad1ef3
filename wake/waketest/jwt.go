package waketest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
)

// jwtParts splits and decodes a compact JWS, returning its header, claims
// and the signing input and signature.
func jwtParts(tok string) (hdr, claims map[string]any, signed []byte, sig []byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil, nil, nil, errors.New("not a compact JWS")
	}
	dec := base64.RawURLEncoding
	h, err := dec.DecodeString(parts[0])
	if err != nil {
		return nil, nil, nil, nil, err
	}
	c, err := dec.DecodeString(parts[1])
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sig, err = dec.DecodeString(parts[2])
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := json.Unmarshal(h, &hdr); err != nil {
		return nil, nil, nil, nil, err
	}
	if err := json.Unmarshal(c, &claims); err != nil {
		return nil, nil, nil, nil, err
	}
	return hdr, claims, []byte(parts[0] + "." + parts[1]), sig, nil
}

// verifyES256 checks a JWT signed with ES256 (r||s, 32 bytes each) by key.
func verifyES256(tok string, key *ecdsa.PublicKey) (hdr, claims map[string]any, err error) {
	return verifyJWT(tok, "ES256", func(sum, sig []byte) error {
		if len(sig) != 64 {
			return errors.New("ES256 signature is not 64 bytes")
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(key, sum, r, s) {
			return errors.New("bad ES256 signature")
		}
		return nil
	})
}

// verifyRS256 checks a JWT signed with RS256 by key.
func verifyRS256(tok string, key *rsa.PublicKey) (hdr, claims map[string]any, err error) {
	return verifyJWT(tok, "RS256", func(sum, sig []byte) error {
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, sum, sig)
	})
}

// verifyJWT checks that a JWT names alg and that verify accepts its
// signature over the SHA-256 sum of its signing input.
func verifyJWT(tok, alg string, verify func(sum, sig []byte) error) (hdr, claims map[string]any, err error) {
	hdr, claims, signed, sig, err := jwtParts(tok)
	if err != nil {
		return nil, nil, err
	}
	if hdr["alg"] != alg {
		return nil, nil, errors.New("alg is not " + alg)
	}
	sum := sha256.Sum256(signed)
	if err := verify(sum[:], sig); err != nil {
		return nil, nil, err
	}
	return hdr, claims, nil
}
