package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// drainConfig is what `tiergate drain` is told on its command line.
type drainConfig struct {
	envoyAdmin    string
	tiergateAdmin string
	timeout       time.Duration
	poll          time.Duration
	install       string
}

// Why a hook and not Envoy's SIGTERM: Envoy closes its listeners and every
// connection at once on SIGTERM, so a pod that only waited (preStop: sleep)
// cut every LLM stream still running when the sleep ended. `tiergate drain`
// is Envoy's preStop hook instead. It runs in Envoy's container, whose image
// has no curl, from a copy of this binary that an init container put on a
// shared emptyDir (`tiergate drain --install`).
//
// The sequence:
//  1. ask tiergate (its admin listener, POST /drain) to drain its WebSocket
//     bridge: new upgrades get 503, open sessions run their turns on for
//     --shutdown-grace, then are closed with 1001 and recorded;
//  2. read Envoy's drain time (--drain-time-s, from /server_info) and start
//     its graceful drain (POST /drain_listeners?graceful): Envoy keeps
//     accepting for the drain time, long enough for the endpoint to leave
//     the Services, while it asks clients to go (connection: close, GOAWAY),
//     then closes its listeners; requests under way run on;
//  3. wait until the drain time has passed and no request is in flight
//     (the sum of Envoy's http.*.downstream_rq_active gauges, its own admin
//     listener left out), or until --timeout.
//
// Then the hook returns and the kubelet sends Envoy SIGTERM, with nothing
// left to cut; tiergate, a native sidecar, is stopped after Envoy.
func parseDrainFlags(args []string, stderr io.Writer) (*drainConfig, error) {
	c := &drainConfig{}
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.envoyAdmin, "envoy-admin", "http://127.0.0.1:9901", "Envoy's admin API (loopback only)")
	fs.StringVar(&c.tiergateAdmin, "tiergate-admin", "http://127.0.0.1:9464", "tiergate's admin listener, asked to drain its WebSocket sessions (loopback only; empty: do not ask)")
	fs.DurationVar(&c.timeout, "timeout", 100*time.Second, "the most the drain may take; keep it below the pod's terminationGracePeriodSeconds, and above Envoy's --drain-time-s and tiergate's --shutdown-grace")
	fs.DurationVar(&c.poll, "poll", 500*time.Millisecond, "how often Envoy's in-flight requests are read")
	fs.StringVar(&c.install, "install", "", "instead of draining, copy this binary to the path given (an emptyDir shared with Envoy's container) and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("drain: unexpected argument %q", fs.Arg(0))
	}
	if c.install != "" {
		return c, nil
	}
	if c.timeout <= 0 || c.poll <= 0 {
		return nil, errors.New("drain: --timeout and --poll must be positive")
	}
	for _, a := range []struct{ flag, url string }{{"--envoy-admin", c.envoyAdmin}, {"--tiergate-admin", c.tiergateAdmin}} {
		if a.url == "" && a.flag == "--tiergate-admin" {
			continue
		}
		if err := loopbackURL(a.url); err != nil {
			return nil, fmt.Errorf("%s: %w", a.flag, err)
		}
	}
	return c, nil
}

// loopbackURL checks that raw is an http URL on a loopback address: the
// admin APIs the drain calls must never be exposed beyond the pod.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%q: want http://127.0.0.1:PORT", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: the admin API must stay inside the pod", host)
	}
	return nil
}

func runDrain(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseDrainFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.install != "" {
		return installSelf(cfg.install)
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()

	if cfg.tiergateAdmin != "" {
		if err := post(ctx, client, cfg.tiergateAdmin+"/drain"); err != nil {
			// Envoy's drain matters more: go on, and say so.
			log.Warn("tiergate did not start draining its WebSocket sessions", "err", err)
		} else {
			log.Info("tiergate is draining its WebSocket sessions")
		}
	}
	drainTime, err := envoyDrainTime(ctx, client, cfg.envoyAdmin)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if err := post(ctx, client, cfg.envoyAdmin+"/drain_listeners?graceful"); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	log.Info("Envoy is draining its listeners", "drain_time", drainTime.String(), "timeout", cfg.timeout.String())

	tick := time.NewTicker(cfg.poll)
	defer tick.Stop()
	active := -1
	for {
		n, err := envoyActiveRequests(ctx, client, cfg.envoyAdmin)
		switch {
		case err != nil && ctx.Err() == nil:
			// Envoy no longer answers: it has exited, and there is
			// nothing left to wait for.
			log.Info("Envoy's admin API no longer answers; drain over", "err", err, "elapsed", time.Since(start).Round(time.Millisecond).String())
			return nil
		case err == nil:
			if n != active {
				log.Info("requests in flight", "active", n)
				active = n
			}
			if n == 0 && time.Since(start) >= drainTime {
				log.Info("drained", "elapsed", time.Since(start).Round(time.Millisecond).String())
				return nil
			}
		}
		select {
		case <-ctx.Done():
			log.Error("drain timeout: requests still in flight are cut when Envoy stops", "active", active, "timeout", cfg.timeout.String())
			return exitCode(exitError)
		case <-tick.C:
		}
	}
}

// adminRequest sends a request with no body to an admin API.
func adminRequest(ctx context.Context, client *http.Client, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

func post(ctx context.Context, client *http.Client, u string) error {
	resp, err := adminRequest(ctx, client, http.MethodPost, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func getJSON(ctx context.Context, client *http.Client, u string, v any) error {
	resp, err := adminRequest(ctx, client, http.MethodGet, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// envoyDrainTime reads Envoy's --drain-time-s from /server_info.
func envoyDrainTime(ctx context.Context, client *http.Client, admin string) (time.Duration, error) {
	var info struct {
		Options struct {
			DrainTime string `json:"drain_time"`
		} `json:"command_line_options"`
	}
	if err := getJSON(ctx, client, admin+"/server_info", &info); err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(info.Options.DrainTime)
	if err != nil {
		return 0, fmt.Errorf("the drain_time in Envoy's /server_info %q: %w", info.Options.DrainTime, err)
	}
	return d, nil
}

// envoyActiveRequests sums Envoy's downstream_rq_active gauges over its HTTP
// connection managers, leaving out the admin listener's own (this request).
// An upgraded WebSocket counts until it closes.
func envoyActiveRequests(ctx context.Context, client *http.Client, admin string) (int, error) {
	var stats struct {
		Stats []struct {
			Name  string          `json:"name"`
			Value json.RawMessage `json:"value"`
		} `json:"stats"`
	}
	if err := getJSON(ctx, client, admin+"/stats?format=json&type=Gauges&filter="+url.QueryEscape(`^http\..*\.downstream_rq_active$`), &stats); err != nil {
		return 0, err
	}
	total := 0
	for _, s := range stats.Stats {
		if s.Name == "http.admin.downstream_rq_active" {
			continue
		}
		var n int
		if err := json.Unmarshal(s.Value, &n); err != nil {
			return 0, fmt.Errorf("stat %s: %w", s.Name, err)
		}
		total += n
	}
	return total, nil
}

// installSelf copies the running binary to dst (written beside it, then
// renamed, so Envoy's hook never runs half a file).
func installSelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("drain --install: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("drain --install: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tiergate-*")
	if err != nil {
		return fmt.Errorf("drain --install: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("drain --install: %w", err)
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return fmt.Errorf("drain --install: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("drain --install: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("drain --install: %w", err)
	}
	return nil
}
