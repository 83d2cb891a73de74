package store

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sealer encrypts and authenticates values before they are stored, with
// XChaCha20-Poly1305 and keys the caller owns (32 bytes each). The first key
// seals; every key opens, which is what key rotation needs. The purpose
// (for example "oidc-refresh/"+key or "cert/"+spiffeID) is the additional
// data, so a value stored under one name does not open as another.
//
// A sealed value is version ‖ key id ‖ nonce ‖ ciphertext.
type Sealer struct {
	keys []sealKey
}

type sealKey struct {
	id   [4]byte // not secret: a hash prefix, to skip keys that cannot open
	aead cipher.AEAD
}

const sealVersion = 1

// ErrUnsealed is Open's error for a value no key opens.
var ErrUnsealed = errors.New("store: value does not open with any key")

// NewSealer returns a Sealer for keys, the sealing key first.
func NewSealer(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("store: sealer: no keys")
	}
	s := &Sealer{}
	for i, k := range keys {
		aead, err := chacha20poly1305.NewX(k)
		if err != nil {
			return nil, fmt.Errorf("store: sealer key %d: %w", i, err)
		}
		sum := sha256.Sum256(append([]byte("gatehouse store key id\x00"), k...))
		var id [4]byte
		copy(id[:], sum[:])
		s.keys = append(s.keys, sealKey{id: id, aead: aead})
	}
	return s, nil
}

// Seal encrypts plaintext for purpose.
func (s *Sealer) Seal(purpose string, plaintext []byte) []byte {
	k := s.keys[0]
	head := 1 + len(k.id) + chacha20poly1305.NonceSizeX
	out := make([]byte, head, head+len(plaintext)+k.aead.Overhead())
	out[0] = sealVersion
	copy(out[1:], k.id[:])
	_, _ = rand.Read(out[1+len(k.id) : head]) // never fails since Go 1.24
	return k.aead.Seal(out, out[1+len(k.id):head], plaintext, []byte("gatehouse/store/"+purpose))
}

// Open decrypts a value sealed for purpose, or returns ErrUnsealed.
func (s *Sealer) Open(purpose string, sealed []byte) ([]byte, error) {
	head := 1 + 4 + chacha20poly1305.NonceSizeX
	if len(sealed) < head+chacha20poly1305.Overhead || sealed[0] != sealVersion {
		return nil, ErrUnsealed
	}
	id, nonce, ct := sealed[1:5], sealed[5:head], sealed[head:]
	for _, k := range s.keys {
		if string(k.id[:]) != string(id) {
			continue
		}
		if pt, err := k.aead.Open(nil, nonce, ct, []byte("gatehouse/store/"+purpose)); err == nil {
			return pt, nil
		}
	}
	return nil, ErrUnsealed
}
