package policy

// Action is what the policy does with a request.
type Action uint8

// Actions, ordered by strictness: when several occurrences or candidate
// models are judged, the highest wins.
const (
	ActionPass Action = iota
	ActionFilter
	ActionBlock
)

var actionNames = [...]string{ActionPass: "pass", ActionFilter: "filter", ActionBlock: "block"}

// String returns the action as written in the policy file.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}
