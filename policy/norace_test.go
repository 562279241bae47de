//go:build !race

package policy

// raceEnabled: the race detector is on, and sync.Pool drops items.
const raceEnabled = false
