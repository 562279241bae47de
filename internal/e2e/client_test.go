package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

var lastID atomic.Int64

// newID names one test request; it rides in the e2e query parameter,
// which tiergate ignores (endpoints are matched by path) and the fake
// upstream files requests by.
func newID(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("r%d", lastID.Add(1))
}

// withID adds the e2e parameter (and reply, when given) to path.
func withID(path, id, replyMode string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	path += sep + "e2e=" + id
	if replyMode != "" {
		path += "&reply=" + replyMode
	}
	return path
}

// answer is what the client received from Envoy.
type answer struct {
	status int
	proto  string
	header http.Header
	body   []byte
}

// send makes one request through Envoy.
func (s *stack) send(t *testing.T, c *http.Client, method, path string, header map[string]string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, proto: resp.Proto, header: resp.Header, body: b}
}

// clients are the two protocols every policy case runs over.
func (s *stack) clients() []struct {
	name string
	c    *http.Client
} {
	return []struct {
		name string
		c    *http.Client
	}{{"HTTP/1.1", s.h1}, {"HTTP/2", s.h2}}
}

// accessLine returns Envoy's access log entry for the request whose path
// carries id, waiting for it (Envoy writes it when the stream ends).
func (s *stack) accessLine(t *testing.T, id string) gjson.Result {
	t.Helper()
	return waitForLine(t, "access log line for "+id, s.accessLog.Lines, func(r gjson.Result) bool {
		return strings.Contains(r.Get("path").Str, "e2e="+id+"&") || strings.HasSuffix(r.Get("path").Str, "e2e="+id)
	})
}

// usageRecords returns tiergate's usage records for requestID, waiting
// for the first; a second one would be a double count.
func (s *stack) usageRecord(t *testing.T, requestID string) gjson.Result {
	t.Helper()
	r := waitForLine(t, "usage record for request "+requestID, s.usageLines, func(r gjson.Result) bool {
		return r.Get("request_id").Str == requestID
	})
	// A second record written late would still be a double count.
	time.Sleep(50 * time.Millisecond)
	if n := s.countUsage(requestID); n != 1 {
		t.Fatalf("%d usage records for request %s, want one", n, requestID)
	}
	return r
}

// usageLines returns the lines of tiergate's usage log as it stands.
func (s *stack) usageLines() []string {
	b, _ := os.ReadFile(s.usageFile)
	return strings.Split(string(b), "\n")
}

// waitForLine waits up to 10 s for the JSON line, among those lines reads
// afresh each time, that match accepts, and fails the test if there are
// two: a request or turn has one access log line and one usage record.
// what names the line in failures.
func waitForLine(t *testing.T, what string, lines func() []string, match func(gjson.Result) bool) gjson.Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []gjson.Result
		read := lines()
		for _, l := range read {
			if !json.Valid([]byte(l)) {
				continue
			}
			if r := gjson.Parse(l); match(r) {
				found = append(found, r)
			}
		}
		if len(found) > 1 {
			t.Fatalf("%s: %d found, want one", what, len(found))
		}
		if len(found) == 1 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", what, tail(strings.Join(read, "\n"), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *stack) countUsage(requestID string) int {
	b, err := os.ReadFile(s.usageFile)
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range bytes.Split(b, []byte("\n")) {
		if gjson.GetBytes(l, "request_id").Str == requestID {
			n++
		}
	}
	return n
}

// extprocStat reads one of the ext_proc filter's counters from Envoy's
// admin API.
func (s *stack) extprocStat(t *testing.T, name string) int64 {
	t.Helper()
	resp, err := adminHTTP.Get(s.adminURL + "/stats?format=json&filter=" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var total int64
	found := false
	for _, st := range gjson.GetBytes(b, "stats").Array() {
		if strings.HasSuffix(st.Get("name").Str, "ext_proc."+name) {
			total += st.Get("value").Int()
			found = true
		}
	}
	if !found {
		t.Fatalf("Envoy has no ext_proc.%s counter: %s", name, b)
	}
	return total
}
