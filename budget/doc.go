// Package budget keeps what each caller group spends against the policy's
// budgets, and gives the policy a read-only view of it.
//
// It owns the UTC calendar windows (window.go), the spend stores behind the
// Store interface (store.go: the per-replica memory store; redis.go: the
// store replicas share through Redis, with its local view, its background
// sends and the bound on what waits while Redis is down), the Tracker that
// puts the policy's store in force and turns a finished request's cost into spend and reads it
// back for decisions (tracker.go), the budget metrics (metrics.go) and the
// /budgets admin endpoint (admin.go).
//
// The decision itself is policy's: it reads spend through a View and never
// writes. Reading spend is a map read and an atomic load, never a lock held
// across I/O, because it happens for every request and WebSocket turn: the
// Redis store answers from its local view and sends its increments from
// its own goroutine.
package budget
