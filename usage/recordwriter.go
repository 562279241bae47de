package usage

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tiergatev1 "github.com/tiergate/tiergate/proto/tiergate/v1"
)

// RecordsDroppedMetric is the name of the counter of usage records that
// were not written (README, "Usage records").
const RecordsDroppedMetric = "tiergate_usage_records_dropped_total"

// Reasons a record is dropped: the values of RecordsDroppedMetric's reason
// label. Each series exists from zero.
const (
	// DropQueueFull: the queue was full, because the writer is slower than
	// the traffic or blocked (stdout that nobody reads).
	DropQueueFull = "queue_full"
	// DropWriteError: the writer returned an error (a full disk, a closed
	// pipe) for the write that held the record.
	DropWriteError = "write_error"
	// DropShutdown: the record was still queued, or being written, when the
	// shutdown's flush ran out of time, or came after the log was closed.
	DropShutdown = "shutdown"
)

var dropReasons = [...]string{DropQueueFull, DropWriteError, DropShutdown}

// Defaults of QueueOptions.
const (
	// DefaultQueueSize records wait at most: a few MiB of records, tens of
	// seconds of a busy pod's traffic, enough to ride out a slow log reader
	// without letting a stuck one grow the heap.
	DefaultQueueSize = 4096
	// DefaultDropLogEvery is how often at most a reason's drops are logged.
	DefaultDropLogEvery = 10 * time.Second
	// batchBytes is how much encoded output one write carries at most: the
	// writer takes what is queued, so a burst costs few system calls.
	batchBytes = 64 << 10
)

// QueueOptions configure a queued RecordWriter (NewQueuedRecordWriter).
type QueueOptions struct {
	// Size is how many records may wait for the writer; 0 means
	// DefaultQueueSize.
	Size int
	// Registerer receives RecordsDroppedMetric; nil counts without
	// exporting.
	Registerer prometheus.Registerer
	// Log receives a warning when records are dropped, at most one per
	// reason every DropLogEvery; nil discards.
	Log *slog.Logger
	// DropLogEvery is the least time between two warnings for one reason;
	// 0 means DefaultDropLogEvery.
	DropLogEvery time.Duration
}

// RecordWriter writes usage records, one JSON line each, to an io.Writer
// (stdout or a file). It is safe for concurrent use, and lines from concurrent
// requests never interleave whatever the writer.
//
// A RecordWriter made by NewRecordWriter writes on the caller's goroutine, one
// Write call per record under a lock: what tests and tools want. A RecordWriter
// made by NewQueuedRecordWriter, what serve uses, never makes the caller wait:
// Write puts the record on a bounded queue and returns, and one goroutine
// encodes and writes what is queued. A writer that fails or blocks then costs
// records, never request time: what cannot be queued or written is counted in
// RecordsDroppedMetric and logged. Close flushes it.
//
// A nil *RecordWriter writes nothing, so a disabled log (--usage-log off) needs
// no checks at the call sites.
type RecordWriter struct {
	w io.Writer

	// mu serialises the synchronous RecordWriter's writes and guards buf.
	mu  sync.Mutex
	buf []byte

	q *queue // nil for a synchronous RecordWriter
}

// queue is the asynchronous side of a queued RecordWriter.
type queue struct {
	records chan *tiergatev1.UsageRecord
	stop    chan struct{} // closed by Close: write what is queued, then end
	done    chan struct{} // closed when the writer goroutine ends

	// closeMu orders Write against Close: a record is queued only while the
	// log is open, so once Close holds it, accepted is final.
	closeMu sync.RWMutex
	closed  bool

	// countMu guards the settlement of accepted records: settled counts
	// those written or dropped by the writer, and abandoned is set when
	// Close gave up waiting and counted the rest itself, so that no record
	// is counted twice.
	countMu   sync.Mutex
	accepted  uint64
	settled   uint64
	abandoned bool

	dropped [len(dropReasons)]prometheus.Counter
	// pending and lastLog hold, per reason, the drops not yet logged and
	// the time of the last warning (UnixNano), for rate-limited logging.
	pending [len(dropReasons)]atomic.Uint64
	lastLog [len(dropReasons)]atomic.Int64
	every   time.Duration
	log     *slog.Logger
	lastErr atomic.Pointer[string]
}

// NewRecordWriter returns a RecordWriter writing to w on the caller's
// goroutine. For a nil w or io.Discard it returns nil, the RecordWriter that
// writes nothing and does not encode either.
func NewRecordWriter(w io.Writer) *RecordWriter {
	if w == nil || w == io.Discard {
		return nil
	}
	return &RecordWriter{w: w}
}

// NewQueuedRecordWriter returns a RecordWriter that writes to w from its own
// goroutine, through a queue of o.Size records. For a nil w or io.Discard it
// returns nil (and registers nothing). Close it to flush and end the goroutine.
func NewQueuedRecordWriter(w io.Writer, o QueueOptions) (*RecordWriter, error) {
	if w == nil || w == io.Discard {
		return nil, nil
	}
	if o.Size <= 0 {
		o.Size = DefaultQueueSize
	}
	if o.DropLogEvery <= 0 {
		o.DropLogEvery = DefaultDropLogEvery
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: RecordsDroppedMetric,
		Help: "Usage records not written, by reason: queue_full (the writer is slow or blocked and the queue is full), " +
			"write_error (the writer failed), shutdown (still queued when the shutdown's flush ran out of time).",
	}, []string{"reason"})
	if err := register(o.Registerer, &vec); err != nil {
		return nil, fmt.Errorf("usage log: %w", err)
	}
	q := &queue{
		records: make(chan *tiergatev1.UsageRecord, o.Size),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		every:   o.DropLogEvery,
		log:     o.Log,
	}
	for i, r := range dropReasons {
		q.dropped[i] = vec.WithLabelValues(r) // every series from zero
	}
	l := &RecordWriter{w: w, q: q}
	go l.run()
	return l, nil
}

// Write writes r as one line. A synchronous RecordWriter returns the writer's
// error (the record is lost, and the caller may count it). A queued
// RecordWriter returns nil at once: r is queued, or dropped and counted when
// the queue is full or the log closed. r must not be changed afterwards.
func (l *RecordWriter) Write(r *tiergatev1.UsageRecord) error {
	if l == nil {
		return nil
	}
	if q := l.q; q != nil {
		q.closeMu.RLock()
		defer q.closeMu.RUnlock()
		if q.closed {
			q.drop(DropShutdown, 1)
			return nil
		}
		select {
		case q.records <- r:
			q.countMu.Lock()
			q.accepted++
			q.countMu.Unlock()
		default:
			q.drop(DropQueueFull, 1)
		}
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = AppendRecord(l.buf[:0], r)
	_, err := l.w.Write(l.buf)
	if cap(l.buf) > batchBytes {
		l.buf = nil // one huge record should not pin its buffer
	}
	return err
}

// Close flushes a queued RecordWriter: it stops taking records and waits until
// the queued ones are written or ctx ends. Records still unwritten then are
// counted as dropped (shutdown) and an error says how many. Close does not
// close the writer. On a synchronous or nil RecordWriter it does nothing.
func (l *RecordWriter) Close(ctx context.Context) error {
	if l == nil || l.q == nil {
		return nil
	}
	q := l.q
	q.closeMu.Lock()
	already := q.closed
	q.closed = true
	q.closeMu.Unlock()
	if !already {
		close(q.stop)
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
	}
	q.countMu.Lock()
	lost := q.accepted - q.settled
	if q.abandoned {
		lost = 0 // a previous Close counted them
	}
	q.abandoned = true
	q.countMu.Unlock()
	if lost == 0 {
		return nil
	}
	q.dropped[reasonIndex(DropShutdown)].Add(float64(lost))
	q.log.Error("usage records not written: the writer did not take them before the shutdown's flush ended",
		"reason", DropShutdown, "dropped", lost)
	return fmt.Errorf("usage log: %d records not written: %w", lost, ctx.Err())
}

// run is the writer goroutine: it writes batches of queued records until
// Close, then what is left.
func (l *RecordWriter) run() {
	q := l.q
	defer close(q.done)
	var buf []byte
	var ends []int
	for {
		select {
		case r := <-q.records:
			buf, ends = l.writeBatch(r, buf[:0], ends[:0])
		case <-q.stop:
			for {
				select {
				case r := <-q.records:
					buf, ends = l.writeBatch(r, buf[:0], ends[:0])
				default:
					return
				}
			}
		}
		if cap(buf) > 4*batchBytes {
			buf = nil // one huge record should not pin its buffer
		}
	}
}

// writeBatch encodes first and whatever else is queued, up to batchBytes,
// writes them in one call, and settles them: those whose whole line the
// writer took are written, the rest dropped as write errors. ends holds each
// line's end in buf.
func (l *RecordWriter) writeBatch(first *tiergatev1.UsageRecord, buf []byte, ends []int) ([]byte, []int) {
	q := l.q
	buf = AppendRecord(buf, first)
	ends = append(ends, len(buf))
more:
	for len(buf) < batchBytes {
		select {
		case r := <-q.records:
			buf = AppendRecord(buf, r)
			ends = append(ends, len(buf))
		default:
			break more
		}
	}
	n, err := l.w.Write(buf)
	if err == nil && n < len(buf) {
		err = io.ErrShortWrite
	}
	written := len(ends)
	if err != nil {
		written = 0
		for _, e := range ends {
			if e <= n {
				written++
			}
		}
		msg := err.Error()
		q.lastErr.Store(&msg)
	}
	q.countMu.Lock()
	defer q.countMu.Unlock()
	if q.abandoned {
		return buf, ends // Close counted these as dropped at shutdown
	}
	q.settled += uint64(len(ends))
	if failed := len(ends) - written; failed > 0 {
		q.drop(DropWriteError, failed)
	}
	return buf, ends
}

// drop counts n records dropped for reason and logs it, at most once per
// reason every q.every with the count since the last warning.
func (q *queue) drop(reason string, n int) {
	i := reasonIndex(reason)
	q.dropped[i].Add(float64(n))
	q.pending[i].Add(uint64(n))
	now := time.Now().UnixNano()
	last := q.lastLog[i].Load()
	if last != 0 && now-last < int64(q.every) {
		return
	}
	if !q.lastLog[i].CompareAndSwap(last, now) {
		return // another goroutine logs this period's drops
	}
	attrs := []any{"reason", reason, "dropped", q.pending[i].Swap(0), "log_every", q.every.String()}
	if reason == DropWriteError {
		if e := q.lastErr.Load(); e != nil {
			attrs = append(attrs, "err", *e)
		}
	}
	q.log.Error("usage records dropped", attrs...)
}

func reasonIndex(reason string) int {
	for i, r := range dropReasons {
		if r == reason {
			return i
		}
	}
	panic("usage: unknown drop reason " + reason)
}
