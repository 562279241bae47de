package extproc

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tiergate/tiergate/internal/envoysim"
	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// records parses the usage records written to b so far.
func records(t *testing.T, b *syncbuf.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range b.Lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("usage record is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// newTestServer is New with opts completed: reg as the Registerer, and the
// decision and token metrics registered on it.
func newTestServer(tb testing.TB, reg *prometheus.Registry, opts Options) *Server {
	tb.Helper()
	decisions, err := policy.NewDecisionMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	tokens, err := usage.NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	opts.Registerer, opts.Decisions, opts.Tokens = reg, decisions, tokens
	srv, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

// roundTrip is resp as a reader of its wire form sees it (the dynamic
// metadata tiergate carries as raw bytes decoded as the ordinary field).
func roundTrip(tb testing.TB, resp *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	tb.Helper()
	wire, err := proto.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	var back extprocv3.ProcessingResponse
	if err := proto.Unmarshal(wire, &back); err != nil {
		tb.Fatal(err)
	}
	return &back
}

// upstreamRequest is what the fake upstream received.
type upstreamRequest struct {
	method, path string
	header       http.Header
	body         []byte
}

// harness is tiergate's ext_proc server on a real gRPC connection, a fake
// upstream, and envoysim in front, as Envoy would be.
type harness struct {
	t        *testing.T
	srv      *Server
	reg      *prometheus.Registry
	usageLog *syncbuf.Buffer
	proxy    *envoysim.Proxy
	url      string // the "Envoy" listener clients talk to
	mu       sync.Mutex
	got      []upstreamRequest
	respond  func(w http.ResponseWriter, r *http.Request)
}

func newHarness(t *testing.T, policyYAML string) *harness {
	t.Helper()
	return newHarnessWith(t, policyYAML, nil)
}

// newHarnessWith is newHarness with the server's options adjusted by
// configure (given the registry and the policy store) before it starts.
func newHarnessWith(t *testing.T, policyYAML string, configure func(*Options, *prometheus.Registry)) *harness {
	t.Helper()
	p := policy.Default()
	if policyYAML != "" {
		var err error
		if p, err = policy.Load([]byte(policyYAML)); err != nil {
			t.Fatal(err)
		}
	}
	h := &harness{t: t, reg: prometheus.NewRegistry(), usageLog: &syncbuf.Buffer{}}
	opts := Options{
		Store: policy.NewStore(p), Usage: usage.NewRecordWriter(h.usageLog), MaxUsageBytes: 1 << 20,
	}
	if configure != nil {
		configure(&opts, h.reg)
	}
	h.srv = newTestServer(t, h.reg, opts)
	g := grpc.NewServer(ServerOptions(DefaultMaxMessageBytes)...) // as serve runs it
	h.srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, upstreamRequest{r.Method, r.URL.RequestURI(), r.Header.Clone(), body})
		respond := h.respond
		h.mu.Unlock()
		if respond == nil {
			w.Header().Set("content-type", "application/json")
			_, _ = w.Write([]byte(`{"id":"x","usage":null}`))
			return
		}
		respond(w, r)
	}))
	h.proxy = &envoysim.Proxy{
		Client:       extprocv3.NewExternalProcessorClient(conn),
		Upstream:     up.URL,
		StripHeaders: []string{"x-tiergate-group"},
	}
	front := httptest.NewServer(h.proxy)
	h.url = front.URL
	t.Cleanup(func() {
		front.Close()
		up.Close()
		_ = conn.Close()
		g.Stop()
	})
	return h
}

func (h *harness) setResponse(f func(w http.ResponseWriter, r *http.Request)) {
	h.mu.Lock()
	h.respond = f
	h.mu.Unlock()
}

func (h *harness) upstream() []upstreamRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]upstreamRequest(nil), h.got...)
}

// do sends a request through "Envoy" and returns the client's response.
func (h *harness) do(method, path string, header map[string]string, body []byte) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, b
}

// doStatus is do for a request whose status the test knows: any other
// fails the test at once.
func (h *harness) doStatus(method, path string, header map[string]string, body []byte, status int) (*http.Response, []byte) {
	h.t.Helper()
	resp, b := h.do(method, path, header, body)
	if resp.StatusCode != status {
		h.t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, b)
	}
	return resp, b
}

// checkRefused checks that the client got want, the body of its refusal,
// and that nothing reached the upstream.
func checkRefused(t *testing.T, body []byte, want string, ups []upstreamRequest) {
	t.Helper()
	if string(body) != want {
		t.Errorf("client body:\n got %s\nwant %s", body, want)
	}
	if len(ups) != 0 {
		t.Fatalf("the upstream received %d requests, want none", len(ups))
	}
}

// lastRecord waits for the n-th usage record (1-based).
func (h *harness) record(n int) map[string]any {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := records(h.t, h.usageLog)
		if len(recs) >= n {
			return recs[n-1]
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("only %d usage records after 5s, want %d", len(recs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeChunks writes body in pieces of the given sizes, flushing each, so
// the ext_proc server sees chunk boundaries in awkward places.
func writeChunks(w http.ResponseWriter, body []byte, sizes ...int) {
	f := w.(http.Flusher)
	for i := 0; len(body) > 0; i++ {
		n := sizes[i%len(sizes)]
		if n > len(body) {
			n = len(body)
		}
		_, _ = w.Write(body[:n])
		f.Flush()
		body = body[n:]
		time.Sleep(time.Millisecond)
	}
}

// metricValue reads one series from a registry; 0 when it does not exist.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
