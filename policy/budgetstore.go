package policy

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// RedisStore is budget_store.redis as the policy file gives it. The
// connection is package budget's; the policy only carries the settings.
type RedisStore struct {
	// Address is host:port.
	Address string
	// TLS is nil for plaintext.
	TLS *RedisTLS
	// Username is the ACL user ("" for the default user).
	Username string
	// PasswordFile and PasswordEnv name where the password is read from
	// (at most one is set; neither: no password).
	PasswordFile, PasswordEnv string
	// KeyPrefix is prepended to every key.
	KeyPrefix string
	// Refresh is how often the local view is read back.
	Refresh time.Duration
}

// RedisTLS is budget_store.redis.tls.
type RedisTLS struct {
	CAFile, ServerName, CertFile, KeyFile string
}

// DefaultRefresh is how often the local view of a Redis store is refreshed
// when the file does not say.
const DefaultRefresh = time.Second

// Bounds of refresh: below 10ms the reads would load Redis for nothing a
// decision can use; above a minute replicas would diverge for too long.
const (
	minRefresh = 10 * time.Millisecond
	maxRefresh = time.Minute
)

// Equal reports whether two store settings are the same (nil for the
// memory store).
func (r *RedisStore) Equal(o *RedisStore) bool {
	if r == nil || o == nil {
		return r == o
	}
	a, b := *r, *o
	ta, tb := a.TLS, b.TLS
	a.TLS, b.TLS = nil, nil
	if a != b || (ta == nil) != (tb == nil) {
		return false
	}
	return ta == nil || *ta == *tb
}

// BudgetStore returns the shared store budgets keep spend in, or nil for
// the in-memory store.
func (p *Policy) BudgetStore() *RedisStore { return p.budgetStore }

// GroupNames returns, sorted, the groups the policy names anywhere: each
// keeps its own spend bucket (besides "other" and "none").
func (p *Policy) GroupNames() []string {
	return slices.Sorted(maps.Keys(p.groupLabels))
}

func (l *loader) budgetStore(path string, v any) *tiergatev1.BudgetStore {
	bs := &tiergatev1.BudgetStore{}
	m, ok := l.object(path, v)
	if !ok {
		return bs
	}
	l.fields(path, m, map[string]func(string, any){
		"redis": func(p string, v any) { bs.Redis = l.redisStore(p, v) },
	})
	if _, ok := m["redis"]; !ok {
		l.addf(join(path, "redis"), "required (the only shared store; leave budget_store out to keep spend in memory)")
	}
	return bs
}

func (l *loader) redisStore(path string, v any) *tiergatev1.RedisStore {
	r := &tiergatev1.RedisStore{}
	m, ok := l.object(path, v)
	if !ok {
		return r
	}
	l.fields(path, m, map[string]func(string, any){
		"address": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				r.Address = s
				l.checkAddress(p, s)
			}
		},
		"tls":      func(p string, v any) { r.Tls = l.redisTLS(p, v) },
		"username": func(p string, v any) { r.Username, _ = l.name(p, v) },
		"password_file": func(p string, v any) {
			r.PasswordFile, _ = l.name(p, v)
		},
		"password_env": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				r.PasswordEnv = s
				if strings.ContainsAny(s, "= \t\n") {
					l.addf(p, "%q is not an environment variable name", s)
				}
			}
		},
		"key_prefix": func(p string, v any) {
			if s, ok := l.text(p, v); ok {
				r.KeyPrefix = s
				if strings.ContainsAny(s, "{}") {
					l.addf(p, "may not contain { or } (the budget's name in braces is the key's hash tag)")
				}
			}
		},
		"refresh": func(p string, v any) {
			if s, ok := l.name(p, v); ok {
				r.Refresh = s
				d, err := time.ParseDuration(s)
				switch {
				case err != nil:
					l.addf(p, "%q is not a duration (write 500ms, 1s, 2s)", s)
				case d < minRefresh || d > maxRefresh:
					l.addf(p, "%s is out of range (from %s to %s)", s, minRefresh, maxRefresh)
				}
			}
		},
	})
	if _, ok := m["address"]; !ok {
		l.addf(join(path, "address"), "required (host:port of Redis)")
	}
	if r.PasswordFile != "" && r.PasswordEnv != "" {
		l.addf(join(path, "password_env"), "give password_file or password_env, not both")
	}
	return r
}

// checkAddress reports an address that is not host:port with a port
// number.
func (l *loader) checkAddress(path, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		l.addf(path, "%q is not host:port (%v)", s, err)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		l.addf(path, "%q: the port must be a number from 1 to 65535", s)
	}
	if host == "" {
		l.addf(path, "%q: the host is missing", s)
	}
}

func (l *loader) redisTLS(path string, v any) *tiergatev1.RedisTLS {
	t := &tiergatev1.RedisTLS{}
	m, ok := l.object(path, v)
	if !ok {
		return t
	}
	l.fields(path, m, map[string]func(string, any){
		"ca_file":     func(p string, v any) { t.CaFile, _ = l.name(p, v) },
		"server_name": func(p string, v any) { t.ServerName, _ = l.name(p, v) },
		"cert_file":   func(p string, v any) { t.CertFile, _ = l.name(p, v) },
		"key_file":    func(p string, v any) { t.KeyFile, _ = l.name(p, v) },
	})
	if (t.CertFile == "") != (t.KeyFile == "") {
		l.addf(path, "cert_file and key_file go together (a client certificate and its key)")
	}
	return t
}

// compileBudgetStore turns budget_store into its settings (nil: memory).
func compileBudgetStore(bs *tiergatev1.BudgetStore) *RedisStore {
	r := bs.GetRedis()
	if r == nil {
		return nil
	}
	out := &RedisStore{
		Address: r.Address, Username: r.Username,
		PasswordFile: r.PasswordFile, PasswordEnv: r.PasswordEnv,
		KeyPrefix: r.KeyPrefix, Refresh: DefaultRefresh,
	}
	if d, err := time.ParseDuration(r.Refresh); err == nil && r.Refresh != "" {
		out.Refresh = d
	}
	if t := r.Tls; t != nil {
		out.TLS = &RedisTLS{CAFile: t.CaFile, ServerName: t.ServerName, CertFile: t.CertFile, KeyFile: t.KeyFile}
	}
	return out
}

// String describes the store for logs, without secrets.
func (r *RedisStore) String() string {
	if r == nil {
		return "memory"
	}
	return fmt.Sprintf("redis %s (tls %t, prefix %q, refresh %s)", r.Address, r.TLS != nil, r.KeyPrefix, r.Refresh)
}
