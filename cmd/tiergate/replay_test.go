package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplay replays testdata/policytest/replay.jsonl, 13 records decided
// under an older policy that passed everything, under rollout.yaml:
//
//   - 6 team-a priority turns of 2.00 each (100000 input, 10000 output at
//     12.5 and 75 per million) keep priority, now under team-a-priority: a
//     rule-only change. With --simulate-budgets the first 5 fill
//     team-a-daily (10) and the 6th is refused by it.
//   - priority without a group (HTTP and a WebSocket turn, 0.02 each) is
//     now filtered: 0.008 each at default.
//   - an intern's fast mode on Opus (0.045 at 6 × default) is now blocked.
//   - a request blocked before would now pass: its cost is unknown.
//   - a flex request is decided the same way (the shadow rule decides
//     nothing) and is not listed.
//   - a refused record and one with an unrecognised tier are not
//     replayable.
func TestReplay(t *testing.T) {
	t.Parallel()
	const (
		config = "testdata/policytest/rollout.yaml"
		log    = "testdata/policytest/replay.jsonl"
	)
	changedRows := `{"from":"pass priority","to":"filter none","rule_before":"","rule_after":"strip-priority","group":"","count":2,"cost_before":0.04,"cost_after":0.016},` +
		`{"from":"block none","to":"pass priority","rule_before":"old-block","rule_after":"team-a-priority","group":"team-a","count":1,"cost_before":0,"cost_after":0,"cost_unknown":1},` +
		`{"from":"pass priority","to":"block none","rule_before":"","rule_after":"no-priority-for-interns","group":"interns","count":1,"cost_before":0.045,"cost_after":0}`
	cases := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "budgets at zero spend: the team-a turns only change rule",
			args: []string{"--json", log},
			want: `{"records":13,"replayed":11,"not_replayable":2,"changed":4,"rule_only":6,"cost_unknown":1,"changes":[` + changedRows +
				`,{"from":"pass priority","to":"pass priority","rule_before":"","rule_after":"team-a-priority","group":"team-a","count":6,"cost_before":12,"cost_after":12}]}` + "\n",
		},
		{
			name: "simulated budgets: the budget exhausted partway refuses the later turn",
			args: []string{"--json", "--simulate-budgets", log},
			want: `{"records":13,"replayed":11,"not_replayable":2,"changed":5,"rule_only":5,"cost_unknown":1,"changes":[` + changedRows +
				`,{"from":"pass priority","to":"block none","rule_before":"","rule_after":"team-a-daily","group":"team-a","count":1,"cost_before":2,"cost_after":0}` +
				`,{"from":"pass priority","to":"pass priority","rule_before":"","rule_after":"team-a-priority","group":"team-a","count":5,"cost_before":10,"cost_after":10}]}` + "\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, append([]string{"replay", "--config", config}, tc.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if r.stdout != tc.want {
				t.Errorf("report\n got %s\nwant %s", r.stdout, tc.want)
			}
		})
	}
	t.Run("the table lists changes and rule-only changes apart", func(t *testing.T) {
		t.Parallel()
		r := runBinary(t, nil, "replay", "--config", config, log)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		changed, ruleOnly, ok := strings.Cut(r.stdout, "rule-only changes:")
		if !ok || !strings.HasPrefix(r.stdout, "records 13, replayed 11, not replayable 2\nchanged 4, rule only 6, cost unknown 1\n") {
			t.Fatalf("output:\n%s", r.stdout)
		}
		if !strings.Contains(changed, "0 (1 unknown)") || !strings.Contains(changed, "no-priority-for-interns") || strings.Contains(changed, "pass priority  pass priority") {
			t.Errorf("changed section:\n%s", changed)
		}
		if !strings.Contains(ruleOnly, "pass priority  pass priority  -            team-a-priority  team-a  6") {
			t.Errorf("rule-only section:\n%s", ruleOnly)
		}
	})
}

func TestReplayRefusals(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"endpoint\":\"responses\",\"time\":\"2026-12-07T10:00:00Z\"}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"a line that is not a record names its place", []string{"--config", "testdata/policytest/rollout.yaml", bad}, "bad.jsonl:2: not a JSON object"},
		{"a policy is required", []string{bad}, "usage: tiergate replay --config FILE"},
		{"a policy that does not load is refused", []string{"--config", "testdata/bad.yaml", bad}, `unknown action "blok"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, append([]string{"replay"}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 with %q", r.code, r.stderr, tc.want)
			}
		})
	}
}
