package wsbridge_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
	"github.com/tiergate/tiergate/wsbridge"
)

// A bridge in front of an upstream, serving a client whose response.create
// asks for a tier the policy refuses: the client gets one error event, then
// the close; the upstream gets nothing of the frame. On SIGTERM the bridge
// drains before the listener stops.
func Example() {
	// Standing in for api.openai.com: it accepts sessions and reads.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}))
	defer upstream.Close()

	p, err := policy.Load([]byte(`
rules:
- service_tier: priority
  action: block
  error_message: priority is not for this gateway
`))
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	decisions, _ := policy.NewDecisionMetrics(reg)
	tokens, _ := usage.NewMetrics(reg)
	bridge, err := wsbridge.New(wsbridge.Options{
		Store: policy.NewStore(p), Registerer: reg, Decisions: decisions, Tokens: tokens,
		Upstream: "ws://" + upstream.Listener.Addr().String(), // default wss://api.openai.com
	})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := bridge.HTTPServer() // or ServeTLS with --ws-tls-cert/--ws-tls-key
	go func() { _ = srv.Serve(ln) }()

	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+wsbridge.PathResponses, nil)
	if err != nil {
		panic(err)
	}
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","service_tier":"priority"}`))
	_, ev, _ := c.Read(ctx)
	fmt.Println(gjson.GetBytes(ev, "status"), gjson.GetBytes(ev, "error.code"), gjson.GetBytes(ev, "error.message"))
	_, _, err = c.Read(ctx)
	fmt.Println(websocket.CloseStatus(err))

	// On SIGTERM: /readyz turns unready, sessions get the grace, then the
	// listener stops.
	grace, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = bridge.Shutdown(grace)
	fmt.Println("ready:", bridge.Ready())
	_ = srv.Shutdown(grace)
	// Output:
	// 403 policy_violation priority is not for this gateway
	// StatusPolicyViolation
	// ready: false
}
