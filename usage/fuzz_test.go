package usage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSSE checks, for any bytes, that reading never panics, that where the
// stream is cut never changes what is read (whole, at one point, byte by
// byte), that the Chat filter reads the same as the plain reader, and that
// what the filter forwards neither depends on the cuts nor invents bytes.
func FuzzSSE(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.sse"))
	if err != nil {
		f.Fatal(err)
	}
	for i, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint16(len(b)/2), uint8(i%4), false)
		f.Add(framings[3].frame(b), uint16(i*37), uint8((i+1)%4), true)
	}
	f.Add([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\r"), uint16(47), uint8(ChatCompletions), false)
	f.Add([]byte("event:response.completed\rdata:{\"type\":\"response.completed\"}\r\r"), uint16(25), uint8(Responses), true)
	f.Add([]byte(":\n\n\r\n\r\r\ndata\nevent\n\n"), uint16(3), uint8(Messages), false)

	f.Fuzz(func(t *testing.T, data []byte, cut uint16, api uint8, small bool) {
		a := API(api % 4)
		max := 0
		if small {
			max = 64 // exercises the overflow and hold bounds
		}
		i := 0
		if len(data) > 0 {
			i = int(cut) % (len(data) + 1)
		}
		whole := readSSE(a, max, data)
		if got := readSSE(a, max, data[:i], data[i:]); got != whole {
			t.Fatalf("cut at %d: %+v, whole: %+v", i, got, whole)
		}
		if got := readSSE(a, max, bytewise(data)...); got != whole {
			t.Fatalf("byte by byte: %+v, whole: %+v", got, whole)
		}

		out, fl := filterAll(max, data)
		cutOut, _ := filterAll(max, data[:i], data[i:])
		byteOut, _ := filterAll(max, bytewise(data)...)
		if !bytes.Equal(cutOut, out) || !bytes.Equal(byteOut, out) {
			t.Fatalf("filter output depends on the cuts:\nwhole %q\ncut   %q\nbytes %q", out, cutOut, byteOut)
		}
		if len(out) > len(data) {
			t.Fatalf("filter forwarded %d bytes of %d", len(out), len(data))
		}
		if !fl.dropped() && !bytes.Equal(out, data) {
			t.Fatalf("filter changed a stream it dropped nothing from:\n%q\n%q", data, out)
		}
		if chat := readSSE(ChatCompletions, max, data); (sseResult{fl.Usage(), fl.FirstOutput(), fl.Overflowed()}) != chat {
			t.Fatalf("filter read %+v, reader read %+v", fl.Usage(), chat)
		}
		_ = ParseJSON(a, data)
		_ = ParseEvent(data)
	})
}
