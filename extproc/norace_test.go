//go:build !race

package extproc

// raceEnabled: the race detector is on, and sync.Pool drops items.
const raceEnabled = false
