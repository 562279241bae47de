package foldedjson

import (
	"encoding/json"
	"testing"
)

func TestMembersKeepTheLastMemberOfEachFoldedName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, doc, key string
		want           string // "" for absent
	}{
		{"an exact name is found", `{"service_tier":"a"}`, "servicetier", `"a"`},
		{"case, '_' and '-' do not matter", `{"Service-Tier":"a"}`, "servicetier", `"a"`},
		{"the long s folds to s", `{"ſervice_tier":"a"}`, "servicetier", `"a"`},
		{"the Kelvin sign folds to k", `{"\u212aey":"a"}`, "key", `"a"`},
		{"the last of two spellings wins", `{"service_tier":"a","SERVICE_TIER":"b"}`, "servicetier", `"b"`},
		{"an escaped name is read unescaped", `{"\u0073ervice_tier":"a"}`, "servicetier", `"a"`},
		{"another name is not a match", `{"service_tiers":"a"}`, "servicetier", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := Members([]byte(c.doc))
			if m == nil {
				t.Fatalf("Members(%s) = nil", c.doc)
			}
			if got := string(m[c.key]); got != c.want {
				t.Errorf("Members(%s)[%q] = %s, want %s", c.doc, c.key, got, c.want)
			}
		})
	}
}

func TestMembersOfWhatIsNotAnObjectAreNil(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{`[1]`, `"x"`, `{"a":`, ``, `{"a" 1}`} {
		if m := Members([]byte(doc)); m != nil {
			t.Errorf("Members(%q) = %v, want nil", doc, m)
		}
	}
	var raw json.RawMessage
	if m := Members(raw); m != nil {
		t.Errorf("Members(nil) = %v, want nil", m)
	}
}
