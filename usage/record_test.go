package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

func fullRecord() *tiergatev1.UsageRecord {
	return &tiergatev1.UsageRecord{
		Time:                 "2026-08-21T10:11:12.345Z",
		RequestId:            "req-1",
		ResponseId:           "resp_1",
		Endpoint:             "responses",
		Group:                "team-a",
		Model:                "gpt-latest",
		ResponseModel:        "gpt-5.5-2026-06-01",
		ServiceTierRequested: "priority",
		ServiceTierSent:      "none",
		ServiceTierReported:  "default",
		Action:               "filter",
		Rule:                 "#1",
		InputTokens:          proto.Uint64(8438),
		CachedInputTokens:    proto.Uint64(0),
		OutputTokens:         proto.Uint64(398),
		ReasoningTokens:      proto.Uint64(256),
		DurationMs:           1234,
		TimeToFirstTokenMs:   proto.Uint64(210),
		Stream:               true,
		Status:               "completed",
		HttpStatus:           proto.Uint32(200),
	}
}

func TestAppendRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    *tiergatev1.UsageRecord
		want string
	}{
		{
			name: "every field is written in proto order with numbers as numbers",
			r:    fullRecord(),
			want: `{"time":"2026-08-21T10:11:12.345Z","request_id":"req-1","response_id":"resp_1","endpoint":"responses","group":"team-a","model":"gpt-latest","response_model":"gpt-5.5-2026-06-01","service_tier_requested":"priority","service_tier_sent":"none","service_tier_reported":"default","action":"filter","rule":"#1","input_tokens":8438,"cached_input_tokens":0,"output_tokens":398,"reasoning_tokens":256,"duration_ms":1234,"time_to_first_token_ms":210,"stream":true,"status":"completed","http_status":200}` + "\n",
		},
		{
			name: "a priced record writes its cost as an exact decimal in currency units",
			r: &tiergatev1.UsageRecord{
				Time: "t", Endpoint: "messages", Action: "pass", Rule: "#1", PolicySha256: "ab12",
				InputTokens: proto.Uint64(1300), CachedInputTokens: proto.Uint64(1024), CacheWriteInputTokens: proto.Uint64(200),
				OutputTokens: proto.Uint64(15), Cost: proto.Uint64(1_234_500_000), Currency: "USD", PriceTier: "priority", Status: "completed",
			},
			want: `{"time":"t","endpoint":"messages","action":"pass","rule":"#1","policy_sha256":"ab12","input_tokens":1300,"cached_input_tokens":1024,"cache_write_input_tokens":200,"output_tokens":15,"cost":0.0012345,"currency":"USD","price_tier":"priority","duration_ms":0,"stream":false,"status":"completed"}` + "\n",
		},
		{
			name: "a whole cost has no decimal point and a zero cost is 0",
			r:    &tiergatev1.UsageRecord{Cost: proto.Uint64(3_000_000_000_000), CostUnpricedReason: ""},
			want: `{"time":"","endpoint":"","action":"","cost":3,"duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "an unpriced record says why and carries no cost",
			r:    &tiergatev1.UsageRecord{Endpoint: "realtime", CostUnpricedReason: "audio"},
			want: `{"time":"","endpoint":"realtime","action":"","cost_unpriced_reason":"audio","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "a WebSocket turn carries its number in the session after its response id",
			r:    &tiergatev1.UsageRecord{Time: "t", RequestId: "req-ws", ResponseId: "resp_2", Turn: 2, Endpoint: "responses_ws", Action: "pass", Stream: true, Status: "completed"},
			want: `{"time":"t","request_id":"req-ws","response_id":"resp_2","turn":2,"endpoint":"responses_ws","action":"pass","duration_ms":0,"stream":true,"status":"completed"}` + "\n",
		},
		{
			name: "an empty record keeps the always-present fields and drops the rest",
			r:    &tiergatev1.UsageRecord{},
			want: `{"time":"","endpoint":"","action":"","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "a nil record writes the same as an empty one",
			r:    nil,
			want: `{"time":"","endpoint":"","action":"","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "a blocked request has no token counts at all",
			r:    &tiergatev1.UsageRecord{Time: "t", Endpoint: "chat_completions", Action: "block", Status: "blocked", HttpStatus: proto.Uint32(403)},
			want: `{"time":"t","endpoint":"chat_completions","action":"block","duration_ms":0,"stream":false,"status":"blocked","http_status":403}` + "\n",
		},
		{
			name: "a budget's refusal names the budget",
			r:    &tiergatev1.UsageRecord{Time: "t", Endpoint: "responses", Action: "block", Status: "blocked", HttpStatus: proto.Uint32(429), Budget: "team-a-daily"},
			want: `{"time":"t","endpoint":"responses","action":"block","duration_ms":0,"stream":false,"status":"blocked","http_status":429,"budget":"team-a-daily"}` + "\n",
		},
		{
			name: "quotes, backslashes and control characters are escaped",
			r:    &tiergatev1.UsageRecord{Model: "a\"b\\c\nd\re\tf\x00g\x1fh\x7f"},
			want: `{"time":"","endpoint":"","model":"a\"b\\c\nd\re\tf\u0000g\u001fh` + "\x7f" + `","action":"","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "line and paragraph separators are escaped",
			r:    &tiergatev1.UsageRecord{Model: "x\u2028y\u2029z"},
			want: `{"time":"","endpoint":"","model":"x\u2028y\u2029z","action":"","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
		{
			name: "invalid UTF-8 becomes the replacement character and valid runes stay",
			r:    &tiergatev1.UsageRecord{Model: "ok\xffé\xe2\x82🚀"},
			want: `{"time":"","endpoint":"","model":"ok\ufffdé\ufffd\ufffd🚀","action":"","duration_ms":0,"stream":false,"status":""}` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := string(AppendRecord([]byte("prefix:"), tt.r))
			if got != "prefix:"+tt.want {
				t.Errorf("AppendRecord =\n%s\nwant\n%s", got, "prefix:"+tt.want)
			}
			if !json.Valid([]byte(strings.TrimSuffix(tt.want, "\n"))) {
				t.Errorf("not valid JSON: %s", tt.want)
			}
		})
	}
}

// TestAppendRecordRoundTrip proves the line is the record: ParseRecord reads
// it back into an equal message, presence of optional fields and the exact
// cost included.
func TestAppendRecordRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    *tiergatev1.UsageRecord
	}{
		{"a full record", fullRecord()},
		{"an empty record", &tiergatev1.UsageRecord{}},
		{"optional zeros stay present", &tiergatev1.UsageRecord{InputTokens: proto.Uint64(0), TimeToFirstTokenMs: proto.Uint64(0), HttpStatus: proto.Uint32(0)}},
		{"the largest counts", &tiergatev1.UsageRecord{OutputTokens: proto.Uint64(1<<64 - 1), DurationMs: 1<<64 - 1, HttpStatus: proto.Uint32(1<<32 - 1)}},
		{"a cost to the last unit", &tiergatev1.UsageRecord{Cost: proto.Uint64(12_345_678_901_234_567), Currency: "USD", PriceTier: "flex", CacheWriteInputTokens: proto.Uint64(7), PolicySha256: "00ff"}},
		{"the largest cost", &tiergatev1.UsageRecord{Cost: proto.Uint64(1<<64 - 1)}},
		{"a zero cost stays present", &tiergatev1.UsageRecord{Cost: proto.Uint64(0)}},
		{"strings needing escapes", &tiergatev1.UsageRecord{
			Model: "q\"b\\s/\n\r\t\b\f\x00\x01\x1f\u2028\u2029<>&é🚀", Rule: "rule \"fast\"", Group: "\x7f",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			line := AppendRecord(nil, tt.r)
			if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("not one line: %q", line)
			}
			got, err := ParseRecord(line)
			if err != nil {
				t.Fatalf("ParseRecord(%s): %v", line, err)
			}
			if !proto.Equal(got, tt.r) {
				t.Errorf("round trip gave %v, want %v", got, tt.r)
			}
		})
	}
}

// TestAppendStringMatchesEncodingJSON checks the escaper against
// encoding/json's decoder for every single byte and some sequences.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	var inputs []string
	for b := range 256 {
		inputs = append(inputs, string([]byte{byte(b)}), "a"+string([]byte{byte(b)})+"z")
	}
	inputs = append(inputs, "\xed\xa0\x80", "\xf4\x90\x80\x80", "\u2028\u2029", "é\xc3", "🚀")
	for _, in := range inputs {
		enc := appendString(nil, in)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", in, enc, err)
		}
		// Each invalid byte becomes one U+FFFD, as converting to runes does.
		want := string([]rune(in))
		if got != want {
			t.Errorf("appendString(%q) decodes to %q, want %q", in, got, want)
		}
	}
}

func TestFormatTime(t *testing.T) {
	t.Parallel()
	tm := time.Date(2026, 8, 21, 12, 11, 12, 345_678_900, time.FixedZone("CEST", 2*3600))
	if got, want := FormatTime(tm), "2026-08-21T10:11:12.345Z"; got != want {
		t.Errorf("FormatTime = %q, want %q", got, want)
	}
}

// callWriter records each Write call separately.
type callWriter struct {
	mu    sync.Mutex
	calls [][]byte
}

func (w *callWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, bytes.Clone(p))
	return len(p), nil
}

func TestLogWritesOneLinePerCallUnderConcurrency(t *testing.T) {
	t.Parallel()
	w := &callWriter{}
	l := NewLog(w)
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r := fullRecord()
				r.RequestId = strings.Repeat("r", g*10+i)
				if err := l.Write(r); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if len(w.calls) != goroutines*each {
		t.Fatalf("%d Write calls, want %d", len(w.calls), goroutines*each)
	}
	for _, c := range w.calls {
		if bytes.Count(c, []byte("\n")) != 1 || c[len(c)-1] != '\n' || !json.Valid(c) {
			t.Fatalf("a Write call was not one JSON line: %q", c)
		}
	}
}

func TestLogWithoutAWriter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		l    *Log
	}{
		{"a nil writer gives the log that writes nothing", NewLog(nil)},
		{"io.Discard gives the log that writes nothing", NewLog(io.Discard)},
		{"a nil log writes nothing", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.l != nil {
				t.Fatalf("got a %T, want nil", tt.l)
			}
			if err := tt.l.Write(fullRecord()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestLogReportsWriteErrors(t *testing.T) {
	t.Parallel()
	if err := NewLog(failingWriter{}).Write(fullRecord()); err == nil || err.Error() != "disk full" {
		t.Fatalf("Write error = %v, want disk full", err)
	}
}

func BenchmarkAppendRecord(b *testing.B) {
	r := fullRecord()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRecord(buf[:0], r)
	}
}

// TestStamp: the times both servers put on a record, from one place.
func TestStamp(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 8, 21, 10, 11, 12, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		first      time.Time
		httpStatus int
		ttft       *uint64
		status     *uint32
	}{
		{"output and a status", start.Add(250 * time.Millisecond), 200, ptr(uint64(250)), ptr(uint32(200))},
		{"no output yet, no status", time.Time{}, 0, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r tiergatev1.UsageRecord
			Stamp(&r, start, tc.first, start.Add(1500*time.Millisecond), tc.httpStatus)
			if r.Time != "2026-08-21T10:11:13.500Z" || r.DurationMs != 1500 {
				t.Errorf("time %q, duration %d ms; want 2026-08-21T10:11:13.500Z, 1500", r.Time, r.DurationMs)
			}
			if (r.TimeToFirstTokenMs == nil) != (tc.ttft == nil) || tc.ttft != nil && *r.TimeToFirstTokenMs != *tc.ttft {
				t.Errorf("time to first token %v, want %v", r.TimeToFirstTokenMs, tc.ttft)
			}
			if (r.HttpStatus == nil) != (tc.status == nil) || tc.status != nil && *r.HttpStatus != *tc.status {
				t.Errorf("http status %v, want %v", r.HttpStatus, tc.status)
			}
		})
	}
}

func TestBilledTier(t *testing.T) {
	t.Parallel()
	if got := (Usage{ServiceTier: "flex"}).BilledTier("priority"); got != "flex" {
		t.Errorf("reported flex, sent priority: billed %q, want the reported flex", got)
	}
	if got := Unknown().BilledTier("priority"); got != "priority" {
		t.Errorf("nothing reported, sent priority: billed %q, want priority", got)
	}
}

func TestParseRecordRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
	}{
		{"a line that is not JSON", `{"time":`},
		{"a cost written as a string", `{"cost":"0.5"}`},
		{"a cost with more than 12 decimals", `{"cost":0.0000000000001}`},
		{"a negative cost", `{"cost":-1}`},
		{"a token count that is not a number", `{"input_tokens":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if r, err := ParseRecord([]byte(tt.line)); err == nil {
				t.Errorf("ParseRecord(%s) = %v, want an error", tt.line, r)
			}
		})
	}
}

func TestParseRecordIgnoresNewerFields(t *testing.T) {
	t.Parallel()
	r, err := ParseRecord([]byte(`{"endpoint":"responses","budget":"team-a-daily","cost":1.5,"from_a_newer_tiergate":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.GetEndpoint() != "responses" || r.GetCost() != 1_500_000_000_000 {
		t.Errorf("got %v", r)
	}
}
