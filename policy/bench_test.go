package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// responsesBody builds a Responses API request of about size bytes: a
// realistic Codex-like shape whose bulk is conversation text.
func responsesBody(size int, tier string) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"gpt-5.5","instructions":"You are a coding agent. Follow the repository's conventions.",`)
	b.WriteString(`"tools":[{"type":"function","name":"shell","description":"Run a command","parameters":{"type":"object","properties":{"command":{"type":"array","items":{"type":"string"}}},"required":["command"]}}],`)
	b.WriteString(`"tool_choice":"auto","parallel_tool_calls":true,"reasoning":{"effort":"high"},"store":false,"stream":true,`)
	b.WriteString(`"include":["reasoning.encrypted_content"],"prompt_cache_key":"0b7e6c1e-3f4a-4c8e-9a57-2d2f1c9e8a11",`)
	if tier != "" {
		b.WriteString(`"service_tier":"` + tier + `",`)
	}
	b.WriteString(`"input":[`)
	line := `Please refactor the function so that it handles the \"empty\" case, and explain why.\n`
	for i := 0; b.Len() < size-200; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"message","role":"user","content":[{"type":"input_text","text":"`)
		for j := 0; j < 20 && b.Len() < size-120; j++ {
			b.WriteString(line)
		}
		b.WriteString(`"}]}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

var benchSizes = []struct {
	name string
	size int
}{{"2KiB", 2 << 10}, {"1MiB", 1 << 20}}

// BenchmarkValidBytes is the floor: one validating pass with gjson.
func BenchmarkValidBytes(b *testing.B) {
	for _, sz := range benchSizes {
		body := responsesBody(sz.size, "priority")
		b.Run(sz.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if !gjson.ValidBytes(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkApply is decision plus rewrite under the default policy: filter
// rewrites a body that asks for priority into a recycled buffer (as the
// ext_proc server does), filter-fresh-buffer into a new one each time; pass
// leaves a flex body untouched.
func BenchmarkApply(b *testing.B) {
	p := Default()
	for _, c := range []struct {
		action, tier string
		recycle      bool
	}{{"filter", "priority", true}, {"filter-fresh-buffer", "priority", false}, {"pass", "flex", true}} {
		for _, sz := range benchSizes {
			body := responsesBody(sz.size, c.tier)
			b.Run(c.action+"/"+sz.name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				// The caller recycles its output buffer, as the ext_proc
				// server does once a rewritten body has been sent.
				req := &Request{Endpoint: EndpointResponses}
				for b.Loop() {
					res := p.apply(req, body)
					if res.Refusal.Status() != 0 {
						b.Fatal(res.Message)
					}
					if res.BodyChanged && c.recycle {
						req.Buf = res.Body
					}
				}
			})
		}
	}
}

func TestPassPathAllocatesLittleAndNeverCopies(t *testing.T) {
	p := Default()
	for _, sz := range benchSizes {
		body := responsesBody(sz.size, "flex")
		req := &Request{Endpoint: EndpointResponses}
		res := p.apply(req, body)
		if res.Action != ActionPass || res.BodyChanged || &res.Body[0] != &body[0] {
			t.Fatalf("%s: pass path changed or copied the body (action %v)", sz.name, res.Action)
		}
		allocs := testing.AllocsPerRun(20, func() { p.apply(req, body) })
		if allocs > 3 {
			t.Errorf("%s: pass path allocates %.0f times, want at most 3", sz.name, allocs)
		}
	}
}

func TestBenchBodiesAreTheAdvertisedSize(t *testing.T) {
	for _, sz := range benchSizes {
		body := responsesBody(sz.size, "priority")
		if len(body) < sz.size*9/10 || len(body) > sz.size*11/10 || !gjson.ValidBytes(body) {
			t.Fatalf("%s body is %d bytes (valid %v)", sz.name, len(body), gjson.ValidBytes(body))
		}
	}
}

// hostileBody is a body of about size bytes made of service_tier and model
// pairs, the shape that made evaluation quadratic (each occurrence judged
// against each other), after `head` occurrences of each padded with filler
// members when head is set.
func hostileBody(size, head int) []byte {
	var b strings.Builder
	b.Grow(size + 64)
	b.WriteString(`{"stream":true`)
	for i := 0; b.Len() < size-2; i++ {
		if head > 0 && i >= head {
			fmt.Fprintf(&b, `,"input_%d":"%s"`, i, strings.Repeat("x", 64))
			continue
		}
		fmt.Fprintf(&b, `,"service_tier":"%s","model":"m%d"`, []string{"priority", "flex", "scale", "default"}[i%4], i)
	}
	b.WriteString(`}`)
	return []byte(b.String())
}

// BenchmarkApplyHostile shows the time of a decision growing with the body,
// not with its square, up to 64 MiB: a body made only of occurrences (refused
// past 64 of them), and one at the limit of 64 with the rest filler.
// Run it short: go test -run '^$' -bench ApplyHostile -benchtime 1x ./policy/
func BenchmarkApplyHostile(b *testing.B) {
	p := Default()
	for _, shape := range []struct {
		name string
		head int
	}{{"all-occurrences", 0}, {"64-occurrences", 64}} {
		for _, mib := range []int{1, 4, 16, 64} {
			body := hostileBody(mib<<20, shape.head)
			b.Run(fmt.Sprintf("%s/%dMiB", shape.name, mib), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				req := &Request{Endpoint: EndpointResponses}
				for b.Loop() {
					res := p.apply(req, body)
					if res.Refusal.Status() != 0 && res.Refusal.Status() != 400 {
						b.Fatal(res.Refusal.Status(), res.Message)
					}
				}
			})
		}
	}
}
