package main

import (
	"encoding/json"
	"net"
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

// readyJSON is /readyz's body.
type readyJSON struct {
	// Status is ok, starting or draining.
	Status string `json:"status"`
	// BudgetStore is the Redis store's state (ok, unreachable,
	// auth_failed); absent with the memory store.
	BudgetStore string `json:"budget_store,omitempty"`
}

// adminHandler serves /metrics, /healthz, /readyz, /policy and /budgets, and with
// profiles Go's profiles under /debug/pprof/. The profiles are registered
// on this mux only (never http.DefaultServeMux), so nothing else can expose
// them by accident.
//
// POST /drain (what `tiergate drain`, Envoy's preStop hook, calls) starts
// draining the WebSocket sessions through drain. It is answered only to a
// loopback peer: the admin listener binds every interface in Kubernetes so
// that probes and Prometheus reach it, and a drain is not theirs to start.
func adminHandler(reg *prometheus.Registry, store *policy.Store, budgets *budget.Tracker, source string, rd *readiness, profiles bool, drain func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "drain is only answered on loopback", http.StatusForbidden)
			return
		}
		drain()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("draining\n"))
	})
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
		// The budget store is detail, never a reason to be unready: a
		// Redis outage must not take every replica out of the Service.
		body := readyJSON{Status: "ok", BudgetStore: budgets.StoreStatus()}
		code := http.StatusOK
		switch {
		case rd.draining.Load():
			body.Status, code = "draining", http.StatusServiceUnavailable
		case !rd.ready.Load():
			body.Status, code = "starting", http.StatusServiceUnavailable
		}
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
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

// fromLoopback reports whether r came from the host's own loopback.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
