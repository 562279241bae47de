// Package budget keeps what each caller group spends against the policy's
// budgets, and gives the policy a read-only view of it.
//
// It owns the UTC calendar windows (window.go), the spend stores behind the
// Store interface (store.go; the memory store here, a shared store later),
// the Tracker that turns a finished request's cost into spend and reads it
// back for decisions (tracker.go), the budget metrics (metrics.go) and the
// /budgets admin endpoint (admin.go).
//
// The decision itself is policy's: it reads spend through a View and never
// writes. Reading spend is a map read and an atomic load, never a lock held
// across I/O, because it happens for every request and WebSocket turn; a
// store that talks to a network must keep a local view for reads and send
// its increments asynchronously.
package budget
