// Package dex runs a real Dex OpenID Connect provider for tests: a Dex
// binary built from the pinned module in test/tools/dex, with memory
// storage, the local password database holding static users (with groups)
// and static OAuth2 clients, on a free loopback port.
//
// The binary is found through $GATEHOUSE_DEX_BIN or the build cache
// (${GATEHOUSE_CACHE:-<repo>/.cache}/bin/dex); when missing it is built with
// test/tools/build-dex.sh, so `go test` works on a fresh clone. A failed build
// fails the test: an OIDC test that silently skips proves nothing.
//
// Dex facts the tests rely on (v2.45.1):
//   - static passwords carry `groups`, returned in the ID token only when
//     the `groups` scope is requested;
//   - with the password database as the only connector Dex goes straight
//     to its login form; skipApprovalScreen sends the browser on to the
//     client's redirect URI;
//   - Dex publishes no end_session_endpoint and sends no back-channel
//     logout tokens;
//   - memory storage forgets everything on restart, signing keys and
//     refresh tokens included: a restart is a key rotation.
package dex

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// User is a static password user. Groups reach the ID token's "groups"
// claim when the client asks for the groups scope.
type User struct {
	Email    string
	Username string
	Password string
	UserID   string // the ID token's subject is derived from it
	Groups   []string
	// Hash is Password's bcrypt hash (cost ≥ 10, which Dex demands at
	// login); computed when empty. Precomputed for DefaultUsers because
	// bcrypt at cost 10 is slow under -race.
	Hash string
}

// Client is a static OAuth2 client.
type Client struct {
	ID           string
	Secret       string // empty for a public client
	Public       bool
	RedirectURIs []string
}

// Options configure Start. The zero value gives DefaultUsers and one
// confidential and one public client with RedirectURIs.
type Options struct {
	Users []User
	// Clients replaces the default clients when set.
	Clients []Client
	// RedirectURIs of the default clients.
	RedirectURIs []string
	// IDTokenTTL is expiry.idTokens (Dex's default is 24h).
	IDTokenTTL time.Duration
	// DisableRefreshRotation keeps the refresh token unchanged on use.
	DisableRefreshRotation bool
}

// Default client ids of Start.
const (
	ConfidentialClient = "gatehouse"
	PublicClient       = "gatehouse-public"
)

// DefaultUsers are used when Options.Users is empty.
func DefaultUsers() []User {
	return []User{
		{Email: "alice@example.com", Username: "alice", Password: "alice-password", UserID: "0a11ce", Groups: []string{"admins", "devs"},
			Hash: "$2a$10$hgT8yitTQkEwhO0r4hq0C.UcZ4fh/9Z8oQHal0i0SQL3JbwQmx5TG"},
		{Email: "bob@example.com", Username: "bob", Password: "bob-password", UserID: "0b0b", Groups: []string{"devs"},
			Hash: "$2a$10$whi9k0P39aIpoP4vGG28uu13v0iBQOlKlM/zFBz.tXZ2TnmUB4g2q"},
	}
}

// Server is one running Dex.
type Server struct {
	// Issuer is Dex's issuer URL, http://127.0.0.1:<port>/dex.
	Issuer  string
	Users   []User
	Clients []Client

	t      testing.TB
	bin    string
	addr   string
	config string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// Start runs Dex and waits until its discovery document is served. It is
// stopped when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	users := opts.Users
	if len(users) == 0 {
		users = DefaultUsers()
	}
	clients := opts.Clients
	if len(clients) == 0 {
		clients = []Client{
			{ID: ConfidentialClient, Secret: randomHex(t, 16), RedirectURIs: opts.RedirectURIs},
			{ID: PublicClient, Public: true, RedirectURIs: opts.RedirectURIs},
		}
	}
	addr := freeAddr(t)
	s := &Server{
		Issuer: "http://" + addr + "/dex", Users: users, Clients: clients,
		t: t, bin: bin, addr: addr, config: filepath.Join(t.TempDir(), "dex.json"),
	}
	if err := s.writeConfig(opts); err != nil {
		t.Fatalf("dex: %v", err)
	}
	s.start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("dex output:\n%s", s.out.String())
			s.mu.Unlock()
		}
	})
	return s
}

// Client returns the client with id, failing the test if there is none.
func (s *Server) Client(id string) Client {
	for _, c := range s.Clients {
		if c.ID == id {
			return c
		}
	}
	s.t.Fatalf("dex: no client %q", id)
	return Client{}
}

// User returns the user with username, failing the test if there is none.
func (s *Server) User(username string) User {
	for _, u := range s.Users {
		if u.Username == username {
			return u
		}
	}
	s.t.Fatalf("dex: no user %q", username)
	return User{}
}

// Stop ends Dex; further requests to the issuer fail to connect.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart stops Dex and starts it again on the same address. Memory storage
// starts empty: new signing keys, and every refresh token is gone.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	// The port was free a moment ago; another process may take it between
	// our probe and Dex's bind, so a failed start is retried briefly.
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		err := s.launch(deadline)
		if err == nil {
			return
		}
		if attempt >= 2 || time.Now().After(deadline) {
			s.t.Fatalf("dex: %v\n%s", err, s.out.String())
		}
	}
}

// launch starts the process and polls discovery until it answers, the
// process exits or the deadline passes.
func (s *Server) launch(deadline time.Time) error {
	s.out = &syncBuffer{}
	cmd := exec.Command(s.bin, "serve", s.config)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: 2 * time.Second}
	url := s.Issuer + "/.well-known/openid-configuration"
	for {
		select {
		case <-done:
			s.cmd = nil
			return errors.New("dex exited during start")
		default:
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			s.cmd = nil
			return fmt.Errorf("dex did not serve %s in time (last error: %v)", url, err)
		}
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dexConfig is the subset of Dex's configuration file the tests use.
type dexConfig struct {
	Issuer           string           `json:"issuer"`
	Storage          map[string]any   `json:"storage"`
	Web              map[string]any   `json:"web"`
	OAuth2           map[string]any   `json:"oauth2"`
	Expiry           map[string]any   `json:"expiry,omitempty"`
	Logger           map[string]any   `json:"logger"`
	EnablePasswordDB bool             `json:"enablePasswordDB"`
	StaticPasswords  []map[string]any `json:"staticPasswords"`
	StaticClients    []map[string]any `json:"staticClients"`
}

func (s *Server) writeConfig(opts Options) error {
	c := dexConfig{
		Issuer:           s.Issuer,
		Storage:          map[string]any{"type": "memory"},
		Web:              map[string]any{"http": s.addr},
		OAuth2:           map[string]any{"skipApprovalScreen": true, "responseTypes": []string{"code"}},
		Logger:           map[string]any{"level": "info", "format": "text"},
		EnablePasswordDB: true,
	}
	expiry := map[string]any{}
	if opts.IDTokenTTL > 0 {
		expiry["idTokens"] = opts.IDTokenTTL.String()
	}
	if opts.DisableRefreshRotation {
		expiry["refreshTokens"] = map[string]any{"disableRotation": true}
	}
	if len(expiry) > 0 {
		c.Expiry = expiry
	}
	for _, u := range s.Users {
		hash := []byte(u.Hash)
		if len(hash) == 0 {
			var err error // Dex refuses a cost below 10 at login
			if hash, err = bcrypt.GenerateFromPassword([]byte(u.Password), 10); err != nil {
				return fmt.Errorf("hash password of %s: %w", u.Username, err)
			}
		}
		c.StaticPasswords = append(c.StaticPasswords, map[string]any{
			"email": u.Email, "username": u.Username, "userID": u.UserID,
			"hash": string(hash), "groups": u.Groups,
		})
	}
	for _, cl := range s.Clients {
		m := map[string]any{"id": cl.ID, "name": cl.ID, "redirectURIs": cl.RedirectURIs, "public": cl.Public}
		if cl.Secret != "" {
			m["secret"] = cl.Secret
		}
		c.StaticClients = append(c.StaticClients, m)
	}
	b, err := json.MarshalIndent(c, "", "  ") // YAML is a superset of JSON
	if err != nil {
		return err
	}
	return os.WriteFile(s.config, b, 0o600)
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary returns the path of the Dex binary, building it if needed; a
// failed build fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("GATEHOUSE_DEX_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dex: GATEHOUSE_DEX_BIN=%s: %v", p, err)
		}
		return p
	}
	buildOnce.Do(func() { buildBin, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("dex: %v", buildErr)
	}
	return buildBin
}

// build runs test/tools/build-dex.sh, which returns at once when the cached
// binary matches the pinned module.
func build() (string, error) {
	script, err := findScript()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build Dex with %s: %w\n%s", script, err, stderr.String())
	}
	bin := string(bytes.TrimSpace(stdout.Bytes()))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("build-dex.sh reported %q: %w", bin, err)
	}
	return bin, nil
}

// findScript walks up from the working directory (a package directory
// under `go test`) to the repository's test/tools/build-dex.sh.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "test", "tools", "build-dex.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("test/tools/build-dex.sh not found above the working directory; set GATEHOUSE_DEX_BIN")
		}
		dir = parent
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dex: %v", err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer collects the process output; Dex writes from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 { // bounded: keep the start, where failures show
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// KeyIDs returns the key ids Dex publishes in its JWKS; a restart changes
// them, which is how tests prove a relying party refetches keys.
func (s *Server) KeyIDs(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Issuer+"/keys", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("dex keys: %w", err)
	}
	var ids []string
	for _, k := range set.Keys {
		ids = append(ids, k.KeyID)
	}
	return ids, nil
}
