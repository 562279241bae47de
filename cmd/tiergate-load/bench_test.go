package main

import (
	"context"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// BenchmarkTransaction is one transaction against an in-process server, the
// load tool's unit of work, for profiling both servers with go test
// -cpuprofile (the figures that count come from separate processes: see
// scripts/bench-extproc.sh).
func BenchmarkTransaction(b *testing.B) {
	body, err := responsesBody(2048)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		expect expectation
		start  func(testing.TB) string
	}{
		{"tiergate", expectFilter, func(tb testing.TB) string { a, _ := startTiergate(tb); return a }},
		{"null", expectContinue, func(tb testing.TB) string { a, _ := startNull(tb); return a }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := tc.start(b)
			cfg := &extprocConfig{target: addr, conns: 2, maxMsg: defaultMaxMsg}
			clients, closeConns, err := connect(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer closeConns()
			l := &load{clients: clients, body: body, authority: "api.openai.com", expect: tc.expect, timeout: 10 * time.Second}
			b.SetParallelism(8) // 16 streams on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				msgs := newRequestMessages(0, l.authority, body)
				w := l.newWorkerState()
				var client extprocv3.ExternalProcessorClient = clients[0]
				for pb.Next() {
					_, err := l.transaction(context.Background(), client, msgs, w)
					if err == nil {
						err = w.body.verify(w.bodyAnswer.b)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
