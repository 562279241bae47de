package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// mixedLoad drives steady mixed traffic through Envoy: HTTP requests of
// every policed kind (JSON and SSE answers, passes, filters, forced tiers,
// blocks) over HTTP/1.1 and HTTP/2, and WebSocket sessions on
// /v1/responses and /v1/realtime, each playing turns and then closing.
// Every answer is checked; what did not go as it should is counted in
// failures, with the first few kept in problems.
type mixedLoad struct {
	s *stack
	// httpRate is the HTTP requests per second over all workers; wsTurnGap
	// is the pause between two turns of one WebSocket session.
	httpRate  int
	wsWorkers int
	wsTurnGap time.Duration
	// expect, when set, is asked before each check which answer a case
	// must get now (the reload test changes it under way); nil keeps the
	// cases' own.
	expect func(c loadCase) loadCase

	requests, wsTurns, failures atomic.Int64
	mu                          sync.Mutex
	problems                    []string
}

// httpWorkers is how many goroutines send mixedLoad's HTTP requests.
const httpWorkers = 8

// loadCase is one kind of HTTP request and the answer it must get.
type loadCase struct {
	path, reply string
	header      map[string]string
	body        string
	status      int
}

var loadCases = []loadCase{
	{path: "/v1/responses", body: `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`, status: http.StatusOK},
	{path: "/v1/responses", reply: "sse", body: `{"model":"gpt-5.4","stream":true,"service_tier":"flex","input":"hi"}`, status: http.StatusOK},
	{path: "/v1/chat/completions", reply: "sse", body: `{"model":"gpt-5.4","stream":true,"messages":[]}`, status: http.StatusOK},
	{path: "/v1/chat/completions", header: map[string]string{identityHeader: "flex-group"}, body: `{"model":"gpt-5.4","messages":[]}`, status: http.StatusOK},
	{path: "/v1/messages", reply: "sse", header: map[string]string{"anthropic-beta": fastModeBeta}, body: `{"model":"claude-sonnet-4-5","speed":"fast","stream":true,"max_tokens":5,"messages":[]}`, status: http.StatusOK},
	{path: "/v1/responses", body: `{"model":"gpt-5.5","service_tier":"priority","input":"hi"}`, status: http.StatusForbidden},
}

func (l *mixedLoad) fail(format string, args ...any) {
	l.failures.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 10 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// run drives the load until ctx ends and returns once every worker has
// stopped (WebSocket sessions closed).
func (l *mixedLoad) run(ctx context.Context) {
	var wg sync.WaitGroup
	gap := time.Duration(int64(time.Second) * httpWorkers / int64(max(l.httpRate, 1)))
	for w := range httpWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(gap)
			defer tick.Stop()
			for i := w; ; i += httpWorkers {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				l.oneRequest(ctx, loadCases[i%len(loadCases)], i%2 == 0)
			}
		}()
	}
	for w := range l.wsWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				l.oneSession(ctx, w%2 == 1)
			}
		}()
	}
	wg.Wait()
}

func (l *mixedLoad) oneRequest(ctx context.Context, c loadCase, h2 bool) {
	if l.expect != nil {
		c = l.expect(c)
	}
	client := l.s.h1
	if h2 {
		client = l.s.h2
	}
	path := withID(c.path, loadID, c.reply)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.s.url+path, strings.NewReader(c.body))
	if err != nil {
		l.fail("new request: %v", err)
		return
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.fail("%s: %v", c.path, err)
		}
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	l.requests.Add(1)
	switch {
	case err != nil && ctx.Err() == nil:
		l.fail("%s: reading the answer: %v", c.path, err)
	case err != nil:
	case resp.StatusCode != c.status:
		l.fail("%s %s: status %d, want %d: %.200s", c.path, c.body, resp.StatusCode, c.status, body)
	case c.status == http.StatusOK && len(body) == 0:
		l.fail("%s: an empty answer", c.path)
	}
}

// oneSession plays a few turns on one WebSocket session and closes it.
func (l *mixedLoad) oneSession(ctx context.Context, realtime bool) {
	path := "/v1/responses"
	if realtime {
		path = "/v1/realtime?model=gpt-realtime"
	}
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := wsDialURL(dialCtx, l.s, path, http.Header{"Authorization": {"Bearer " + keyPlain}})
	if err != nil {
		if ctx.Err() == nil {
			l.fail("ws dial %s: %v", path, err)
		}
		return
	}
	defer c.CloseNow()
	if realtime {
		if _, _, err := c.Read(dialCtx); err != nil { // session.created
			if ctx.Err() == nil {
				l.fail("ws %s: session.created: %v", path, err)
			}
			return
		}
	}
	frame := []byte(`{"type":"response.create","model":"gpt-5.4","service_tier":"priority","input":"hi"}`)
	last := "response.completed"
	if realtime {
		frame = []byte(`{"type":"response.create","response":{"service_tier":"priority"}}`)
		last = "response.done"
	}
	for range 10 {
		select {
		case <-ctx.Done():
			_ = c.Close(websocket.StatusNormalClosure, "")
			return
		case <-time.After(l.wsTurnGap):
		}
		turnCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.Write(turnCtx, websocket.MessageText, frame)
		for err == nil {
			var data []byte
			if _, data, err = c.Read(turnCtx); err == nil && gjson.GetBytes(data, "type").Str == last {
				break
			}
		}
		cancel()
		if err != nil {
			l.fail("ws %s: turn: %v", path, err)
			return
		}
		l.wsTurns.Add(1)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}

// wsDialURL opens a WebSocket through Envoy (wss, HTTP/1.1 upgrade).
func wsDialURL(ctx context.Context, s *stack, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.certs.Pool},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	return websocket.Dial(ctx, "wss"+strings.TrimPrefix(s.url, "https")+path,
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: header})
}

// report says what the load did, for the test log.
func (l *mixedLoad) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d HTTP requests, %d WebSocket turns, %d failures %q",
		l.requests.Load(), l.wsTurns.Load(), l.failures.Load(), l.problems)
}
