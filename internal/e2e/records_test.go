package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/testcert"
)

// loadRequest is one kind of HTTP request in the mixed load.
type loadRequest struct {
	name, path string
	header     map[string]string
	body       string
	status     int
	// record is the status its usage record must carry.
	record string
}

// mixedRequests: filtered, blocked, passed, refused, streamed and not, on
// every policed endpoint.
var mixedRequests = []loadRequest{
	{"a filtered Responses request", "/v1/responses", nil, `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`, http.StatusOK, "completed"},
	{"a blocked Responses request", "/v1/responses", nil, `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`, http.StatusForbidden, "blocked"},
	{"a passed Chat request", "/v1/chat/completions", nil, `{"model":"gpt-5.4","service_tier":"flex","messages":[]}`, http.StatusOK, "completed"},
	{"a Chat body that is not JSON", "/v1/chat/completions", nil, `{"model":`, http.StatusBadRequest, "refused"},
	{"an unknown content-encoding", "/v1/responses", map[string]string{"content-encoding": "br"}, "\x1b\x00\x00", http.StatusUnsupportedMediaType, "refused"},
	{"a streamed Chat request", "/v1/chat/completions?reply=sse", nil, `{"model":"gpt-5.4","stream":true,"messages":[]}`, http.StatusOK, "completed"},
	{"a streamed, filtered Responses request", "/v1/responses?reply=sse", nil, `{"model":"gpt-5.4","stream":true,"service_tier":"priority","input":"hi"}`, http.StatusOK, "completed"},
	{"a streamed Messages request", "/v1/messages?reply=sse", nil, `{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}`, http.StatusOK, "completed"},
	{"a filtered compaction request", "/v1/responses/compact", nil, `{"model":"gpt-5.4","input":[],"service_tier":"priority"}`, http.StatusOK, "completed"},
	{"a gzip'd body from the fast group's key", "/v1/responses", map[string]string{"content-encoding": "gzip", "authorization": "Bearer " + keyFast}, string(gzipBytes([]byte(`{"model":"gpt-5.5","input":"hi"}`))), http.StatusOK, "completed"},
	{"a Messages request", "/v1/messages", nil, `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`, http.StatusOK, "completed"},
	{"a blocked fast-mode Messages request", "/v1/messages", map[string]string{"anthropic-beta": fastModeBeta}, `{"model":"claude-opus-4-6","speed":"fast","max_tokens":5,"messages":[]}`, http.StatusForbidden, "blocked"},
}

// podClients returns an HTTP/1.1 and an HTTP/2 client for p's listener.
func podClients(t *testing.T, certs testcert.Set) []*http.Client {
	t.Helper()
	var out []*http.Client
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}, ForceAttemptHTTP2: h2, DisableCompression: true, MaxIdleConnsPerHost: 16}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		out = append(out, &http.Client{Transport: tr, Timeout: 20 * time.Second})
	}
	return out
}

// do sends one request and reads the whole answer.
func do(c *http.Client, base string, r loadRequest) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+r.path, strings.NewReader(r.body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return resp.StatusCode, err
	}
	return resp.StatusCode, nil
}

// metricValues reads every sample of name from tiergate's /metrics, keyed
// by its label set.
func metricValues(t *testing.T, admin, name string) map[string]float64 {
	t.Helper()
	resp, err := adminHTTP.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples, bad, _ := readSamples(resp.Body, func(line string) bool {
		return strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ")
	})
	if len(bad) > 0 {
		t.Fatalf("samples with no value: %q", bad)
	}
	out := map[string]float64{}
	for series, v := range samples {
		out[series[len(name):]] = v
	}
	return out
}

// label reads one label's value out of a label set as metricValues keys it.
func label(set, name string) string {
	_, rest, ok := strings.Cut(set, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// TestNothingLost: under a mixed load through Envoy (the pod's bootstrap)
// of N HTTP requests and M WebSocket turns, tiergate writes exactly N + M
// usage records, each named once by (request_id, response_id), one per
// refused request and blocked frame, and its token counter holds exactly
// the records' tokens.
func TestNothingLost(t *testing.T) {
	t.Parallel()
	certs := testcert.NewFor(t, "api.openai.com", "api.anthropic.com")
	p := startPod(t, podOptions{certs: certs, upstream: startUpstream(t, certs).addr, wsUpstream: slowWSUpstream(t)})
	base := "https://" + p.listen
	clients := podClients(t, certs)

	// HTTP: every kind over both protocols, several times, from 6 workers.
	const rounds = 20
	var jobs []loadRequest
	for range rounds {
		for range clients {
			jobs = append(jobs, mixedRequests...)
		}
	}
	wantStatus := map[string]int{}
	var next atomic.Int64
	var failures sync.Map
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				r := jobs[i]
				status, err := do(clients[(i+w)%len(clients)], base, r)
				if err != nil || status != r.status {
					failures.Store(fmt.Sprintf("%s #%d", r.name, i), fmt.Sprintf("status %d, err %v", status, err))
				}
			}
		})
	}
	for _, r := range jobs {
		wantStatus[r.record]++
	}

	// WebSocket: sessions of three turns, and sessions whose second frame
	// is blocked (the session then closes with 1008).
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	const sessions, turnsEach, blockedSessions = 24, 3, 8
	turn := func(c *websocket.Conn) error {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`)); err != nil {
			return err
		}
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				return err
			}
			if gjson.GetBytes(data, "type").Str == "response.completed" {
				return nil
			}
		}
	}
	dial := func() (*websocket.Conn, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		t.Cleanup(tr.CloseIdleConnections)
		c, _, err := websocket.Dial(ctx, "wss://"+p.listen+"/v1/responses", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
		return c, err
	}
	for s := range sessions + blockedSessions {
		wg.Go(func() {
			c, err := dial()
			if err != nil {
				failures.Store(fmt.Sprintf("session %d", s), err.Error())
				return
			}
			defer c.CloseNow()
			n := turnsEach
			if s >= sessions {
				n = 1
			}
			for k := range n {
				if err := turn(c); err != nil {
					failures.Store(fmt.Sprintf("session %d turn %d", s, k), err.Error())
					return
				}
			}
			if s < sessions {
				_ = c.Close(websocket.StatusNormalClosure, "")
				return
			}
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5.5","service_tier":"priority","input":"hi"}`)); err != nil {
				failures.Store(fmt.Sprintf("session %d blocked frame", s), err.Error())
				return
			}
			for {
				if _, _, err := c.Read(ctx); err != nil {
					if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
						failures.Store(fmt.Sprintf("session %d close", s), err.Error())
					}
					return
				}
			}
		})
	}
	wg.Wait()
	failures.Range(func(k, v any) bool {
		t.Errorf("%s: %s", k, v)
		return true
	})
	wantStatus["completed"] += sessions*turnsEach + blockedSessions
	wantStatus["blocked"] += blockedSessions
	n, m := len(jobs), sessions*turnsEach+2*blockedSessions

	// Every record is written once the last stream and session has ended;
	// wait for them, then a while longer for any extra.
	deadline := time.Now().Add(10 * time.Second)
	var recs []gjson.Result
	for {
		recs = readRecords(t, p.usageFile)
		if len(recs) >= n+m || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	recs = readRecords(t, p.usageFile)
	if len(recs) != n+m {
		t.Fatalf("%d usage records for %d HTTP requests and %d WebSocket turns and blocked frames, want %d", len(recs), n, m, n+m)
	}

	gotStatus := map[string]int{}
	seen := map[string]string{}
	sums := map[string]float64{}
	for _, r := range recs {
		gotStatus[r.Get("status").Str]++
		rid := r.Get("request_id").Str
		if rid == "" {
			t.Errorf("a record without a request_id: %s", r.Raw)
		}
		key := rid + " " + r.Get("response_id").Str
		if prev, dup := seen[key]; dup {
			t.Errorf("(request_id, response_id) = (%s) twice:\n%s\n%s", key, prev, r.Raw)
		}
		seen[key] = r.Raw
		ws := r.Get("endpoint").Str == "responses_ws"
		if turn := r.Get("turn"); ws != turn.Exists() || ws && turn.Int() < 1 {
			t.Errorf("turn %s on a %s record", turn.Raw, r.Get("endpoint").Str)
		}
		for _, f := range []string{"input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens", "reasoning_tokens"} {
			sums[strings.TrimSuffix(f, "_tokens")] += r.Get(f).Float()
		}
	}
	if fmt.Sprint(gotStatus) != fmt.Sprint(wantStatus) {
		t.Errorf("records by status %v, want %v", gotStatus, wantStatus)
	}
	counted := map[string]float64{}
	for set, v := range metricValues(t, p.tiergateAdmin, "tiergate_tokens_total") {
		counted[label(set, "type")] += v
	}
	for typ := range sums {
		if sums[typ] == 0 {
			delete(sums, typ) // a type no record reports has no series
		}
	}
	if fmt.Sprint(counted) != fmt.Sprint(sums) {
		t.Errorf("tiergate_tokens_total by type %v, the records' tokens %v", counted, sums)
	}
	for set, v := range metricValues(t, p.tiergateAdmin, "tiergate_usage_records_dropped_total") {
		if v != 0 {
			t.Errorf("tiergate_usage_records_dropped_total%s = %v", set, v)
		}
	}
	t.Logf("%d HTTP requests and %d WebSocket records (%d turns, %d blocked frames): %d usage records; tokens %v", n, m, m-blockedSessions, blockedSessions, len(recs), counted)
}

// TestUsageLogStdoutNobodyReads: tiergate's usage records go to a stdout
// pipe that nobody reads. Requests through Envoy still complete at the
// speed they had while the pipe had room; what cannot be queued is counted
// exactly (every request is either in the pipe once it is read, or
// counted as dropped) and logged once (rate-limited).
func TestUsageLogStdoutNobodyReads(t *testing.T) {
	t.Parallel()
	certs := testcert.NewFor(t, "api.openai.com", "api.anthropic.com")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	p := startPod(t, podOptions{certs: certs, upstream: startUpstream(t, certs).addr, wsUpstream: slowWSUpstream(t),
		tiergateStdout: pw, usageStdout: true, tiergateArgs: []string{"--usage-log-queue", "16"}})
	base := "https://" + p.listen
	c := podClients(t, certs)[1]

	const n = 400
	req := mixedRequests[2] // a passed Chat request, with usage
	latencies := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		status, err := do(c, base, req)
		latencies[i] = time.Since(start)
		if err != nil || status != http.StatusOK {
			t.Fatalf("request %d: status %d, err %v", i, status, err)
		}
	}
	dropped := metricValues(t, p.tiergateAdmin, "tiergate_usage_records_dropped_total")
	full := dropped[`{reason="queue_full"}`]
	if full == 0 || dropped[`{reason="write_error"}`] != 0 || dropped[`{reason="shutdown"}`] != 0 {
		t.Fatalf("dropped %v: want some for a full queue (stdout blocked) and no other", dropped)
	}
	// The first 100 requests ran while the pipe had room (it holds about
	// a hundred records); the last 100 with stdout blocked.
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	before, after := median(latencies[:100]), median(latencies[n-100:])
	if after > 3*before+10*time.Millisecond {
		t.Errorf("median latency %v with stdout blocked, %v before: the request path waited on the log", after, before)
	}
	if worst := slices.Max(latencies); worst > time.Second {
		t.Errorf("a request took %v with stdout blocked", worst)
	}
	if lines := strings.Count(p.tiergate.log.String(), `"msg":"usage records dropped"`); lines != 1 {
		t.Errorf("%d log lines about dropped records, want 1 (rate-limited)", lines)
	}

	// Now read stdout: exactly the records not counted as dropped arrive.
	var got atomic.Int64
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if bytes.HasPrefix(sc.Bytes(), []byte(`{"time":`)) {
				got.Add(1)
			}
		}
	}()
	want := int64(n) - int64(full)
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got.Load() != want {
		t.Errorf("%d records read from stdout, want %d (%d requests − %v dropped)", got.Load(), want, n, full)
	}
	t.Logf("%d requests with stdout unread: %v records dropped for a full queue, %d written; median latency %v before the pipe filled, %v after",
		n, full, got.Load(), before, after)
}
