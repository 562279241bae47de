package main

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestAnswerCheckerDecodesOnlyWhatChanged: a byte-identical repeat of an
// answer that passed is accepted without decoding; any other answer is
// decoded and checked in full, so a bad answer is never let through; with
// decodeAll every answer is decoded.
func TestAnswerCheckerDecodesOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	wire := func(m *extprocv3.ProcessingResponse) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good, otherGood := wire(nullRequestBody), wire(echoBody([]byte(`{}`)))
	bad := wire(nullRequestHeaders)
	type step struct {
		raw     []byte
		ok      bool
		decoded bool // the full check ran
	}
	for _, tc := range []struct {
		name      string
		expect    expectation
		decodeAll bool
		steps     []step
	}{
		{"a repeat of a passed answer is not decoded again", expectContinue, false, []step{
			{good, true, true}, {good, true, false}, {good, true, false},
		}},
		{"a different answer after a passed one is decoded and fails", expectContinue, false, []step{
			{good, true, true}, {bad, false, true}, {good, true, false},
		}},
		{"a failed answer is never remembered", expectContinue, false, []step{
			{bad, false, true}, {bad, false, true}, {good, true, true},
		}},
		{"a new passing answer replaces the remembered one", expectRewrite, false, []step{
			{otherGood, true, true}, {wire(echoBody([]byte(`{"a":1}`))), true, true}, {otherGood, true, true},
		}},
		{"bytes that do not decode fail", expectContinue, false, []step{
			{good, true, true}, {[]byte{0xff, 0xff, 0xff}, false, false},
		}},
		{"decodeAll decodes every answer", expectContinue, true, []step{
			{good, true, true}, {good, true, true}, {bad, false, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			decoded := false
			c := answerChecker{decodeAll: tc.decodeAll, check: func(m *extprocv3.ProcessingResponse) error {
				decoded = true
				return tc.expect.checkBodyAnswer(m)
			}}
			for i, s := range tc.steps {
				decoded = false
				err := c.verify(s.raw)
				if (err == nil) != s.ok || decoded != s.decoded {
					t.Errorf("step %d: err %v, decoded %v; want ok=%v, decoded=%v", i, err, decoded, s.ok, s.decoded)
				}
			}
		})
	}
}

// TestRawCodec: a *rawAnswer gets the message's bytes joined from every
// buffer gRPC received them in, reusing its storage; any other message is
// left to the proto codec.
func TestRawCodec(t *testing.T) {
	t.Parallel()
	c := newRawCodec()
	want, err := proto.Marshal(echoBody([]byte(`{"model":"gpt-5.5"}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		split int
	}{{"one buffer", len(want)}, {"split in two", 7}, {"split in bytes", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			var data mem.BufferSlice
			for rest := want; len(rest) > 0; {
				n := min(tc.split, len(rest))
				data = append(data, mem.SliceBuffer(rest[:n]))
				rest = rest[n:]
			}
			r := rawAnswer{b: make([]byte, 3, 4096)}
			before := &r.b[:1][0]
			if err := c.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			if string(r.b) != string(want) || &r.b[0] != before {
				t.Errorf("got %d bytes (storage reused: %v), want the %d sent", len(r.b), &r.b[0] == before, len(want))
			}
			var m extprocv3.ProcessingResponse
			if err := c.Unmarshal(data, &m); err != nil || m.GetRequestBody() == nil {
				t.Errorf("a message other than rawAnswer was not decoded: %v %v", err, &m)
			}
		})
	}
}
