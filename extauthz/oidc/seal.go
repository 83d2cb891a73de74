package oidc

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// sealer encrypts and authenticates cookie values with XChaCha20-Poly1305
// (random 192-bit nonces are safe at any cookie volume). The first key
// seals; every key opens, which is what key rotation needs.
//
// A sealed value is base64url(version ‖ key id ‖ nonce ‖ ciphertext). The
// purpose (cookie kind and name) is the additional data, so a value sealed
// for one cookie does not open as another.
type sealer struct {
	keys []sealKey
}

type sealKey struct {
	id   [4]byte // not secret: a hash prefix, to skip keys that cannot open
	aead cipher.AEAD
}

const sealVersion = 1

var errUnsealed = errors.New("cookie does not open with any key")

func newSealer(keys [][]byte) (*sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("no cookie keys")
	}
	s := &sealer{}
	for i, k := range keys {
		aead, err := chacha20poly1305.NewX(k)
		if err != nil {
			return nil, fmt.Errorf("cookie key %d: %w", i, err)
		}
		sum := sha256.Sum256(append([]byte("gatehouse cookie key id\x00"), k...))
		var id [4]byte
		copy(id[:], sum[:])
		s.keys = append(s.keys, sealKey{id: id, aead: aead})
	}
	return s, nil
}

func (s *sealer) seal(purpose string, plaintext []byte) string {
	k := s.keys[0]
	out := make([]byte, 1+len(k.id)+chacha20poly1305.NonceSizeX, 1+len(k.id)+chacha20poly1305.NonceSizeX+len(plaintext)+k.aead.Overhead())
	out[0] = sealVersion
	copy(out[1:], k.id[:])
	nonce := out[1+len(k.id):]
	if _, err := rand.Read(nonce); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never returns an error since Go 1.24
	}
	out = k.aead.Seal(out, nonce, plaintext, []byte("gatehouse/"+purpose))
	return base64.RawURLEncoding.EncodeToString(out)
}

func (s *sealer) open(purpose, value string) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil {
		return nil, errUnsealed
	}
	head := 1 + 4 + chacha20poly1305.NonceSizeX
	if len(raw) < head+chacha20poly1305.Overhead || raw[0] != sealVersion {
		return nil, errUnsealed
	}
	id, nonce, ct := raw[1:5], raw[5:head], raw[head:]
	for _, k := range s.keys {
		if string(k.id[:]) != string(id) {
			continue
		}
		if pt, err := k.aead.Open(nil, nonce, ct, []byte("gatehouse/"+purpose)); err == nil {
			return pt, nil
		}
	}
	return nil, errUnsealed
}
