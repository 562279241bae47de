package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"sigs.k8s.io/yaml"

	"github.com/tiergate/tiergate/internal/wsfake"
)

var metricName = regexp.MustCompile(`\btiergate_[a-z0-9_]+`)

// exportedFamilies lists the metric families in a /metrics page.
func exportedFamilies(page string) map[string]bool {
	fams := map[string]bool{}
	for _, line := range strings.Split(page, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			fams[strings.Fields(f)[0]] = true
		}
	}
	return fams
}

// family maps a series name in a query to its family.
func family(name string, fams map[string]bool) string {
	if fams[name] {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] {
			return base
		}
	}
	return name
}

// TestMetricsDashboardAndAlerts runs traffic through the binary, lints its
// live /metrics with promtool, and checks that every metric the Grafana
// dashboard and the alert rules query is one the binary exports.
func TestMetricsDashboardAndAlerts(t *testing.T) {
	t.Parallel()
	upstream := fakeResponsesUpstream(t)
	_, addrs, stdout := startServe(t, "--usage-log", "off", "--ws-upstream", upstream, "--config", "testdata/observability.yaml")
	conn, err := grpc.NewClient(addrs["extproc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := extprocv3.NewExternalProcessorClient(conn)
	const response = `{"id":"resp_1","model":"gpt-5.5","service_tier":"default","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":2},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":1}}}`
	for _, body := range []string{`{"model":"gpt-5.5","service_tier":"priority"}`, `{"model":"gpt-5.5"}`, `{`} {
		if _, err := transact(context.Background(), client, body, response); err != nil {
			t.Fatal(err)
		}
	}
	wsTurn(t, "ws://"+addrs["websocket"]+"/v1/responses", nil)
	// The session's end is counted once both sides have closed.
	var page string
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, page = get(t, "http://"+addrs["admin"]+"/metrics")
		if strings.Contains(page, "tiergate_ws_sessions_total{") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the WebSocket session was not counted within 5s of its close")
		}
		time.Sleep(20 * time.Millisecond)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed: apt-get install prometheus (.ci/run does this)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	fams := exportedFamilies(page)
	for _, want := range []string{"tiergate_policy_decisions_total", "tiergate_extproc_requests_total", "tiergate_extproc_message_duration_seconds", "tiergate_config_info",
		"tiergate_cost_total", "tiergate_cost_unpriced_total", "tiergate_policy_shadow_decisions_total"} {
		if !fams[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if stdout.String() != "" {
		t.Errorf("--usage-log off wrote to stdout:\n%s", stdout.String())
	}

	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, err := os.ReadFile("../../k8s/components/prometheus-operator/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query names no tiergate metric: %s", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !fams[family(n, fams)] {
					t.Errorf("panel %q queries %s, which the binary does not export", p.Title, n)
				}
			}
		}
	}

	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct{ Alert, Expr string }
			}
		}
	}
	raw, err = os.ReadFile("../../k8s/components/prometheus-operator/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &rule); err != nil && !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	_ = yaml.Unmarshal(raw, &rule)
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				if !fams[family(n, fams)] {
					t.Errorf("alert %s queries %s, which the binary does not export", r.Alert, n)
				}
			}
		}
	}
}

// fakeResponsesUpstream is a Responses WebSocket upstream that answers each
// response.create with one turn and its usage.
func fakeResponsesUpstream(t *testing.T) string {
	t.Helper()
	srv := wsfake.Serve(t, func(ctx context.Context, c *websocket.Conn) {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
			for _, ev := range []string{
				`{"type":"response.created","response":{"id":"resp_1","status":"in_progress","model":"gpt-5.5"}}`,
				`{"type":"response.output_text.delta","response_id":"resp_1","delta":"Hi"}`,
				`{"type":"response.completed","response":{"id":"resp_1","status":"completed","model":"gpt-5.5","service_tier":"default","usage":{"input_tokens":3,"output_tokens":1}}}`,
			} {
				if err := c.Write(ctx, websocket.MessageText, []byte(ev)); err != nil {
					return
				}
			}
		}
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// wsTurn runs one turn through the bridge and closes the session; client
// dials (nil: the default client).
func wsTurn(t *testing.T, url string, client *http.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: http.Header{"Authorization": {"Bearer sk-test"}}})
	if err != nil {
		t.Fatalf("dial the bridge: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","service_tier":"priority","input":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatalf("read event %d: %v", i, err)
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "done")
}
