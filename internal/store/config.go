package store

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Backends.
const (
	BackendMemory = "memory"
	BackendRedis  = "redis"
)

// What Revoked answers once Redis has been unreachable for DownGrace.
const (
	// OnDownClosed stops accepting session cookies: Revoked reports every
	// session revoked (with ErrSessionsUnusable) and SessionsUsable is false.
	OnDownClosed = "closed"
	// OnDownOpen keeps answering from the local cache: logouts received by
	// other replicas while Redis is down are not enforced here.
	OnDownOpen = "open"
)

// Defaults.
const (
	DefaultKeyPrefix      = "gatehouse:"
	DefaultDialTimeout    = 2 * time.Second
	DefaultOpTimeout      = 500 * time.Millisecond
	DefaultDownGrace      = 30 * time.Second
	DefaultMaxRevocations = 100_000
)

// Config is the top-level `store:` section of the configuration file.
type Config struct {
	// Backend is "memory" (default: one replica) or "redis".
	Backend string `yaml:"backend"`
	// MaxRevocations bounds the local revocation cache (default 100000).
	// When full, the entry closest to expiry is dropped and every session
	// that authenticated before it is treated as revoked (fail closed).
	MaxRevocations int `yaml:"max_revocations"`
	// Redis is used when Backend is "redis".
	Redis Redis `yaml:"redis"`
}

// Redis says how to reach the shared Redis server.
type Redis struct {
	// Address is host:port, or a URL redis://[user@]host:port[/db] or
	// rediss://… (TLS). A password in the URL is refused: use PasswordFile.
	Address string `yaml:"address"`
	// Username is the ACL user (Redis 6+); default the URL's, or none.
	Username string `yaml:"username"`
	// PasswordFile holds the password (trailing newline ignored). It is
	// re-read on every new connection, so a rotated secret is picked up.
	PasswordFile string `yaml:"password_file"`
	// TLS connects with TLS (implied by rediss://).
	TLS bool `yaml:"tls"`
	// CAFile holds PEM roots for the server certificate (default: system roots).
	CAFile string `yaml:"ca_file"`
	// ServerName overrides the name checked in the server certificate
	// (default: the host of Address).
	ServerName string `yaml:"server_name"`
	// KeyPrefix starts every key and pub/sub channel (default "gatehouse:"),
	// so several deployments can share one Redis.
	KeyPrefix string `yaml:"key_prefix"`
	// DialTimeout bounds connecting (default 2s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// OpTimeout bounds one command (default 500ms).
	OpTimeout time.Duration `yaml:"op_timeout"`
	// DownGrace is how long Redis may be unreachable before OnDown applies
	// (default 30s).
	DownGrace time.Duration `yaml:"down_grace"`
	// OnDown is "closed" (default) or "open"; see OnDownClosed.
	OnDown string `yaml:"on_down"`
}

// FieldError is one problem in a Config; Field is relative to the store
// section, e.g. "redis.address".
type FieldError struct {
	Field string
	Msg   string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidationErrors is every problem Validate found.
type ValidationErrors []FieldError

func (es ValidationErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return "store config: " + strings.Join(parts, "; ")
}

// WithDefaults returns c with empty fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Backend == "" {
		c.Backend = BackendMemory
	}
	if c.MaxRevocations == 0 {
		c.MaxRevocations = DefaultMaxRevocations
	}
	r := &c.Redis
	if r.KeyPrefix == "" {
		r.KeyPrefix = DefaultKeyPrefix
	}
	if r.DialTimeout == 0 {
		r.DialTimeout = DefaultDialTimeout
	}
	if r.OpTimeout == 0 {
		r.OpTimeout = DefaultOpTimeout
	}
	if r.DownGrace == 0 {
		r.DownGrace = DefaultDownGrace
	}
	if r.OnDown == "" {
		r.OnDown = OnDownClosed
	}
	return c
}

// Validate reports every problem in c (after defaults) as ValidationErrors,
// or nil. It does not read files or contact Redis.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var es ValidationErrors
	add := func(field, format string, args ...any) {
		es = append(es, FieldError{field, fmt.Sprintf(format, args...)})
	}
	switch c.Backend {
	case BackendMemory, BackendRedis:
	default:
		add("backend", "must be memory or redis; got %q", c.Backend)
	}
	if c.MaxRevocations < 0 || c.MaxRevocations > 10_000_000 {
		add("max_revocations", "must be between 1 and 10000000")
	}
	if c.Backend == BackendRedis {
		r := c.Redis
		if r.Address == "" {
			add("redis.address", "is required with backend redis")
		} else if _, _, err := r.endpoint(); err != nil {
			add("redis.address", "%v", err)
		}
		if r.CAFile != "" && !r.useTLS() {
			add("redis.ca_file", "needs tls: true or a rediss:// address")
		}
		if strings.ContainsAny(r.KeyPrefix, " \t\r\n*?[]") {
			add("redis.key_prefix", "must not contain spaces or glob characters; got %q", r.KeyPrefix)
		}
		checkDur := func(field string, d, lo, hi time.Duration) {
			if d < lo || d > hi {
				add(field, "must be between %s and %s; got %s", lo, hi, d)
			}
		}
		checkDur("redis.dial_timeout", r.DialTimeout, time.Millisecond, time.Minute)
		checkDur("redis.op_timeout", r.OpTimeout, time.Millisecond, time.Minute)
		checkDur("redis.down_grace", r.DownGrace, 0, 24*time.Hour)
		if r.OnDown != OnDownClosed && r.OnDown != OnDownOpen {
			add("redis.on_down", "must be closed or open; got %q", r.OnDown)
		}
	}
	if len(es) == 0 {
		return nil
	}
	return es
}

// useTLS reports whether connections use TLS.
func (r Redis) useTLS() bool {
	return r.TLS || strings.HasPrefix(strings.ToLower(r.Address), "rediss://")
}

// endpoint splits Address into host:port, the URL's user (if any) and db.
type redisEndpoint struct {
	addr string
	user string
	db   int
}

func (r Redis) endpoint() (redisEndpoint, bool, error) {
	a := r.Address
	lower := strings.ToLower(a)
	if !strings.HasPrefix(lower, "redis://") && !strings.HasPrefix(lower, "rediss://") {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return redisEndpoint{}, false, fmt.Errorf("want host:port or redis[s]://host:port[/db]; got %q", a)
		}
		return redisEndpoint{addr: a}, false, nil
	}
	u, err := url.Parse(a)
	if err != nil {
		return redisEndpoint{}, false, fmt.Errorf("bad URL: %w", err)
	}
	if _, set := u.User.Password(); set {
		return redisEndpoint{}, false, fmt.Errorf("a password in the URL is refused; use password_file")
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return redisEndpoint{}, false, fmt.Errorf("want redis[s]://[user@]host[:port][/db] with no query; got %q", a)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "6379")
	}
	ep := redisEndpoint{addr: host, user: u.User.Username()}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if _, err := fmt.Sscanf(p, "%d", &ep.db); err != nil || fmt.Sprint(ep.db) != p || ep.db < 0 {
			return redisEndpoint{}, false, fmt.Errorf("database %q is not a number", p)
		}
	}
	return ep, strings.HasPrefix(lower, "rediss://"), nil
}
