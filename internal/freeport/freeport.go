// Package freeport finds loopback TCP ports that are free, for tests that
// must name an address before the process that listens on it starts.
//
// A port is free when asked; another process taking it before the test's
// listener does is possible, as with any such scheme, and rare enough on
// a test machine.
package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Port returns a loopback TCP port that was free a moment ago.
func Port(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Addr returns 127.0.0.1:port for a port that was free a moment ago.
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t)))
}
