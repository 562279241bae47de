package extproc_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tiergate/tiergate/extproc"
	"github.com/tiergate/tiergate/internal/envoysim"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// records hands each usage record line to a channel, so the example can
// wait for the record the end of the stream writes.
type records chan string

func (r records) Write(p []byte) (int, error) {
	r <- string(p)
	return len(p), nil
}

// The ext_proc server on a gRPC listener, with Envoy's side played by
// envoysim in front of a stand-in upstream: a Responses request asking for
// priority goes upstream without it (the embedded default policy strips
// priority), with content-length matching the rewritten body, and the
// usage the upstream reports lands in one usage record.
func Example() {
	// Standing in for api.openai.com: it reports what it received and
	// answers with usage.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("upstream got %s (content-length %s)\n", body, r.Header.Get("content-length"))
		w.Header().Set("content-type", "application/json")
		_, _ = io.WriteString(w, `{"id":"resp_1","model":"gpt-5.5","service_tier":"default","usage":{"input_tokens":12,"output_tokens":3}}`)
	}))
	defer upstream.Close()

	reg := prometheus.NewRegistry()
	decisions, _ := policy.NewDecisionMetrics(reg)
	tokens, _ := usage.NewMetrics(reg)
	recs := make(records, 1)
	srv, err := extproc.New(extproc.Options{
		Store: policy.NewStore(policy.Default()), Registerer: reg, Decisions: decisions, Tokens: tokens,
		Usage: usage.NewRecordWriter(recs),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	g, _ := extproc.NewGRPCServer(extproc.DefaultMaxMessageBytes) // health and reflection included
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // serve's --extproc-listen
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()

	// Envoy's ext_proc filter, as envoy/envoy.yaml configures it.
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	envoy := httptest.NewServer(&envoysim.Proxy{
		Client: extprocv3.NewExternalProcessorClient(conn), Upstream: upstream.URL,
	})
	defer envoy.Close()

	resp, err := http.Post(envoy.URL+"/v1/responses", "application/json",
		strings.NewReader(`{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("client got", resp.StatusCode, string(body))

	rec := <-recs
	for _, f := range []string{"endpoint", "service_tier_requested", "service_tier_sent", "service_tier_reported", "action", "rule", "input_tokens", "output_tokens", "status"} {
		fmt.Printf("%s=%s ", f, gjson.Get(rec, f))
	}
	fmt.Println()
	// Output:
	// upstream got {"model":"gpt-5.5","input":"hi"} (content-length 32)
	// client got 200 {"id":"resp_1","model":"gpt-5.5","service_tier":"default","usage":{"input_tokens":12,"output_tokens":3}}
	// endpoint=responses service_tier_requested=priority service_tier_sent=none service_tier_reported=default action=filter rule=#1 input_tokens=12 output_tokens=3 status=completed
}
