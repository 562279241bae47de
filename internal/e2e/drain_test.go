package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/syncbuf"
	"github.com/tiergate/tiergate/internal/testcert"
	"github.com/tiergate/tiergate/internal/wsfake"
)

// The pod's shutdown, scaled down: the manifests give Envoy --drain-time-s
// 15, tiergate --shutdown-grace 90s and the hook --timeout 100s; here 2 s,
// 3 s and 15 s. Streams last longer than the drain time, the scaled
// stand-in for the 15 s preStop sleep that used to end in Envoy's SIGTERM.
const (
	drainEnvoyDrainTime = 2 * time.Second
	drainTiergateGrace  = 3 * time.Second
	drainHookTimeout    = 15 * time.Second
	drainStreamLength   = 5 * time.Second
)

// slowUpstream is the provider for the drain test: /v1/responses streams
// an SSE response over stream=<ms> milliseconds (a delta every 250 ms),
// with usage at its end; without stream it answers JSON at once.
func slowUpstream(t *testing.T, certs testcert.Set) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ms, _ := strconv.Atoi(r.URL.Query().Get("stream"))
		if ms == 0 {
			w.Header().Set("content-type", "application/json")
			_, _ = io.WriteString(w, responsesJSON)
			return
		}
		w.Header().Set("content-type", "text/event-stream")
		f := w.(http.Flusher)
		send := func(typ, data string) {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, data)
			f.Flush()
		}
		send("response.created", `{"type":"response.created","response":{"id":"resp_slow","status":"in_progress","model":"gpt-5.4"}}`)
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		for time.Now().Before(end) {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			send("response.output_text.delta", `{"type":"response.output_text.delta","delta":"tick"}`)
		}
		send("response.completed", `{"type":"response.completed","response":{"id":"resp_slow","status":"completed","model":"gpt-5.4","usage":{"input_tokens":7,"output_tokens":40,"total_tokens":47}}}`)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{certs.Cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// slowWSUpstream answers each response.create after metadata.delay_ms.
func slowWSUpstream(t *testing.T) string {
	t.Helper()
	srv := wsfake.Serve(t, func(ctx context.Context, c *websocket.Conn) {
		for n := 1; ; n++ {
			_, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if gjson.GetBytes(data, "type").Str != "response.create" {
				continue
			}
			id := fmt.Sprintf("resp_ws%d", n)
			_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.created","response":{"id":"`+id+`","status":"in_progress","model":"gpt-5.4"}}`))
			select {
			case <-time.After(time.Duration(gjson.GetBytes(data, "metadata.delay_ms").Int()) * time.Millisecond):
			case <-ctx.Done():
				return
			}
			_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.output_text.delta","delta":"hi"}`))
			_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.completed","response":{"id":"`+id+`","status":"completed","model":"gpt-5.4","usage":{"input_tokens":5,"output_tokens":3,"total_tokens":8}}}`))
		}
	})
	return srv.Listener.Addr().String()
}

// TestDrainSequence runs the pod's shutdown through real Envoy on the pod's
// bootstrap (k8s/base/envoy.yaml): Envoy's preStop hook, `tiergate drain`,
// then SIGTERM to Envoy, then SIGTERM to tiergate, the order the kubelet
// keeps for a native sidecar. Streams that outlast the drain time finish,
// a request on a new connection during the drain is served, a WebSocket
// turn that ends within tiergate's grace completes, and the sessions still
// open when it ends are closed with 1001; every request and turn has its
// usage record.
func TestDrainSequence(t *testing.T) {
	t.Parallel()
	certs := testcert.NewFor(t, "api.openai.com", "api.anthropic.com")
	p := startPod(t, podOptions{
		certs: certs, upstream: slowUpstream(t, certs), wsUpstream: slowWSUpstream(t),
		tiergateArgs: []string{"--shutdown-grace", drainTiergateGrace.String()},
		envoyArgs:    []string{"--drain-time-s", strconv.Itoa(int(drainEnvoyDrainTime / time.Second))},
	})
	listen, admin, tgAdmin, usageFile, envoy, tg := p.listen, p.envoyAdmin, p.tiergateAdmin, p.usageFile, p.envoy, p.tiergate
	tlsConf := &tls.Config{RootCAs: certs.Pool}
	newClient := func(h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	base := "https://" + listen

	// The streams: one over HTTP/2, one over HTTP/1.1, each longer than
	// the drain time. Each reports when its first event has arrived.
	type streamResult struct {
		name       string
		status     int
		body       string
		err        error
		start, end time.Time
	}
	var wg sync.WaitGroup
	results := make(chan streamResult, 3)
	started := make(chan struct{}, 2)
	stream := func(name string, c *http.Client) {
		defer wg.Done()
		res := streamResult{name: name, start: time.Now()}
		defer func() { res.end = time.Now(); results <- res }()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/responses?stream="+strconv.Itoa(int(drainStreamLength/time.Millisecond)),
			strings.NewReader(`{"model":"gpt-5.4","stream":true,"service_tier":"priority","input":"hi"}`))
		resp, err := c.Do(req)
		if err != nil {
			res.err = err
			started <- struct{}{}
			return
		}
		defer resp.Body.Close()
		res.status = resp.StatusCode
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		started <- struct{}{}
		if err != nil {
			res.err = err
			return
		}
		rest, err := io.ReadAll(br)
		res.body, res.err = first+string(rest), err
	}
	wg.Add(2)
	go stream("a stream over HTTP/2", newClient(true))
	go stream("a stream over HTTP/1.1", newClient(false))

	// The WebSocket sessions: a turn that ends within the grace, and one
	// that would not (its session is closed with 1001 at the grace's end).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialWS := func() *websocket.Conn {
		tr := &http.Transport{TLSClientConfig: tlsConf.Clone(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		t.Cleanup(tr.CloseIdleConnections)
		c, _, err := websocket.Dial(ctx, "wss://"+listen+"/v1/responses", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	shortTurn, longTurn := dialWS(), dialWS()
	for c, delay := range map[*websocket.Conn]time.Duration{shortTurn: time.Second, longTurn: 20 * time.Second} {
		frame := fmt.Sprintf(`{"type":"response.create","model":"gpt-5.4","metadata":{"delay_ms":"%d"},"input":"hi"}`, delay/time.Millisecond)
		if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		if ev := readEvent(t, ctx, c); ev.Get("type").Str != "response.created" {
			t.Fatalf("first event %s", ev.Raw)
		}
	}
	for range 2 {
		<-started
	}

	// The hook, as the pod runs it.
	hookStart := time.Now()
	hookOut := &syncbuf.Buffer{}
	hook := exec.Command(tiergateBin, "drain", "--envoy-admin", "http://"+admin, "--tiergate-admin", "http://"+tgAdmin,
		"--timeout", drainHookTimeout.String(), "--poll", "100ms")
	hook.Stdout, hook.Stderr = hookOut, hookOut
	if err := hook.Start(); err != nil {
		t.Fatal(err)
	}
	hookDone := make(chan error, 1)
	go func() { hookDone <- hook.Wait() }()

	// During the drain time Envoy still accepts: a request on a new
	// connection (the endpoint is still in some client's list) is served.
	time.Sleep(drainEnvoyDrainTime / 4)
	late, err := newClient(false).Post(base+"/v1/responses", "application/json", strings.NewReader(`{"model":"gpt-5.4","input":"late"}`))
	if err != nil {
		t.Fatalf("a request on a new connection during the drain time failed: %v", err)
	}
	lateBody, _ := io.ReadAll(late.Body)
	late.Body.Close()
	if late.StatusCode != http.StatusOK || string(lateBody) != responsesJSON {
		t.Errorf("a request during the drain time got %d %s", late.StatusCode, lateBody)
	}
	// tiergate is draining: a new WebSocket upgrade is refused with 503.
	if _, resp, err := websocket.Dial(ctx, "wss://"+listen+"/v1/responses", &websocket.DialOptions{HTTPClient: newClient(false)}); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new WebSocket session during the drain: %v, %v; want 503", err, resp)
	}

	// The short turn completes; then its session, like the long one's, is
	// closed with 1001 when tiergate's grace ends.
	for _, want := range []string{"response.output_text.delta", "response.completed"} {
		if ev := readEvent(t, ctx, shortTurn); ev.Get("type").Str != want {
			t.Fatalf("the short turn: event %s, want %s", ev.Raw, want)
		}
	}
	for name, c := range map[string]*websocket.Conn{"the short turn's session": shortTurn, "the long turn's session": longTurn} {
		_, _, err := c.Read(ctx)
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("%s ended with %v (code %d), want 1001", name, err, code)
		}
		if d := time.Since(hookStart); d > drainTiergateGrace+time.Second {
			t.Errorf("%s closed %v after the hook started, past the %v grace", name, d, drainTiergateGrace)
		}
	}

	var hookErr error
	select {
	case hookErr = <-hookDone:
	case <-time.After(drainHookTimeout + 5*time.Second):
		t.Fatal("tiergate drain did not return")
	}
	hookTook := time.Since(hookStart)
	if hookErr != nil {
		t.Fatalf("tiergate drain: %v\n%s", hookErr, hookOut.String())
	}
	if !strings.Contains(hookOut.String(), `"msg":"drained"`) {
		t.Errorf("tiergate drain did not report drained:\n%s", hookOut.String())
	}
	// The kubelet's SIGTERM after the hook: Envoy exits at once, and has
	// nothing left to cut.
	envoy.stop(t, "envoy", syscall.SIGTERM, 10*time.Second)
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, "event: response.completed") {
			t.Errorf("%s failed: status %d, err %v, body ends %q", r.name, r.status, r.err, tail(r.body, 200))
		}
		if d := r.end.Sub(r.start); d < drainStreamLength || r.end.Before(hookStart.Add(drainEnvoyDrainTime)) {
			t.Errorf("%s lasted %v and ended %v into the drain: it did not outlast the drain time", r.name, d, r.end.Sub(hookStart))
		}
	}
	if hookTook < drainStreamLength-time.Second {
		t.Errorf("the hook returned after %v, before the streams ended", hookTook)
	}
	t.Logf("the hook returned after %v (drain time %v, streams of %v)", hookTook.Round(time.Millisecond), drainEnvoyDrainTime, drainStreamLength)

	// Then tiergate, the native sidecar: it exits cleanly and has written
	// a record for every request and turn.
	tg.stop(t, "tiergate", syscall.SIGTERM, 10*time.Second)
	if tg.err != nil {
		t.Errorf("tiergate exited with %v", tg.err)
	}
	recs := readRecords(t, usageFile)
	got := map[string]int{}
	for _, r := range recs {
		got[r.Get("endpoint").Str+" "+r.Get("status").Str]++
	}
	want := map[string]int{"responses completed": 3, "responses_ws completed": 1, "responses_ws client_closed": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("usage records by endpoint and status: %v, want %v", got, want)
	}
	for _, r := range recs {
		if r.Get("endpoint").Str == "responses_ws" && r.Get("turn").Int() != 1 {
			t.Errorf("a turn's record has turn %s, want 1: %s", r.Get("turn").Raw, r.Raw)
		}
	}
}

// readRecords reads every usage record in file.
func readRecords(t *testing.T, file string) []gjson.Result {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []gjson.Result
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			continue
		}
		if !gjson.Valid(l) {
			t.Fatalf("a usage line is not JSON: %q", l)
		}
		out = append(out, gjson.Parse(l))
	}
	return out
}
