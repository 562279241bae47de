package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestHTTPUpstreamCountsWhatStillAskedForPriority: the stand-in answers
// every request with usage, and /counts tells the requests that arrived
// asking for priority from those that did not (bench-envoy.sh's check that
// tiergate filtered and the null servers did not).
func TestHTTPUpstreamCountsWhatStillAskedForPriority(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&httpUpstream{})
	t.Cleanup(srv.Close)
	body, err := responsesBody(2048)
	if err != nil {
		t.Fatal(err)
	}
	filtered := bytes.Replace(body, []byte(`"service_tier":"priority",`), nil, 1)
	for _, b := range [][]byte{body, filtered, body} {
		resp, err := http.Post(srv.URL+requestPath, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !gjson.GetBytes(got, "usage.output_tokens").Exists() {
			t.Fatalf("answer %d %s; want 200 with usage", resp.StatusCode, got)
		}
	}
	resp, err := http.Get(srv.URL + "/counts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c upstreamCounts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c != (upstreamCounts{Requests: 3, Priority: 2}) {
		t.Errorf("counts %+v, want 3 requests of which 2 asked for priority", c)
	}
}

func TestBodyCommandPrintsTheDriversBody(t *testing.T) {
	t.Parallel()
	var out, errs strings.Builder
	if err := run(context.Background(), []string{"body", "--size", "4096"}, &out, &errs); err != nil {
		t.Fatalf("body: %v (%s)", err, errs.String())
	}
	want, err := responsesBody(4096)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("printed %d bytes, not the driver's %d-byte body", out.Len(), len(want))
	}
}
