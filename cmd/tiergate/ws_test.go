package main

import (
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/tiergate/tiergate/wsbridge"
)

// TestWSFlagsReachTheBridge: each --ws-* flag sets its own bridge option,
// and none is left at the bridge's default by mistake.
func TestWSFlagsReachTheBridge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want wsbridge.Options
	}{
		{"defaults", nil, wsbridge.Options{
			Upstream: wsbridge.DefaultUpstream, DialTimeout: wsbridge.DefaultDialTimeout, WriteTimeout: wsbridge.DefaultWriteTimeout,
			IdleTimeout: wsbridge.DefaultIdleTimeout, MaxSession: wsbridge.DefaultMaxSession, ReadLimit: wsbridge.DefaultReadLimit,
		}},
		{"every flag", []string{
			"--ws-upstream", "ws://127.0.0.1:9", "--ws-dial-timeout", "1s", "--ws-write-timeout", "2s",
			"--ws-idle-timeout", "3s", "--ws-max-session", "4s", "--ws-read-limit", "5",
			"--ws-allowed-origins", " https://a.example , ,https://*.b.example",
		}, wsbridge.Options{
			Upstream: "ws://127.0.0.1:9", DialTimeout: time.Second, WriteTimeout: 2 * time.Second,
			IdleTimeout: 3 * time.Second, MaxSession: 4 * time.Second, ReadLimit: 5,
			AllowedOrigins: []string{"https://a.example", "https://*.b.example"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseServeFlags(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.ws.options(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("options %+v\nwant    %+v", got, tc.want)
			}
		})
	}
}
