package main

import (
	"errors"
	"flag"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
	"github.com/tiergate/tiergate/wsbridge"
)

// wsConfig holds the WebSocket bridge's flags.
type wsConfig struct {
	listen          string
	upstream        string
	tlsCert, tlsKey string
	dialTimeout     time.Duration
	writeTimeout    time.Duration
	idleTimeout     time.Duration
	maxSession      time.Duration
	readLimit       int64
	allowedOrigins  string
}

func (c *wsConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.listen, "ws-listen", "127.0.0.1:8081", "WebSocket bridge address (Envoy routes /v1/responses and /v1/realtime upgrades here)")
	fs.StringVar(&c.upstream, "ws-upstream", wsbridge.DefaultUpstream, "base URL the bridge dials for each session (wss:// or ws://)")
	fs.StringVar(&c.tlsCert, "ws-tls-cert", "", "serve the bridge over TLS with this certificate (PEM); needs --ws-tls-key")
	fs.StringVar(&c.tlsKey, "ws-tls-key", "", "the private key for --ws-tls-cert (PEM)")
	fs.DurationVar(&c.dialTimeout, "ws-dial-timeout", wsbridge.DefaultDialTimeout, "how long dialling the upstream may take before the client gets 504")
	fs.DurationVar(&c.writeTimeout, "ws-write-timeout", wsbridge.DefaultWriteTimeout, "how long one frame may take to write to a side before the session is closed")
	fs.DurationVar(&c.idleTimeout, "ws-idle-timeout", wsbridge.DefaultIdleTimeout, "close a session with 1008 after this long without a frame either way (pings do not count)")
	fs.DurationVar(&c.maxSession, "ws-max-session", wsbridge.DefaultMaxSession, "close a session with 1001 after this long")
	fs.Int64Var(&c.readLimit, "ws-read-limit", wsbridge.DefaultReadLimit, "largest frame accepted from either side, in bytes (Realtime audio appends reach 15 MiB)")
	fs.StringVar(&c.allowedOrigins, "ws-allowed-origins", "", "comma-separated Origin patterns (path.Match) a browser client may come from; empty: no Origin check (callers authenticate with keys)")
}

// validate checks the flags against each other, before anything starts.
func (c *wsConfig) validate() error {
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--ws-tls-cert and --ws-tls-key go together")
	}
	return nil
}

// options are the bridge's options the flags set.
func (c *wsConfig) options() wsbridge.Options {
	var origins []string
	for _, o := range strings.Split(c.allowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	return wsbridge.Options{
		Upstream: c.upstream, DialTimeout: c.dialTimeout, WriteTimeout: c.writeTimeout, IdleTimeout: c.idleTimeout,
		MaxSession: c.maxSession, ReadLimit: c.readLimit, AllowedOrigins: origins,
	}
}

func (c *wsConfig) bridge(store *policy.Store, reg prometheus.Registerer, decisions *policy.DecisionMetrics, tokens *usage.Metrics, budgets *budget.Tracker, log *usage.RecordWriter, logger *slog.Logger) (*wsbridge.Bridge, error) {
	o := c.options()
	o.Store, o.Registerer, o.Decisions, o.Tokens, o.Usage, o.Log = store, reg, decisions, tokens, log, logger
	o.Budgets = budgets
	return wsbridge.New(o)
}
