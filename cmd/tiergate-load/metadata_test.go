package main

import (
	"context"
	"slices"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
)

// TestNullMetadataHasTiergatesShape: with --metadata, the null server's
// answer to the body and its answer to the response's last chunk carry
// metadata in namespace tiergate with exactly the fields tiergate sends in
// the same answers for the same request (the driver's 2 KiB body asking for
// priority, the stand-in provider's response); no other answer carries any.
// Without --metadata, none does.
func TestNullMetadataHasTiergatesShape(t *testing.T) {
	t.Parallel()
	body, err := responsesBody(2048)
	if err != nil {
		t.Fatal(err)
	}
	tgAddr, _ := startTiergate(t)
	want := metadataKeysPerAnswer(t, tgAddr, body)
	if len(want[1]) == 0 || len(want[3]) == 0 {
		t.Fatalf("tiergate's own answers carry no metadata to compare with: %v", want)
	}
	for _, tc := range []struct {
		name  string
		flags []string
		want  [4][]string
	}{
		{"with --metadata, tiergate's fields in tiergate's answers", []string{"--echo", "--metadata"}, want},
		{"with --metadata and no echo, the same", []string{"--metadata"}, want},
		{"without --metadata, none", []string{"--echo"}, [4][]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr, _ := startNull(t, tc.flags...)
			if got := metadataKeysPerAnswer(t, addr, body); !equalKeys(got, tc.want) {
				t.Errorf("metadata fields per answer (request headers, body, response headers, body):\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// metadataKeysPerAnswer sends one whole request (both halves) to the
// ext_proc server at addr and returns, per answer, the sorted fields of its
// tiergate metadata.
func metadataKeysPerAnswer(t *testing.T, addr string, body []byte) [4][]string {
	t.Helper()
	conn, err := dial(addr, defaultMaxMsg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := newRequestMessages(0, "api.openai.com", body)
	var keys [4][]string
	for i, req := range []*extprocv3.ProcessingRequest{m.headers, m.body, m.respHeaders, m.respBody} {
		if err := stream.Send(req); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		// Decode as Envoy does: the answer's wire form, read as a whole.
		wire, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var decoded extprocv3.ProcessingResponse
		if err := proto.Unmarshal(wire, &decoded); err != nil {
			t.Fatal(err)
		}
		for ns, v := range decoded.GetDynamicMetadata().GetFields() {
			if ns != "tiergate" {
				t.Errorf("answer %d: metadata namespace %q", i, ns)
			}
			for k := range v.GetStructValue().GetFields() {
				keys[i] = append(keys[i], k)
			}
		}
		slices.Sort(keys[i])
	}
	_ = stream.CloseSend()
	return keys
}

func equalKeys(a, b [4][]string) bool {
	for i := range a {
		if !slices.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
