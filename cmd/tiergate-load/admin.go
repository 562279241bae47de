package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves reg's /metrics on addr (the baselines' admin
// listener, read the same way as tiergate's) and logs its address as
// tiergate does. Serve errors go to errc; the returned func closes it.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger, errc chan<- error) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "listener", "admin", "address", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	return func() { _ = srv.Close() }, nil
}
