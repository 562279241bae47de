package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit lifts the soft limit on open files to the hard limit.
// A WebSocket session is a file descriptor at each end, and the ws modes
// hold thousands at once in one process (5,000 client connections plus the
// in-process fake upstream's 5,000). Go already does this at startup on
// Linux (since 1.19, when package os is linked in); doing it here keeps
// the tool correct if that changes, and returns the limit so that a mode
// can refuse up front, with a clear message, a run it cannot hold.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// checkFileLimit fails when need descriptors (plus a margin for listeners,
// the admin scrape and the runtime) do not fit under this process's limit.
func checkFileLimit(need int) error {
	limit, err := raiseFileLimit()
	if err != nil {
		return fmt.Errorf("open-file limit: %w", err)
	}
	if uint64(need)+64 > limit {
		return fmt.Errorf("this run needs about %d open files and the limit is %d (ulimit -Hn); raise the hard limit or run fewer sessions", need+64, limit)
	}
	return nil
}
