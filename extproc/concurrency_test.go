package extproc

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentAnswersKeepTheirOwnBodies: body answers and their buffers
// are recycled from one request to the next once sent. Many streams at
// once, rewritten and passed bodies of different sizes interleaved, must
// each reach the upstream with their own body, a content-length that
// matches it, and their own decision in the metadata. Run with -race,
// this also catches an answer recycled while gRPC still reads it.
func TestConcurrentAnswersKeepTheirOwnBodies(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "")
	const workers, perWorker = 12, 10
	type sent struct {
		tier    string
		padding int
	}
	want := map[string]sent{} // by model, unique per request
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				model := fmt.Sprintf("gpt-test-%d-%d", w, i)
				s := sent{tier: "priority", padding: (w*perWorker + i) * 97 % 5000}
				if i%3 == 2 {
					s.tier = "flex" // passed: no rewrite
				}
				mu.Lock()
				want[model] = s
				mu.Unlock()
				body := fmt.Sprintf(`{"model":%q,"service_tier":%q,"input":%q}`, model, s.tier, strings.Repeat("x", s.padding))
				resp, out := h.do("POST", "/v1/responses", nil, []byte(body))
				if resp.StatusCode != 200 {
					t.Errorf("%s: status %d: %s", model, resp.StatusCode, out)
				}
			}
		}()
	}
	wg.Wait()

	got := h.upstream()
	if len(got) != workers*perWorker {
		t.Fatalf("upstream got %d requests, want %d", len(got), workers*perWorker)
	}
	for _, r := range got {
		var b struct {
			Model       string
			ServiceTier *string `json:"service_tier"`
			Input       string
		}
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Errorf("upstream body is not JSON (%v): %.200s", err, r.body)
			continue
		}
		s, ok := want[b.Model]
		if !ok {
			t.Errorf("upstream body of a request never sent: %.200s", r.body)
			continue
		}
		if cl := r.header.Get("content-length"); cl != strconv.Itoa(len(r.body)) {
			t.Errorf("%s: content-length %s for a %d-byte body", b.Model, cl, len(r.body))
		}
		switch {
		case len(b.Input) != s.padding:
			t.Errorf("%s: input of %d bytes arrived as %d", b.Model, s.padding, len(b.Input))
		case s.tier == "priority" && b.ServiceTier != nil:
			t.Errorf("%s: priority was not filtered: %.200s", b.Model, r.body)
		case s.tier == "flex" && (b.ServiceTier == nil || *b.ServiceTier != "flex"):
			t.Errorf("%s: a passed body was changed: %.200s", b.Model, r.body)
		}
	}

	actions := map[string]string{}
	for _, md := range h.proxy.Metadata() {
		ns := md.Fields["tiergate"].GetStructValue()
		if a := ns.Fields["action"].GetStringValue(); a != "" {
			model := ns.Fields["model"].GetStringValue()
			if prev, dup := actions[model]; dup {
				t.Errorf("%s: two decisions in the metadata (%s, %s)", model, prev, a)
			}
			actions[model] = a
		}
	}
	for model, s := range want {
		wantAction := "filter"
		if s.tier == "flex" {
			wantAction = "pass"
		}
		if actions[model] != wantAction {
			t.Errorf("%s: metadata action %q, want %q", model, actions[model], wantAction)
		}
	}
}
