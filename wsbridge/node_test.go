package wsbridge

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/nodeclients"
	"github.com/tiergate/tiergate/internal/testcert"
)

// nodeDir holds the Node script and its pinned dependencies.
const nodeDir = "testdata/node"

// TestNodeClients runs the openai npm package's own clients (ResponsesWS,
// the GA OpenAIRealtimeWS and the beta one) through the bridge, served over
// TLS with a certificate this test makes, to the fake upstream, and checks
// what each side saw, a blocked turn on each protocol included.
//
// It needs Node and the packages in testdata/node installed; without them
// it fails rather than skips, so CI cannot pass without running it.
func TestNodeClients(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testPolicy)
	certs := testcert.New(t)
	caPEM, cert := certs.CAPEM, certs.Cert
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h.bridge)
	srv.Config = h.bridge.HTTPServer()
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	saw, stdout := nodeclients.Run(t, ctx, nodeDir,
		"NODE_EXTRA_CA_CERTS="+caFile,
		"TIERGATE_BASE_URL=https://"+srv.Listener.Addr().String()+"/v1",
		"OPENAI_API_KEY=sk-node",
	)
	t.Logf("the clients saw:\n%s", stdout)

	// What each client saw.
	checkNodeClient(t, "responses", saw["responses"],
		[]string{"response.created", "response.output_text.delta", "response.completed", "response.created", "response.output_text.delta", "response.completed", "error"},
		websocket.StatusPolicyViolation, "service_tier=priority is not allowed for model gpt-5.5")
	checkNodeClient(t, "realtime", saw["realtime"],
		[]string{"session.created", "session.updated", "response.created", "response.output_text.delta", "response.done"},
		websocket.StatusNormalClosure, "done")
	checkNodeClient(t, "realtime_beta", saw["realtime_beta"],
		[]string{"session.created", "error"},
		websocket.StatusPolicyViolation, "service_tier=priority is not allowed for model gpt-realtime-max")
	for _, client := range []string{"responses", "realtime_beta"} {
		var sawError bool
		for _, l := range saw[client] {
			if e := l.Get("event"); e.Get("type").Str == "error" {
				sawError = e.Get("status").Int() == 403 && e.Get("error.code").Str == "policy_violation"
			}
			if l.Get("error").Exists() && !strings.Contains(l.Get("error.message").Str, "not allowed") {
				t.Errorf("%s: the client reported %s", client, l.Raw)
			}
		}
		if !sawError {
			t.Errorf("%s: the client did not parse tiergate's 403 error event", client)
		}
	}

	// What the upstream received: three sessions, in order.
	resp, rt, beta := h.up.next(t), h.up.next(t), h.up.next(t)
	for _, fc := range []*fakeConn{resp, rt, beta} {
		if fc.header.Get("Authorization") != "Bearer sk-node" {
			t.Errorf("%s: authorization %q", fc.path, fc.header.Get("Authorization"))
		}
		if !strings.Contains(fc.extensions, "permessage-deflate") {
			t.Errorf("%s: the ws client's compression offer did not reach the upstream: %q", fc.path, fc.extensions)
		}
		fc.waitClosed(t)
	}
	got := frameTexts(resp.received())
	want := []string{
		`{"type":"response.create","model":"gpt-5.4","input":"Say hello."}`,
		`{"type":"response.create","model":"gpt-5.4","service_tier":"flex","input":"And again."}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the Responses upstream received\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rt.path != "/v1/realtime" || rt.query != "model=gpt-realtime" || beta.query != "model=gpt-realtime-max" || !beta.beta {
		t.Errorf("realtime sessions: %s?%s, %s?%s beta %v", rt.path, rt.query, beta.path, beta.query, beta.beta)
	}
	if got := frameTexts(rt.received()); len(got) != 2 || !strings.Contains(got[0], `"session.update"`) || !strings.Contains(got[1], `"response.create"`) {
		t.Errorf("the Realtime upstream received %v", got)
	}
	if got := beta.received(); len(got) != 0 {
		t.Errorf("the beta upstream received the blocked frame: %v", got)
	}

	h.waitSessions(t)
	var statuses []string
	for _, r := range h.records() {
		statuses = append(statuses, r["endpoint"].(string)+":"+r["status"].(string))
	}
	if s := strings.Join(statuses, ","); s != "responses_ws:completed,responses_ws:completed,responses_ws:blocked,realtime:completed,realtime:blocked" {
		t.Errorf("records %s", s)
	}
}

// checkNodeClient checks the event types a client saw, in order, and how
// its session closed.
func checkNodeClient(t *testing.T, name string, lines []gjson.Result, types []string, code websocket.StatusCode, reason string) {
	t.Helper()
	var got []string
	var closeLine gjson.Result
	for _, l := range lines {
		switch {
		case l.Get("event").Exists():
			got = append(got, l.Get("event.type").Str)
		case l.Get("close").Exists():
			closeLine = l.Get("close")
		}
	}
	if strings.Join(got, ",") != strings.Join(types, ",") {
		t.Errorf("%s saw events %v, want %v", name, got, types)
	}
	if closeLine.Get("code").Int() != int64(code) || closeLine.Get("reason").Str != reason {
		t.Errorf("%s closed with %s, want %d %q", name, closeLine.Raw, code, reason)
	}
}
