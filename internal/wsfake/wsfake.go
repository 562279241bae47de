// Package wsfake serves fake WebSocket peers for tests: upstreams the
// bridge dials, and targets the load driver dials.
package wsfake

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coder/websocket"
)

// Serve starts a plain HTTP server that accepts every WebSocket upgrade and
// hands each session to session, with the request's context; the
// connection is closed when session returns, and the server when the test
// ends.
func Serve(t testing.TB, session func(ctx context.Context, c *websocket.Conn)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		session(r.Context(), c)
	}))
	t.Cleanup(srv.Close)
	return srv
}
