package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// grpcurlPath finds grpcurl once: the version pinned as a tool in go.mod,
// which `go tool -n` builds (or finds in the build cache) and names.
var grpcurlPath = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "tool", "-n", "grpcurl").Output()
	if err != nil {
		return "", fmt.Errorf("go tool -n grpcurl: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

func grpcurl(t *testing.T, stdin string, args ...string) (string, string) {
	t.Helper()
	path, err := grpcurlPath()
	if err != nil {
		t.Fatalf("grpcurl (a tool in go.mod): %v", err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("grpcurl %v: %v\n%s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// processMessages renders the ext_proc messages Envoy would send for one
// request, as grpcurl reads them from stdin (concatenated JSON).
func processMessages(path string, headers map[string]string, body string) string {
	type hv struct {
		Key      string `json:"key"`
		RawValue string `json:"raw_value"`
	}
	hs := []hv{{":method", b64("POST")}, {":path", b64(path)}, {":authority", b64("api.openai.com")}}
	for k, v := range headers {
		hs = append(hs, hv{k, b64(v)})
	}
	first, _ := json.Marshal(map[string]any{"request_headers": map[string]any{"headers": map[string]any{"headers": hs}, "end_of_stream": body == ""}})
	if body == "" {
		return string(first)
	}
	second, _ := json.Marshal(map[string]any{"request_body": map[string]any{"body": b64(body), "end_of_stream": true}})
	return string(first) + "\n" + string(second)
}

// TestGRPCurl drives the running binary's ext_proc server with grpcurl,
// through reflection, as an operator would by hand.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	_, addrs, usage := startServe(t, "--config", "testdata/good.yaml")
	addr := addrs["extproc"]

	t.Run("reflection lists the ext_proc and health services", func(t *testing.T) {
		out, _ := grpcurl(t, "", "-plaintext", addr, "list")
		for _, svc := range []string{"envoy.service.ext_proc.v3.ExternalProcessor", "grpc.health.v1.Health"} {
			if !strings.Contains(out, svc) {
				t.Errorf("list lacks %s:\n%s", svc, out)
			}
		}
	})
	t.Run("the health service says SERVING", func(t *testing.T) {
		out, _ := grpcurl(t, "", "-plaintext", addr, "grpc.health.v1.Health/Check")
		if !strings.Contains(out, `"SERVING"`) {
			t.Errorf("health: %s", out)
		}
	})

	cases := []struct {
		name    string
		path    string
		headers map[string]string
		body    string
		check   func(t *testing.T, responses []map[string]any)
	}{
		{
			name: "a filtered body comes back rewritten with its content-length", path: "/v1/responses",
			body: `{"model":"gpt-4o","service_tier":"priority","input":"hi"}`,
			check: func(t *testing.T, rs []map[string]any) {
				if len(rs) != 2 || rs[0]["requestHeaders"] == nil {
					t.Fatalf("want a headers answer then a body answer, got %v", rs)
				}
				common := rs[1]["requestBody"].(map[string]any)["response"].(map[string]any)
				body, _ := base64.StdEncoding.DecodeString(common["bodyMutation"].(map[string]any)["body"].(string))
				if string(body) != `{"model":"gpt-4o","input":"hi"}` {
					t.Errorf("mutated body %s", body)
				}
				set := common["headerMutation"].(map[string]any)["setHeaders"].([]any)
				h := set[len(set)-1].(map[string]any)["header"].(map[string]any)
				if h["key"] != "content-length" || h["rawValue"] != b64("31") {
					t.Errorf("content-length mutation %v", h)
				}
			},
		},
		{
			name: "a blocked body gets an immediate 403 in OpenAI's shape", path: "/v1/responses",
			body: `{"model":"gpt-5.5","service_tier":"priority"}`,
			check: func(t *testing.T, rs []map[string]any) {
				ir, ok := rs[len(rs)-1]["immediateResponse"].(map[string]any)
				if !ok {
					t.Fatalf("no immediate response in %v", rs)
				}
				if ir["status"].(map[string]any)["code"] != "Forbidden" {
					t.Errorf("status %v", ir["status"])
				}
				body, _ := base64.StdEncoding.DecodeString(ir["body"].(string))
				if !strings.Contains(string(body), `"code":"policy_violation"`) {
					t.Errorf("body %s", body)
				}
			},
		},
		{
			name: "an unpoliced path is switched off with a mode override on the headers answer", path: "/v1/embeddings",
			body: "",
			check: func(t *testing.T, rs []map[string]any) {
				mo, ok := rs[0]["modeOverride"].(map[string]any)
				if !ok || rs[0]["requestHeaders"] == nil {
					t.Fatalf("want requestHeaders with modeOverride, got %v", rs)
				}
				if mo["responseHeaderMode"] != "SKIP" || mo["requestBodyMode"] != nil && mo["requestBodyMode"] != "NONE" {
					t.Errorf("mode override %v", mo)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := grpcurl(t, processMessages(tc.path, tc.headers, tc.body), "-plaintext", "-d", "@", addr, "envoy.service.ext_proc.v3.ExternalProcessor/Process")
			var rs []map[string]any
			dec := json.NewDecoder(strings.NewReader(out))
			for dec.More() {
				var m map[string]any
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("grpcurl output: %v\n%s", err, out)
				}
				rs = append(rs, m)
			}
			tc.check(t, rs)
		})
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(usage.String(), `"status":"blocked"`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(usage.String(), `"status":"blocked"`) {
		t.Errorf("the blocked request wrote no usage record; usage log:\n%s", usage.String())
	}
}
