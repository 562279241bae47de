package budget

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/tiergate/tiergate/policy"
)

// budgetJSON is one row of /budgets (DESIGN.md, Budgets).
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
				Spent:       decimal(s.Spent),
				Limit:       decimal(s.Limit),
				State:       state,
			})
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(rows)
	})
}

// decimal writes micro-units as an exact, trimmed decimal number of
// currency units (no float noise).
func decimal(micros int64) json.Number {
	neg := micros < 0
	if neg {
		micros = -micros
	}
	s := strconv.FormatInt(micros/policy.MicrosPerUnit, 10)
	if frac := micros % policy.MicrosPerUnit; frac != 0 {
		f := strconv.FormatInt(frac+policy.MicrosPerUnit, 10)[1:]
		for f[len(f)-1] == '0' {
			f = f[:len(f)-1]
		}
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return json.Number(s)
}
