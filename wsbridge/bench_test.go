package wsbridge

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// benchFrame is a ~200-byte response.create, the load tool's turn.
var benchFrame = []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","store":false,` +
	`"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"Say hello to the benchmark, briefly."}]}]}`)

// BenchmarkTurn is one sequential turn over one session: the client's
// response.create, the upstream's response.created, one delta and
// response.completed. "direct" talks to the fake upstream itself,
// "minimal-relay" through two goroutines that copy frames with the same
// library and nothing else, "bridge" through the bridge: the gap between the
// last two is the policy and the accounting.
func BenchmarkTurn(b *testing.B) {
	for _, via := range []string{"direct", "minimal-relay", "bridge"} {
		b.Run(via, func(b *testing.B) {
			h := newHarness(b, testPolicy, func(o *Options) { o.Usage = nil })
			url := h.wsURL(PathResponses)
			switch via {
			case "direct":
				url = h.up.url() + PathResponses
			case "minimal-relay":
				relay := httptest.NewServer(minimalRelay(h.up.url()))
				defer relay.Close()
				url = "ws://" + relay.Listener.Addr().String() + PathResponses
			}
			ctx := context.Background()
			c, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Write(ctx, websocket.MessageText, benchFrame); err != nil {
					b.Fatal(err)
				}
				for {
					_, ev, err := c.Read(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if strings.Contains(string(ev[:min(len(ev), 40)]), "response.completed") {
						break
					}
				}
			}
			b.StopTimer()
			_ = c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

// minimalRelay is the floor for any bridge: dial, accept, and copy frames
// both ways, nothing more.
func minimalRelay(upstream string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.Background()
		up, _, err := websocket.Dial(ctx, upstream+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.CloseNow()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		pipe := func(dst, src *websocket.Conn) {
			for {
				typ, p, err := src.Read(ctx)
				if err != nil || dst.Write(ctx, typ, p) != nil {
					_ = dst.CloseNow()
					_ = src.CloseNow()
					return
				}
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			pipe(c, up)
		}()
		pipe(up, c)
		<-done
	})
}

// benchSession is a session with no connections, for the per-frame work
// that does not touch the network.
func benchSession(b *testing.B) *session {
	b.Helper()
	reg := prometheus.NewRegistry()
	decisions, _ := policy.NewDecisionMetrics(reg)
	tokens, _ := usage.NewMetrics(reg)
	br, err := New(Options{
		Store: policy.NewStore(mustPolicy(b, testPolicy)), Registerer: reg, Decisions: decisions, Tokens: tokens,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	r, _ := http.NewRequest("GET", "/v1/responses", nil)
	return &session{b: br, ep: policy.EndpointResponsesWS, em: br.eps[policy.EndpointResponsesWS], header: r.Header, start: time.Now()}
}

// BenchmarkClientFrame is the client pump's work on one response.create
// short of the write (session.police: policy, lane and event id, the
// session.update check, queueing the turn), the turn drained again so the
// queue stays empty.
func BenchmarkClientFrame(b *testing.B) {
	s := benchSession(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		ob := getBuf()
		if _, ok := s.police(benchFrame, ob); !ok {
			b.Fatal("the frame was refused")
		}
		s.mu.Lock()
		s.turns.popWaiting("")
		s.mu.Unlock()
		putBuf(ob)
	}
}

// BenchmarkUpstreamEvent is the upstream pump's accounting of the events
// of one turn: response.created, a delta (parsed: the turn awaits its
// first token), a second delta (skipped unparsed) and response.completed
// (parsed, recorded and counted).
func BenchmarkUpstreamEvent(b *testing.B) {
	s := benchSession(b)
	events := [][]byte{
		[]byte(`{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5.4","usage":null}}`),
		[]byte(`{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}`),
		[]byte(`{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" there"}`),
		[]byte(`{"type":"response.completed","sequence_number":3,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.4-2026-01-01","service_tier":"default","usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":20},"output_tokens":45,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":165}}}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, ev := range events {
			s.account(ev)
		}
	}
}
