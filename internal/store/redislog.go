package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// RedisLog routes go-redis's own messages (pool and connection trouble,
// dial failures) into l at Warn. go-redis has one process-wide logger that
// writes plain text to stderr, which would break a JSON log; the binary
// installs this one with redis.SetLogger at start.
type RedisLog struct{ L *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (r RedisLog) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
	r.L.WarnContext(ctx, msg, "component", "go-redis")
}
