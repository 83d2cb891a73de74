package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	redis := func(mut func(*Redis)) Config {
		c := Config{Backend: BackendRedis, Redis: Redis{Address: "redis:6379"}}
		mut(&c.Redis)
		return c
	}
	tests := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{"zero value is memory", Config{}, ""},
		{"memory ignores redis", Config{Backend: BackendMemory, Redis: Redis{Address: "::bad"}}, ""},
		{"unknown backend", Config{Backend: "etcd"}, "backend"},
		{"negative max", Config{MaxRevocations: -1}, "max_revocations"},
		{"redis host:port", redis(func(*Redis) {}), ""},
		{"redis URL", redis(func(r *Redis) { r.Address = "redis://gatehouse@redis:6379/2" }), ""},
		{"rediss URL without port", redis(func(r *Redis) { r.Address = "rediss://redis.example.com" }), ""},
		{"ACL user and password file", redis(func(r *Redis) { r.Username, r.PasswordFile = "gh", "/run/secrets/redis" }), ""},
		{"address required", redis(func(r *Redis) { r.Address = "" }), "redis.address"},
		{"address without port", redis(func(r *Redis) { r.Address = "redis" }), "redis.address"},
		{"password in URL", redis(func(r *Redis) { r.Address = "redis://u:pw@redis:6379" }), "redis.address"},
		{"db not a number", redis(func(r *Redis) { r.Address = "redis://redis:6379/x" }), "redis.address"},
		{"query in URL", redis(func(r *Redis) { r.Address = "redis://redis:6379/0?dial_timeout=1s" }), "redis.address"},
		{"ca file without tls", redis(func(r *Redis) { r.CAFile = "ca.pem" }), "redis.ca_file"},
		{"ca file with tls", redis(func(r *Redis) { r.CAFile, r.TLS = "ca.pem", true }), ""},
		{"glob in prefix", redis(func(r *Redis) { r.KeyPrefix = "gh*" }), "redis.key_prefix"},
		{"op timeout too long", redis(func(r *Redis) { r.OpTimeout = time.Hour }), "redis.op_timeout"},
		{"negative grace", redis(func(r *Redis) { r.DownGrace = -time.Second }), "redis.down_grace"},
		{"on_down open", redis(func(r *Redis) { r.OnDown = OnDownOpen }), ""},
		{"on_down bad", redis(func(r *Redis) { r.OnDown = "maybe" }), "redis.on_down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			var ve ValidationErrors
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want ValidationErrors", err)
			}
			for _, fe := range ve {
				if fe.Field == tc.field {
					return
				}
			}
			t.Errorf("Validate = %v, want a problem with %s", err, tc.field)
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Backend: BackendRedis}.WithDefaults()
	r := c.Redis
	if c.MaxRevocations != DefaultMaxRevocations || r.KeyPrefix != "gatehouse:" || r.DownGrace != 30*time.Second ||
		r.OnDown != OnDownClosed || r.OpTimeout != DefaultOpTimeout || r.DialTimeout != DefaultDialTimeout {
		t.Errorf("defaults = %+v", c)
	}
	if _, err := New(context.Background(), Config{Backend: "nope"}); err == nil || !strings.Contains(err.Error(), "backend") {
		t.Errorf("New with a bad config = %v", err)
	}
}

// revocationStore is extauthz/oidc.RevocationStore's method set (internal
// packages do not import extauthz): a Store must be usable as one.
type revocationStore interface {
	Revoke(ctx context.Context, key string, at, expires time.Time) error
	Revoked(ctx context.Context, key string, authTime time.Time) (bool, error)
}

var _ revocationStore = Store(nil)
