package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tiergate/tiergate/budget"
	"github.com/tiergate/tiergate/policy"
)

// readiness is what /readyz reports: ready once the policy is loaded, its
// file is watched and every listener is up, not ready again from the
// moment draining starts.
type readiness struct {
	ready    atomic.Bool
	draining atomic.Bool
}

// adminHandler serves /metrics, /healthz, /readyz, /policy and /budgets, and with
// profiles Go's profiles under /debug/pprof/. The profiles are registered
// on this mux only (never http.DefaultServeMux), so nothing else can expose
// them by accident.
func adminHandler(reg *prometheus.Registry, store *policy.Store, budgets *budget.Tracker, source string, rd *readiness, profiles bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /budgets", budgets.Handler())
	if profiles {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case rd.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !rd.ready.Load():
			http.Error(w, "starting", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	mux.HandleFunc("GET /policy", func(w http.ResponseWriter, _ *http.Request) {
		p := store.Load()
		raw, err := p.RedactedJSON()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Source   string          `json:"source"`
			SHA256   string          `json:"sha256"`
			LoadedAt string          `json:"loaded_at"`
			Policy   json.RawMessage `json:"policy"`
		}{source, p.SHA256(), p.LoadedAt().UTC().Format(time.RFC3339Nano), raw})
	})
	return mux
}
