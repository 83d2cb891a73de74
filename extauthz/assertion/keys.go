package assertion

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// JWKSPath is where the admin HTTP server publishes the assertion keys.
const JWKSPath = "/.well-known/gatehouse/jwks.json"

// Key-set defaults and limits.
const (
	DefaultRotation   = 24 * time.Hour
	DefaultPrepublish = 5 * time.Minute
	// MinRotation leaves room for pre-publication and for verifiers that
	// refresh the JWKS every minute.
	MinRotation    = 10 * time.Minute
	keysFile       = "keys.json"
	checkInterval  = 30 * time.Second
	jwksCacheAge   = 60 // seconds; verifiers refresh at least this often
	keyFileVersion = 1
)

// KeySet holds Gatehouse's assertion signing keys. Keys are P-256 (ES256),
// identified by their RFC 7638 thumbprint. A key is published from its
// creation, signs from its ActiveFrom (a successor is created Prepublish
// before it takes over, so verifiers elsewhere already know it), and stays
// published after being superseded for the retention period — the lifetime
// of the last token it signed plus clock skew — then is dropped.
//
// It is safe for concurrent use.
type KeySet struct {
	dir        string
	now        func() time.Time
	rotation   time.Duration
	prepublish time.Duration
	retention  time.Duration
	log        *slog.Logger
	onChange   func()
	// shared: the directory belongs to the operator and every replica
	// reads it; this process never writes, generates or rotates.
	shared bool

	mu       sync.RWMutex
	keys     []*signingKey // by ActiveFrom, oldest first
	jwks     []byte
	fileSum  [32]byte  // of the keys file last loaded (shared mode)
	warnedAt time.Time // last "rotation overdue" warning (shared mode)
}

type signingKey struct {
	id         string
	priv       *ecdsa.PrivateKey
	activeFrom time.Time
	retireAt   time.Time // zero while current or pending
}

// KeyOption configures OpenKeySet.
type KeyOption func(*KeySet)

// WithKeyClock sets the time source (default time.Now).
func WithKeyClock(now func() time.Time) KeyOption { return func(k *KeySet) { k.now = now } }

// WithRotation sets how long a key signs before its successor takes over
// (default DefaultRotation, at least MinRotation).
func WithRotation(d time.Duration) KeyOption { return func(k *KeySet) { k.rotation = d } }

// WithRetention sets how long a superseded key stays published: at least
// the longest token lifetime plus the verifiers' clock skew. Required.
func WithRetention(d time.Duration) KeyOption { return func(k *KeySet) { k.retention = d } }

// WithKeyLogger sets the logger (default slog.Default()).
func WithKeyLogger(l *slog.Logger) KeyOption { return func(k *KeySet) { k.log = l } }

// WithOnChange calls fn (without locks held) after the published set
// changed, e.g. to refresh an in-process verifier at once.
func WithOnChange(fn func()) KeyOption { return func(k *KeySet) { k.onChange = fn } }

// WithSharedDir makes the key directory read-only and shared by every
// replica (for example a mounted Kubernetes Secret): keys.json must exist
// and hold a current key; it is re-read by Run when it changes, and no key
// is ever generated, rotated or written here, so replicas cannot diverge.
// The operator rotates by replacing the file, adding the successor with an
// active_from at least the JWKS refresh time ahead (5 minutes) so every
// verifier knows it before it signs. Superseded keys are dropped from the
// JWKS by their retire_at, or once a retention period has passed since
// their successor took over.
func WithSharedDir() KeyOption { return func(k *KeySet) { k.shared = true } }

// OpenKeySet loads the keys stored in dir (created 0700 if missing), or
// creates the first one, and brings the set up to date (Maintain). With
// WithSharedDir it only loads.
func OpenKeySet(dir string, opts ...KeyOption) (*KeySet, error) {
	k := &KeySet{dir: dir, now: time.Now, rotation: DefaultRotation, prepublish: DefaultPrepublish, log: slog.Default()}
	for _, o := range opts {
		o(k)
	}
	if k.shared {
		if k.retention <= 0 {
			return nil, errors.New("assertion keys: retention must be positive (token lifetime plus clock skew)")
		}
		if _, err := k.reloadShared(); err != nil {
			return nil, err
		}
		return k, nil
	}
	switch {
	case k.rotation < MinRotation:
		return nil, fmt.Errorf("assertion keys: rotation %s is below %s", k.rotation, MinRotation)
	case k.retention <= 0:
		return nil, errors.New("assertion keys: retention must be positive (token lifetime plus clock skew)")
	}
	k.prepublish = min(k.prepublish, k.rotation/2)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("assertion keys: %w", err)
	}
	if err := checkPrivate(dir, 0o700); err != nil {
		return nil, err
	}
	if err := k.load(); err != nil {
		return nil, err
	}
	if _, err := k.Maintain(); err != nil {
		return nil, err
	}
	return k, nil
}

// checkPrivate refuses a key directory or file others may read: a leaked
// signing key lets anyone mint any user.
func checkPrivate(path string, want fs.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	if st.Mode().Perm()&^want != 0 {
		return fmt.Errorf("assertion keys: %s has mode %o; it must not be accessible to group or others (chmod %o)", path, st.Mode().Perm(), want)
	}
	return nil
}

// Maintain drops keys past their retention, creates a successor when the
// current key is due (published Prepublish ahead), activates it when its
// time comes, and persists any change. It reports whether the set changed.
func (k *KeySet) Maintain() (bool, error) {
	if k.shared {
		changed, err := k.reloadShared()
		if changed && k.onChange != nil {
			k.onChange()
		}
		return changed, err
	}
	k.mu.Lock()
	changed, err := k.maintainLocked(k.now())
	k.mu.Unlock()
	if changed && err == nil && k.onChange != nil {
		k.onChange()
	}
	return changed, err
}

func (k *KeySet) maintainLocked(now time.Time) (bool, error) {
	changed := false
	// Superseded keys retire a retention period after their successor took over.
	for i := 0; i+1 < len(k.keys); i++ {
		next := k.keys[i+1]
		if k.keys[i].retireAt.IsZero() && !next.activeFrom.After(now) {
			k.keys[i].retireAt = next.activeFrom.Add(k.retention)
			changed = true
		}
	}
	kept := slices.DeleteFunc(slices.Clone(k.keys), func(s *signingKey) bool {
		return !s.retireAt.IsZero() && !now.Before(s.retireAt)
	})
	if len(kept) != len(k.keys) {
		for _, s := range k.keys {
			if !slices.Contains(kept, s) {
				k.log.Info("assertion key retired", "kid", s.id)
			}
		}
		k.keys, changed = kept, true
	}
	cur := k.currentLocked(now)
	switch {
	case cur == nil:
		// First start (or every key lost): sign at once.
		if err := k.addLocked(now); err != nil {
			return changed, err
		}
		changed = true
	case k.keys[len(k.keys)-1] == cur && !now.Before(cur.activeFrom.Add(k.rotation-k.prepublish)):
		// After downtime the due time may have passed: still publish first.
		at := cur.activeFrom.Add(k.rotation)
		if soonest := now.Add(k.prepublish); at.Before(soonest) {
			at = soonest
		}
		if err := k.addLocked(at); err != nil {
			return changed, err
		}
		changed = true
	}
	if !changed {
		return false, nil
	}
	k.jwks = k.buildJWKS()
	return true, k.saveLocked()
}

// Rotate makes a new key current now; the previous one is retired after
// the retention period. Use it when a key may be compromised only together
// with removing that key: rotation keeps it published for the overlap.
func (k *KeySet) Rotate() error {
	if k.shared {
		return errors.New("assertion keys: the key directory is shared and read-only; rotate by replacing its keys.json")
	}
	k.mu.Lock()
	now := k.now()
	// A pending successor is replaced: it would otherwise take over later.
	k.keys = slices.DeleteFunc(k.keys, func(s *signingKey) bool { return s.activeFrom.After(now) })
	err := k.addLocked(now)
	if err == nil {
		_, err = k.maintainLocked(now)
	}
	if err == nil {
		k.jwks = k.buildJWKS()
		err = k.saveLocked()
	}
	k.mu.Unlock()
	if err == nil && k.onChange != nil {
		k.onChange()
	}
	return err
}

func (k *KeySet) addLocked(activeFrom time.Time) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("assertion keys: generate: %w", err)
	}
	s := &signingKey{id: thumbprint(&priv.PublicKey), priv: priv, activeFrom: activeFrom}
	k.keys = append(k.keys, s)
	slices.SortStableFunc(k.keys, func(a, b *signingKey) int { return a.activeFrom.Compare(b.activeFrom) })
	k.log.Info("assertion key created", "kid", s.id, "active_from", activeFrom.UTC().Format(time.RFC3339))
	return nil
}

// currentLocked is the key that signs at now: the latest already active.
func (k *KeySet) currentLocked(now time.Time) *signingKey { return pickCurrent(k.keys, now) }

// pickCurrent is the latest key of keys (sorted) already active at now.
func pickCurrent(keys []*signingKey, now time.Time) *signingKey {
	var cur *signingKey
	for _, s := range keys {
		if !s.activeFrom.After(now) {
			cur = s
		}
	}
	return cur
}

// signer returns the current key. Callers must not sign with a key that is
// not published: Maintain guarantees the current key is.
func (k *KeySet) signer() (string, *ecdsa.PrivateKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	cur := k.currentLocked(k.now())
	if cur == nil {
		return "", nil, errors.New("assertion keys: no current signing key")
	}
	return cur.id, cur.priv, nil
}

// KeyIDs lists the published key ids, oldest first.
func (k *KeySet) KeyIDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ids := make([]string, len(k.keys))
	for i, s := range k.keys {
		ids[i] = s.id
	}
	return ids
}

// CurrentKeyID is the id of the key that signs now.
func (k *KeySet) CurrentKeyID() string {
	id, _, _ := k.signer()
	return id
}

// JWKS returns the published public keys as a JSON Web Key Set.
func (k *KeySet) JWKS() []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return slices.Clone(k.jwks)
}

// Handler serves the JWKS (GET JWKSPath on the admin server).
func (k *KeySet) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", fmt.Sprintf("max-age=%d", jwksCacheAge))
		_, _ = w.Write(k.JWKS())
	})
}

// Run calls Maintain periodically until ctx ends. Errors are logged; the
// current keys keep working.
func (k *KeySet) Run(ctx context.Context) error {
	t := time.NewTicker(checkInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := k.Maintain(); err != nil {
				k.log.ErrorContext(ctx, "assertion key maintenance failed; current keys stay", "err", err)
			}
		}
	}
}

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

func publicJWK(pub *ecdsa.PublicKey) jwk {
	// Fixed-width coordinates, as RFC 7518 §6.2.1.2 requires.
	raw, _ := pub.Bytes() // 0x04 || X || Y for P-256
	enc := base64.RawURLEncoding.EncodeToString
	return jwk{Kty: "EC", Crv: "P-256", X: enc(raw[1:33]), Y: enc(raw[33:65])}
}

// thumbprint is the RFC 7638 JWK thumbprint, base64url: a kid anyone can
// recompute from the published key.
func thumbprint(pub *ecdsa.PublicKey) string {
	j := publicJWK(pub)
	// Required members only, in lexicographic order, no whitespace.
	canon := `{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (k *KeySet) buildJWKS() []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, s := range k.keys {
		j := publicJWK(&s.priv.PublicKey)
		j.Kid, j.Alg, j.Use = s.id, "ES256", "sig"
		set.Keys = append(set.Keys, j)
	}
	b, _ := json.Marshal(set)
	return b
}

// storedKeys is the keys file: private keys as PKCS #8 DER, base64.
type storedKeys struct {
	Version int         `json:"version"`
	Keys    []storedKey `json:"keys"`
}

type storedKey struct {
	ID         string    `json:"kid"`
	PKCS8      []byte    `json:"pkcs8"`
	ActiveFrom time.Time `json:"active_from"`
	RetireAt   time.Time `json:"retire_at,omitzero"`
}

func (k *KeySet) load() error {
	path := filepath.Join(k.dir, keysFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	if err := checkPrivate(path, 0o600); err != nil {
		return err
	}
	keys, err := parseKeys(path, raw)
	if err != nil {
		return err
	}
	k.keys = keys
	k.jwks = k.buildJWKS()
	return nil
}

// reloadShared (re)reads keys.json of a shared directory when its content
// changed, keeps the keys not yet retired, and reports whether the
// published set changed. A file that does not parse, or has no key
// signing now, is refused and the keys held stay in use.
func (k *KeySet) reloadShared() (bool, error) {
	path := filepath.Join(k.dir, keysFile)
	raw, err := os.ReadFile(path) // follows the Secret's ..data symlink
	if err != nil {
		return false, fmt.Errorf("assertion keys: shared key directory: %w", err)
	}
	// Group-readable is allowed: Kubernetes mounts Secrets for an fsGroup.
	if err := checkPrivate(path, 0o640); err != nil {
		return false, err
	}
	sum := sha256.Sum256(raw)
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if sum != k.fileSum || k.keys == nil {
		keys, err := parseKeys(path, raw)
		if err != nil {
			return false, err
		}
		if pickCurrent(keys, now) == nil {
			return false, fmt.Errorf("assertion keys: %s: no key is active now (every active_from is in the future)", path)
		}
		k.keys, k.fileSum = keys, sum
		k.jwks = k.buildJWKS()
		k.log.Info("assertion keys loaded from the shared directory", "dir", k.dir, "kids", len(keys), "current", pickCurrent(keys, now).id)
		k.pruneSharedLocked(now)
		return true, nil
	}
	return k.pruneSharedLocked(now), nil
}

// pruneSharedLocked drops superseded keys past their retention from the
// published set (in memory only: the file is the operator's) and warns,
// hourly, when the current key has signed for longer than the rotation.
func (k *KeySet) pruneSharedLocked(now time.Time) bool {
	kept := slices.DeleteFunc(slices.Clone(k.keys), func(s *signingKey) bool {
		if !s.retireAt.IsZero() && !now.Before(s.retireAt) {
			return true
		}
		i := slices.Index(k.keys, s)
		return i+1 < len(k.keys) && !now.Before(k.keys[i+1].activeFrom.Add(k.retention))
	})
	if cur := pickCurrent(kept, now); cur != nil && !now.Before(cur.activeFrom.Add(k.rotation)) &&
		now.Sub(k.warnedAt) >= time.Hour && kept[len(kept)-1] == cur {
		k.warnedAt = now
		k.log.Warn("assertion key rotation is overdue: the shared keys.json has no successor key; add one with a future active_from",
			"kid", cur.id, "active_from", cur.activeFrom.UTC().Format(time.RFC3339))
	}
	if len(kept) == len(k.keys) {
		return false
	}
	k.keys = kept
	k.jwks = k.buildJWKS()
	return true
}

// parseKeys decodes a keys file, oldest active_from first. The kid is
// always the key's thumbprint, whatever the file says.
func parseKeys(path string, raw []byte) ([]*signingKey, error) {
	var st storedKeys
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("assertion keys: %s: %w", path, err)
	}
	if st.Version != keyFileVersion {
		return nil, fmt.Errorf("assertion keys: %s: unsupported version %d", path, st.Version)
	}
	var keys []*signingKey
	for i, s := range st.Keys {
		parsed, err := x509.ParsePKCS8PrivateKey(s.PKCS8)
		if err != nil {
			return nil, fmt.Errorf("assertion keys: %s: key %d: %w", path, i, err)
		}
		priv, ok := parsed.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() {
			return nil, fmt.Errorf("assertion keys: %s: key %d is not a P-256 key", path, i)
		}
		keys = append(keys, &signingKey{id: thumbprint(&priv.PublicKey), priv: priv, activeFrom: s.ActiveFrom, retireAt: s.RetireAt})
	}
	slices.SortStableFunc(keys, func(a, b *signingKey) int { return a.activeFrom.Compare(b.activeFrom) })
	return keys, nil
}

// saveLocked writes the keys file atomically (temp file, fsync, rename), 0600.
func (k *KeySet) saveLocked() error {
	st := storedKeys{Version: keyFileVersion}
	for _, s := range k.keys {
		der, err := x509.MarshalPKCS8PrivateKey(s.priv)
		if err != nil {
			return fmt.Errorf("assertion keys: %w", err)
		}
		st.Keys = append(st.Keys, storedKey{ID: s.id, PKCS8: der, ActiveFrom: s.activeFrom.UTC(), RetireAt: s.retireAt.UTC()})
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	tmp, err := os.CreateTemp(k.dir, keysFile+".*") // created 0600
	if err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("assertion keys: %w", err)
	}
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return fmt.Errorf("assertion keys: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("assertion keys: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(k.dir, keysFile)); err != nil {
		return fmt.Errorf("assertion keys: %w", err)
	}
	return nil
}
