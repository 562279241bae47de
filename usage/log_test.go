package usage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tiergate/tiergate/internal/syncbuf"
)

// promptly is how long one Write may take however the writer behaves: the
// request path must not wait on the log.
const promptly = 50 * time.Millisecond

// blockedWriter is a writer nobody reads: Write blocks until released, and
// says when the first one began.
type blockedWriter struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
}

func newBlockedWriter() *blockedWriter {
	return &blockedWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return 0, errors.New("released")
}

// shortWriter takes the first n bytes it is offered, then fails.
type shortWriter struct {
	mu   sync.Mutex
	n    int
	took bytes.Buffer
}

func (w *shortWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := min(w.n, len(p))
	w.took.Write(p[:k])
	w.n -= k
	if k < len(p) {
		return k, errors.New("disk full")
	}
	return k, nil
}

// queued builds a queued log on a fresh registry, closing it when the test
// ends.
func queued(t *testing.T, w io.Writer, size int, logTo io.Writer) (*Log, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if logTo == nil {
		logTo = io.Discard
	}
	l, err := NewQueuedLog(w, QueueOptions{Size: size, Registerer: reg, Log: slog.New(slog.NewJSONHandler(logTo, nil)), DropLogEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = l.Close(ctx)
	})
	return l, reg
}

// dropped reads the drop counter for each reason.
func dropped(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != RecordsDroppedMetric {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return got
}

func wantDropped(t *testing.T, reg *prometheus.Registry, queueFull, writeError, shutdown float64) {
	t.Helper()
	want := map[string]float64{DropQueueFull: queueFull, DropWriteError: writeError, DropShutdown: shutdown}
	if got := dropped(t, reg); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v", RecordsDroppedMetric, got, want)
	}
}

// write writes n records numbered from first, failing the test if any
// Write waits on the writer.
func write(t *testing.T, l *Log, first, n int) {
	t.Helper()
	for i := range n {
		r := fullRecord()
		r.RequestId = fmt.Sprintf("req-%d", first+i)
		start := time.Now()
		if err := l.Write(r); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if d := time.Since(start); d > promptly {
			t.Fatalf("Write %d took %v: the request path waited on the log", first+i, d)
		}
	}
}

func TestQueuedLogWritesEveryRecordInOrderAndCloseFlushes(t *testing.T) {
	t.Parallel()
	w := &callWriter{}
	l, reg := queued(t, w, 64, nil)
	wantDropped(t, reg, 0, 0, 0) // every series exists from zero
	const n = 1000
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() { write(t, l, g*n, n) })
	}
	wg.Wait()
	// Writes came faster than a 64-record queue drains only if the writer
	// lagged; what was not dropped must all be written by Close.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	lines := 0
	for _, c := range w.calls {
		if c[len(c)-1] != '\n' {
			t.Fatalf("a write did not end a line: %q", c)
		}
		for _, line := range bytes.SplitAfter(c, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			r, err := ParseRecord(line)
			if err != nil {
				t.Fatalf("%v: %q", err, line)
			}
			if seen[r.GetRequestId()] {
				t.Fatalf("%s written twice", r.GetRequestId())
			}
			seen[r.GetRequestId()] = true
			lines++
		}
	}
	full := dropped(t, reg)[DropQueueFull]
	if float64(lines)+full != 4*n {
		t.Errorf("%d records written and %v dropped for a full queue, want %d in all", lines, full, 4*n)
	}
	wantDropped(t, reg, full, 0, 0)
}

func TestQueuedLogCountsWhatAFailingWriterLoses(t *testing.T) {
	t.Parallel()
	logs := &syncbuf.Buffer{}
	l, reg := queued(t, failingWriter{}, 8, logs)
	const n = 500
	for i := range n {
		write(t, l, i, 1)
		if i%8 == 7 {
			time.Sleep(time.Millisecond) // let the writer keep up, so nothing is dropped for a full queue
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	full := dropped(t, reg)[DropQueueFull]
	wantDropped(t, reg, full, n-full, 0)
	// Rate-limited: one warning per reason in the period (an hour here),
	// carrying the writer's error.
	warned := strings.Count(logs.String(), `"reason":"write_error"`)
	if warned != 1 || !strings.Contains(logs.String(), `"err":"disk full"`) {
		t.Errorf("%d warnings for write errors, want 1 with the error:\n%s", warned, logs.String())
	}
}

func TestQueuedLogCountsWhatABlockedWriterLoses(t *testing.T) {
	t.Parallel()
	const size, extra = 16, 100
	w := newBlockedWriter()
	defer close(w.release)
	logs := &syncbuf.Buffer{}
	l, reg := queued(t, w, size, logs)
	write(t, l, 0, 1)
	<-w.entered // the writer holds record 0 and is stuck
	write(t, l, 1, size+extra)
	wantDropped(t, reg, extra, 0, 0)
	if n := strings.Count(logs.String(), `"reason":"queue_full"`); n != 1 {
		t.Errorf("%d warnings for a full queue, want 1 (rate-limited):\n%s", n, logs.String())
	}

	// Shutdown: the flush waits until its deadline, then counts what the
	// stuck writer never took (the queue and the record it holds).
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Close(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline's error", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v past a 200ms deadline", d)
	}
	wantDropped(t, reg, extra, 0, size+1)

	// After Close, a record is counted, not queued.
	write(t, l, 1000, 3)
	wantDropped(t, reg, extra, 0, size+4)
}

func TestQueuedLogKeepsTheLinesAShortWriteTook(t *testing.T) {
	t.Parallel()
	line := AppendRecord(nil, fullRecord())
	// Room for two whole lines and half of a third.
	w := &shortWriter{n: 2*len(line) + len(line)/2}
	l, reg := queued(t, w, 8, nil)
	// The three go out in one write or several; either way two lines are
	// whole and the third is lost.
	write(t, l, 0, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	complete := bytes.Count(w.took.Bytes(), []byte("\n"))
	if complete != 2 {
		t.Errorf("the writer took %d whole lines, want 2", complete)
	}
	wantDropped(t, reg, 0, 1, 0)
}

func TestQueuedLogWithoutAWriterIsNil(t *testing.T) {
	t.Parallel()
	for _, w := range []io.Writer{nil, io.Discard} {
		l, err := NewQueuedLog(w, QueueOptions{})
		if l != nil || err != nil {
			t.Errorf("NewQueuedLog(%v) = %v, %v; want nil, nil", w, l, err)
		}
		if err := l.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

func TestQueuedLogRegistersOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	for range 2 {
		l, err := NewQueuedLog(&callWriter{}, QueueOptions{Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Close(context.Background())
	}
	if n := testutil.CollectAndCount(reg, RecordsDroppedMetric); n != 3 {
		t.Errorf("%d series, want one per reason", n)
	}
}

// BenchmarkLogWrite is what the request path pays to write a record: a
// queued log costs the same whether its writer keeps up, fails or is
// blocked (a queue slot or a counter), and less than writing in place.
func BenchmarkLogWrite(b *testing.B) {
	r := fullRecord()
	bench := func(b *testing.B, l *Log) {
		b.Helper()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = l.Write(r)
			}
		})
	}
	newQueued := func(b *testing.B, w io.Writer) *Log {
		b.Helper()
		l, err := NewQueuedLog(w, QueueOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			_ = l.Close(ctx)
		})
		return l
	}
	b.Run("in place, writer keeps up", func(b *testing.B) { bench(b, NewLog(discardWriter{})) })
	b.Run("queued, writer keeps up", func(b *testing.B) { bench(b, newQueued(b, discardWriter{})) })
	b.Run("queued, writer fails", func(b *testing.B) { bench(b, newQueued(b, failingWriter{})) })
	b.Run("queued, writer blocked", func(b *testing.B) {
		w := newBlockedWriter()
		b.Cleanup(func() { close(w.release) })
		bench(b, newQueued(b, w))
	})
}

// discardWriter is a writer that keeps up (io.Discard itself turns the log
// off).
type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
