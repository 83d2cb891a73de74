package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/internal/store/redistest"

	"github.com/gatehouse-proxy/gatehouse/internal/logging/logtest"
)

// TestLogLeakRedisPassword: a store on a real redis-server with
// requirepass, connecting, losing and regaining the server, failing AUTH
// with a wrong password and recovering after the password file is fixed,
// with the store logger and go-redis's logger (RedisLog, as the binary
// installs it) at DEBUG. Neither password, nor any 16-byte window of it,
// may be logged.
func TestLogLeakRedisPassword(t *testing.T) {
	pw := func() string { b := make([]byte, 24); _, _ = rand.Read(b); return "pw-" + hex.EncodeToString(b) }
	right, wrong := pw(), pw()
	srv := redistest.StartWith(t, redistest.Options{Args: []string{"--requirepass", right}})
	logs := &logtest.Buffer{}
	dbg := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	redis.SetLogger(RedisLog{L: dbg})
	t.Cleanup(func() { redis.SetLogger(RedisLog{L: slog.Default()}) })

	dir := t.TempDir()
	writePW := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clock := newFakeClock()
	ctx := context.Background()
	waitLog := func(what string) {
		t.Helper()
		eventually(t, 20*time.Second, "log "+what, func() bool { return strings.Contains(logs.String(), what) })
	}

	// Connect and use the store.
	cfg := redisConfig(srv.Addr())
	cfg.Redis.PasswordFile = writePW("good", right)
	s := newRedisStore(t, cfg, clock, WithLogger(dbg))
	if err := s.Revoke(ctx, "session:x", clock.Now(), clock.Now().Add(time.Hour)); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	// Disconnect and reconnect (the restarted server is empty: write-back).
	srv.Stop()
	waitLog("redis unreachable")
	srv.Restart()
	waitLog("redis connected and synchronised")

	// AUTH fails: a wrong password at start, then the file is fixed.
	badCfg := redisConfig(srv.Addr())
	badCfg.Redis.PasswordFile = writePW("bad", wrong)
	bad := newRedisStore(t, badCfg, clock, WithLogger(dbg))
	if _, err := bad.Revoked(ctx, "session:y", clock.Now()); err == nil {
		t.Log("Revoked with a wrong password did not fail (served from the local cache)")
	}
	waitLog("not reachable at start")
	writePW("bad", right)
	eventually(t, 20*time.Second, "reconnect after the password file is fixed", func() bool { return bad.Healthy() == nil })
	// A raw go-redis client with the wrong password, through the same
	// process-wide logger.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: wrong, DisableIdentity: true, MaxRetries: -1})
	_ = c.Ping(ctx).Err()
	_ = c.Close()

	out := logs.String()
	if !strings.Contains(out, "WRONGPASS") && !strings.Contains(out, "invalid password") && !strings.Contains(out, "invalid username-password") {
		t.Logf("note: no AUTH failure text in the log:\n%s", out)
	}
	for name, secret := range map[string]string{"the Redis password": right, "the wrong password": wrong} {
		for i := 0; i+16 <= len(secret); i++ {
			if strings.Contains(out, secret[i:i+16]) {
				t.Fatalf("%s leaked (window %q):\n%s", name, secret[i:i+16], out)
			}
		}
	}
}
