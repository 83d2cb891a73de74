package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-proxy/gatehouse/internal/store"
)

// go-redis's own complaints (here: a pool that cannot dial) reach the
// structured log as Warn records instead of plain text on stderr.
func TestRedisLogRoutesGoRedisMessages(t *testing.T) {
	var buf bytes.Buffer
	redis.SetLogger(store.RedisLog{L: slog.New(slog.NewJSONHandler(&buf, nil))})
	t.Cleanup(func() { redis.SetLogger(store.RedisLog{L: slog.Default()}) })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping to a closed port succeeded")
	}
	var found bool
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		if rec["component"] == "go-redis" && rec["level"] == "WARN" && strings.Contains(rec["msg"].(string), "failed to dial") {
			if strings.HasPrefix(rec["msg"].(string), "redis: ") {
				t.Errorf("prefix kept: %q", rec["msg"])
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no go-redis dial failure in the log: %q", buf.String())
	}
}
