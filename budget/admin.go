package budget

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/tiergate/tiergate/internal/decimal"
)

// budgetJSON is one row of /budgets (docs/contracts.md, "Budgets").
type budgetJSON struct {
	Budget      string      `json:"budget"`
	Group       string      `json:"group"`
	WindowStart string      `json:"window_start"`
	WindowEnd   string      `json:"window_end"`
	Spent       json.Number `json:"spent"`
	Limit       json.Number `json:"limit"`
	State       string      `json:"state"`
	Shadow      bool        `json:"shadow"`
}

// Budget states in /budgets.
const (
	StateOK        = "ok"
	StateExhausted = "exhausted"
)

// Handler serves /budgets: a JSON list of each budget's spend per group in
// its current window, in currency units, as this replica knows it.
func (t *Tracker) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rows := []budgetJSON{}
		for _, s := range t.Snapshot() {
			state := StateOK
			if s.Exhausted() {
				state = StateExhausted
			}
			rows = append(rows, budgetJSON{
				Budget:      s.Budget,
				Group:       s.Group,
				WindowStart: s.WindowStart.Format(time.RFC3339),
				WindowEnd:   s.WindowEnd.Format(time.RFC3339),
				Spent:       amount(s.Spent),
				Limit:       amount(s.Limit),
				State:       state,
				Shadow:      s.Shadow,
			})
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(rows)
	})
}

// amount writes micro-units as an exact, trimmed decimal number of
// currency units (no float noise).
func amount(micros int64) json.Number {
	return json.Number(decimal.String(uint64(max(micros, 0)), 6))
}
