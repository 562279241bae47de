package extproc

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tiergate/tiergate/policy"
	"github.com/tiergate/tiergate/usage"
)

// TestJSONResponseReadsTheSameHoweverItIsCut: a JSON response whole in one
// chunk is read where it lies, and one cut into chunks is gathered first;
// both give the same record and the same usage metadata, and reading in
// place changes nothing the client receives. A response larger than
// --max-usage-bytes in one chunk is read pruned, to the same usage.
func TestJSONResponseReadsTheSameHoweverItIsCut(t *testing.T) {
	t.Parallel()
	rh, rb := responseMessages()
	whole := rb.GetResponseBody().GetBody()
	chunks := func(cuts ...int) [][]byte {
		var out [][]byte
		prev := 0
		for _, c := range append(cuts, len(whole)) {
			out = append(out, whole[prev:c])
			prev = c
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		chunks   [][]byte
		maxUsage int
		read     bool // whether the usage is read
	}{
		{"whole in one chunk", [][]byte{whole}, 0, true},
		{"in three chunks", chunks(10, 200), 0, true},
		{"whole, then an empty last chunk", [][]byte{whole, {}}, 0, true},
		{"one chunk over --max-usage-bytes", [][]byte{whole}, len(whole) - 1, true},
		{"chunks over --max-usage-bytes", chunks(10, 200), 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var records bytes.Buffer
			srv := newTestServer(t, prometheus.NewRegistry(), Options{
				Store: policy.NewStore(policy.Default()), Usage: usage.NewRecordWriter(&records), MaxUsageBytes: tc.maxUsage,
			})
			h, body := benchMessages(benchBody("flex"))
			x := &exchange{srv: srv}
			for _, m := range []*extprocv3.ProcessingRequest{h, body, rh} {
				if _, _, err := x.handle(m); err != nil {
					t.Fatal(err)
				}
			}
			var last *extprocv3.ProcessingResponse
			for i, c := range tc.chunks {
				sent := slices.Clone(c)
				resp, _, err := x.handle(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocv3.HttpBody{Body: sent, EndOfStream: i == len(tc.chunks)-1}}})
				if err != nil {
					t.Fatal(err)
				}
				if resp.GetResponseBody().GetResponse().GetBodyMutation() != nil || !bytes.Equal(sent, c) {
					t.Fatalf("chunk %d: the response was changed", i)
				}
				last = resp
			}
			x.close()
			if err := srv.opts.Usage.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(records.String(), `"input_tokens":8438`); got != tc.read {
				t.Errorf("record has the input tokens: %v, want %v:\n%s", got, tc.read, records.String())
			}
			got := roundTrip(t, last).GetDynamicMetadata().GetFields()["tiergate"].GetStructValue().GetFields()["input_tokens"].GetNumberValue()
			if want := map[bool]float64{true: 8438, false: 0}[tc.read]; got != want {
				t.Errorf("metadata input_tokens %v, want %v", got, want)
			}
		})
	}
}
