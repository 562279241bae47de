package e2e

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/envoyrig"
	"github.com/tiergate/tiergate/internal/freeport"
	"github.com/tiergate/tiergate/internal/syncbuf"
)

// bufferLimit is the shipped listeners' per_connection_buffer_limit_bytes.
func (s *stack) bufferLimit(t *testing.T) int {
	t.Helper()
	n := gjson.GetBytes(s.config, `static_resources.listeners.#(name=="llm_ingress").per_connection_buffer_limit_bytes`)
	if !n.Exists() || n.Int() <= 0 {
		t.Fatal("the ingress listener has no per_connection_buffer_limit_bytes")
	}
	return int(n.Int())
}

// bodyOf makes a Responses body of exactly size bytes asking for priority.
func bodyOf(t *testing.T, size int) (body, filtered []byte) {
	t.Helper()
	head, tailStr := `{"model":"gpt-5.4","service_tier":"priority","input":"`, `"}`
	pad := size - len(head) - len(tailStr)
	if pad < 0 {
		t.Fatalf("size %d too small", size)
	}
	filler := bytes.Repeat([]byte("a"), pad)
	body = append(append([]byte(head), filler...), tailStr...)
	filtered = append(append([]byte(`{"model":"gpt-5.4","input":"`), filler...), tailStr...)
	return body, filtered
}

// testBodies: bodies near and above Envoy's buffer limit, and a body
// followed by trailers.
func testBodies(t *testing.T, s *stack) {
	limit := s.bufferLimit(t)

	for _, cl := range s.clients() {
		t.Run("a body of exactly the buffer limit is judged whole and forwarded, over "+cl.name, func(t *testing.T) {
			id := newID(t)
			body, filtered := bodyOf(t, limit)
			got := s.send(t, cl.c, http.MethodPost, withID("/v1/responses", id, ""), nil, body)
			if got.status != http.StatusOK {
				t.Fatalf("status %d: %.200s", got.status, got.body)
			}
			up := s.up.take(t, id)
			if !bytes.Equal(up.body, filtered) {
				t.Errorf("the upstream received %d bytes starting %.80q, want the %d filtered bytes", len(up.body), up.body, len(filtered))
			}
			if cl := up.header.Get("content-length"); cl != strconv.Itoa(len(filtered)) {
				t.Errorf("content-length %q, want %d", cl, len(filtered))
			}
		})
	}

	for _, cl := range s.clients() {
		t.Run("a body above the buffer limit gets Envoy's 413 and is never judged, over "+cl.name, func(t *testing.T) {
			id := newID(t)
			body, _ := bodyOf(t, limit+1)
			got := s.send(t, cl.c, http.MethodPost, withID("/v1/responses", id, ""), nil, body)
			if got.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413: %.200s", got.status, got.body)
			}
			s.up.none(t, id)
			log := s.accessLine(t, id)
			if d := log.Get("details").Str; d != "request_payload_too_large" {
				t.Errorf("Envoy's response details %q, want request_payload_too_large", d)
			}
			// Over HTTP/1.1 Envoy refuses before ext_proc sees any of the
			// body. Over HTTP/2 it hands ext_proc the complete body (which
			// the client's flow-control window let in whole) and answers 413
			// after tiergate's verdict. Either way tiergate never judges a
			// part: a cut body would not parse, and its verdict (400) would
			// be what the client got.
			switch a := log.Get("tiergate.action"); {
			case cl.name == "HTTP/1.1" && a.Exists():
				t.Errorf("tiergate saw the body of a request Envoy refused: %s", log.Raw)
			case a.Exists() && (a.Str != "filter" || log.Get("tiergate.model").Str != "gpt-5.4"):
				t.Errorf("tiergate judged something other than the whole body: %s", log.Raw)
			}
		})
	}

	// Over HTTP/2, Envoy sends a body followed by trailers with
	// end_of_stream false (the trailers end the stream; request_trailer_mode
	// is SKIP, so they never reach tiergate). The body is still the whole
	// body: it must be judged and forwarded, trailers and all. Over
	// HTTP/1.1, Envoy's codec drops chunked trailers (http_protocol_options
	// enable_trailers is off in the shipped bootstraps): the body is judged
	// and forwarded, without them.
	for _, cl := range s.clients() {
		t.Run("a body followed by request trailers is judged and forwarded, over "+cl.name, func(t *testing.T) {
			id := newID(t)
			body := `{"model":"gpt-5.4","service_tier":"priority","input":"hi"}`
			req, err := http.NewRequest(http.MethodPost, s.url+withID("/v1/responses", id, ""), io.NopCloser(strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1
			req.Trailer = http.Header{"X-Checksum": {"e2e-trailer"}}
			resp, err := cl.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", resp.StatusCode, b)
			}
			up := s.up.take(t, id)
			if want := `{"model":"gpt-5.4","input":"hi"}`; string(up.body) != want {
				t.Errorf("the upstream received %s, want %s", up.body, want)
			}
			want := "e2e-trailer"
			if cl.name == "HTTP/1.1" {
				want = ""
			}
			if got := up.trailer.Get("X-Checksum"); got != want {
				t.Errorf("the upstream's trailer %q, want %q", got, want)
			}
			if a := s.accessLine(t, id).Get("tiergate.action").Str; a != "filter" {
				t.Errorf("action %q, want filter", a)
			}
		})
	}
}

// testFailClosed: with tiergate unreachable, Envoy answers 500 and
// forwards nothing (failure_mode_allow: false).
func testFailClosed(t *testing.T, s *stack) {
	o := s.opts
	o.Clusters = map[string]string{}
	for k, v := range s.opts.Clusters {
		o.Clusters[k] = v
	}
	if strings.HasPrefix(o.Clusters["tiergate_extproc"], "unix://") {
		o.Clusters["tiergate_extproc"] = "unix://" + filepath.Join(s.dir, "nobody.sock")
	} else {
		o.Clusters["tiergate_extproc"] = freeport.Addr(t) // nothing listens there
	}
	listen, admin := freeport.Addr(t), freeport.Addr(t)
	o.Admin = admin
	o.Listeners = map[string]string{"llm_ingress": listen}
	if _, ok := s.opts.Listeners["pod_health"]; ok {
		o.Listeners["pod_health"] = freeport.Addr(t)
	}
	cfg, err := envoyrig.Rewrite(s.shipped, o)
	if err != nil {
		t.Fatal(err)
	}
	accessLog, envoyLog := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	startEnvoy(t, "http://"+admin, writeFile(t, t.TempDir(), "broken.json", cfg), accessLog, envoyLog)
	broken := *s
	broken.url = "https://" + listen
	for _, cl := range s.clients() {
		t.Run("over "+cl.name, func(t *testing.T) {
			id := newID(t)
			got := broken.send(t, cl.c, http.MethodPost, withID("/v1/responses", id, ""), nil, []byte(`{"model":"gpt-5.4","service_tier":"priority"}`))
			if got.status != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500: %s", got.status, got.body)
			}
			if len(got.body) != 0 || got.header.Get("server") != "envoy" {
				t.Errorf("Envoy's 500: headers %v, body %q; want an empty body from server envoy", got.header, got.body)
			}
			s.up.none(t, id)
		})
	}
}
