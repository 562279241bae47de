package policy

import (
	"encoding/json"
	"testing"
	"time"
)

func TestBudgetStoreConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		want []string
	}{
		{"a budget_store without redis is refused", "budget_store: {}\n",
			[]string{"budget_store.redis: required (the only shared store; leave budget_store out to keep spend in memory)"}},
		{"a redis store needs an address", "budget_store: {redis: {key_prefix: 'tg:'}}\n",
			[]string{"budget_store.redis.address: required (host:port of Redis)"}},
		{"an address without a port is refused", "budget_store: {redis: {address: redis}}\n",
			[]string{`budget_store.redis.address: "redis" is not host:port (address redis: missing port in address)`}},
		{"a port out of range is refused", "budget_store: {redis: {address: 'redis:70000'}}\n",
			[]string{`budget_store.redis.address: "redis:70000": the port must be a number from 1 to 65535`}},
		{"a password in a file and the environment at once is refused", "budget_store: {redis: {address: 'redis:6379', password_file: /p, password_env: P}}\n",
			[]string{"budget_store.redis.password_env: give password_file or password_env, not both"}},
		{"a key prefix with a brace is refused", "budget_store: {redis: {address: 'redis:6379', key_prefix: 'a{b'}}\n",
			[]string{"budget_store.redis.key_prefix: may not contain { or } (the budget's name in braces is the key's hash tag)"}},
		{"a refresh that is not a duration is refused", "budget_store: {redis: {address: 'redis:6379', refresh: 1}}\n",
			[]string{"budget_store.redis.refresh: want a string, got number 1"}},
		{"a refresh without a unit is refused", "budget_store: {redis: {address: 'redis:6379', refresh: '1'}}\n",
			[]string{`budget_store.redis.refresh: "1" is not a duration (write 500ms, 1s, 2s)`}},
		{"a refresh above a minute is refused", "budget_store: {redis: {address: 'redis:6379', refresh: 2m}}\n",
			[]string{"budget_store.redis.refresh: 2m is out of range (from 10ms to 1m0s)"}},
		{"a client certificate without its key is refused", "budget_store: {redis: {address: 'redis:6379', tls: {cert_file: /c}}}\n",
			[]string{"budget_store.redis.tls: cert_file and key_file go together (a client certificate and its key)"}},
		{"an unknown redis field names the known ones", "budget_store: {redis: {address: 'redis:6379', password: x}}\n",
			[]string{"budget_store.redis.password: unknown field (known: address, key_prefix, password_env, password_file, refresh, tls, username)"}},
		{"a camelCase field is pointed to its snake_case spelling", "budget_store: {redis: {address: 'redis:6379', keyPrefix: x}}\n",
			[]string{"budget_store.redis.keyPrefix: unknown field (did you mean key_prefix? fields are written in snake_case)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkProblems(t, tc.file, tc.want)
		})
	}
}

func TestBudgetStoreSettings(t *testing.T) {
	t.Parallel()
	full := `budget_store:
  redis:
    address: redis.tiergate:6380
    tls: {ca_file: /etc/redis-ca/ca.crt, server_name: redis.internal, cert_file: /c.pem, key_file: /k.pem}
    username: tiergate
    password_file: /etc/redis/password
    key_prefix: "tg:"
    refresh: 250ms
`
	cases := []struct {
		name string
		file string
		want *RedisStore
	}{
		{"no budget_store keeps spend in memory", "rules: []\n", nil},
		{"every field is carried over", full, &RedisStore{
			Address: "redis.tiergate:6380", Username: "tiergate", PasswordFile: "/etc/redis/password",
			KeyPrefix: "tg:", Refresh: 250 * time.Millisecond,
			TLS: &RedisTLS{CAFile: "/etc/redis-ca/ca.crt", ServerName: "redis.internal", CertFile: "/c.pem", KeyFile: "/k.pem"},
		}},
		{"refresh defaults to a second and TLS to none", "budget_store: {redis: {address: '127.0.0.1:6379', password_env: REDIS_PASSWORD}}\n",
			&RedisStore{Address: "127.0.0.1:6379", PasswordEnv: "REDIS_PASSWORD", Refresh: time.Second}},
		{"an empty tls turns TLS on", "budget_store: {redis: {address: 'r:1', tls: {}}}\n",
			&RedisStore{Address: "r:1", Refresh: time.Second, TLS: &RedisTLS{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Load([]byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := p.BudgetStore(); !got.Equal(tc.want) {
				t.Errorf("BudgetStore() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRedisStoreEqual(t *testing.T) {
	t.Parallel()
	base := RedisStore{Address: "r:1", Refresh: time.Second, TLS: &RedisTLS{CAFile: "/a"}}
	cases := []struct {
		name   string
		change func(*RedisStore)
		equal  bool
	}{
		{"the same settings in another value are equal", func(*RedisStore) {}, true},
		{"another address differs", func(r *RedisStore) { r.Address = "r:2" }, false},
		{"another CA file differs", func(r *RedisStore) { r.TLS = &RedisTLS{CAFile: "/b"} }, false},
		{"no TLS differs from TLS", func(r *RedisStore) { r.TLS = nil }, false},
		{"another refresh differs", func(r *RedisStore) { r.Refresh = 2 * time.Second }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := base
			o.TLS = &RedisTLS{CAFile: "/a"}
			tc.change(&o)
			if got := base.Equal(&o); got != tc.equal {
				t.Errorf("Equal = %t, want %t", got, tc.equal)
			}
		})
	}
	if (*RedisStore)(nil).Equal(&base) || !(*RedisStore)(nil).Equal(nil) {
		t.Error("nil (memory) must equal only nil")
	}
}

func TestPolicyShowsTheBudgetStore(t *testing.T) {
	t.Parallel()
	p, err := Load([]byte("budget_store: {redis: {address: 'r:1', password_env: REDIS_PASSWORD, refresh: 2s}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.RedactedJSON()
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		BudgetStore json.RawMessage `json:"budget_store"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]string
	if err := json.Unmarshal(out.BudgetStore, &got); err != nil {
		t.Fatalf("%v: %s", err, out.BudgetStore)
	}
	want := map[string]string{"address": "r:1", "password_env": "REDIS_PASSWORD", "refresh": "2s"}
	if len(got["redis"]) != len(want) {
		t.Fatalf("budget_store = %s, want redis with %v", out.BudgetStore, want)
	}
	for k, v := range want {
		if got["redis"][k] != v {
			t.Errorf("budget_store.redis.%s = %q, want %q", k, got["redis"][k], v)
		}
	}
}
