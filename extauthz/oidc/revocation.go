package oidc

import (
	"context"
	"time"
)

// RevocationStore remembers logged-out sessions. Session cookies are
// stateless, so a copy of a cookie outlives a logout unless every Check
// asks the store. A shared implementation (Redis) makes logout and
// back-channel logout take effect across replicas.
type RevocationStore interface {
	// Revoke records that sessions under key authenticated at or before at
	// are over. The entry may be forgotten after expires, when no such
	// session can be valid any more.
	Revoke(ctx context.Context, key string, at, expires time.Time) error
	// Revoked reports whether a session under key that authenticated at
	// authTime has been revoked. An error must be treated as revoked.
	Revoked(ctx context.Context, key string, authTime time.Time) (bool, error)
}
