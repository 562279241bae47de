package budget

import (
	"sync"
	"sync/atomic"
	"time"
)

// Key names one spend counter: a budget, a group bucket, and a window.
type Key struct {
	Budget string
	Group  string
	// Start and End bound the window, [Start, End), in Unix seconds. End
	// adds nothing to the key's identity (a window's start fixes its end);
	// it is there so that a store can expire a counter once its window is
	// over without knowing the budget's window kind.
	Start, End int64
}

// Entry is one counter as a store holds it.
type Entry struct {
	Key
	// Spent is in micro-units (10⁻⁶ of the currency).
	Spent int64
}

// Store holds spend in integer micro-units.
//
// Spent is on the request path: it must answer from memory (a local view)
// and never wait on I/O. Add may be asynchronous: the spend it adds may
// show in Spent only later, which is part of the overshoot bound. A store
// is safe for concurrent use.
type Store interface {
	// Spent returns the spend of k as this replica knows it.
	Spent(k Key) int64
	// Add adds micros to k's spend.
	Add(k Key, micros int64)
	// Entries lists the counters of the windows that start at or after
	// since, in no particular order.
	Entries(since time.Time) []Entry
	// Kind names the store in logs ("memory", "redis").
	Kind() string
}

// Memory is the in-process store: exact and immediate, but correct for one
// replica only (each replica keeps its own spend) and lost on restart.
type Memory struct {
	// counters maps Key to *atomic.Int64. A sync.Map, because keys are
	// written once per group and window and then read and added to by every
	// request: reads take no lock.
	counters sync.Map
	// mu serialises pruning against itself; reads and adds never take it.
	mu         sync.Mutex
	lastPruned int64
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory { return &Memory{} }

// Kind implements Store.
func (m *Memory) Kind() string { return "memory" }

// Spent implements Store.
func (m *Memory) Spent(k Key) int64 {
	if c, ok := m.counters.Load(k); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// Add implements Store.
func (m *Memory) Add(k Key, micros int64) {
	c, ok := m.counters.Load(k)
	if !ok {
		c, _ = m.counters.LoadOrStore(k, new(atomic.Int64))
		m.prune(k.Start)
	}
	c.(*atomic.Int64).Add(micros)
}

// retention is how long a window is kept once it has ended: long enough
// for a request decided in it to finish and be accounted.
const retention = 24 * time.Hour

// prune drops counters of windows that ended more than retention before
// now (the start of a window just created), at most once a day, so memory
// stays bounded by the budgets, groups and current windows.
func (m *Memory) prune(now int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now-m.lastPruned < int64(24*time.Hour/time.Second) {
		return
	}
	m.lastPruned = now
	cutoff := now - int64(retention/time.Second)
	m.counters.Range(func(k, _ any) bool {
		if k.(Key).End < cutoff {
			m.counters.Delete(k)
		}
		return true
	})
}

// Entries implements Store.
func (m *Memory) Entries(since time.Time) []Entry {
	var out []Entry
	s := since.Unix()
	m.counters.Range(func(k, c any) bool {
		if key := k.(Key); key.Start >= s {
			out = append(out, Entry{Key: key, Spent: c.(*atomic.Int64).Load()})
		}
		return true
	})
	return out
}
