package wsbridge

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/tiergate/tiergate/internal/foldedjson"
	"github.com/tiergate/tiergate/policy"
)

// FuzzSessionUpdateClaims checks the bridge's side of the invariant: a
// client frame that any reader the README names takes for a session.update
// naming a model is booked as a claim on that model, so that the frames
// after it are judged against it too. The readers: encoding/json's struct
// decode (case-insensitive, last match wins), encoding/json/v2 with
// case-insensitive names (also ignoring _ and -), gjson (first exact key)
// and a last-key-wins map.
func FuzzSessionUpdateClaims(f *testing.F) {
	for _, s := range []string{
		`{"type":"session.update","session":{"model":"gpt-5.5"}}`,
		`{"Type":"session.update","SESSION":{"Model":"gpt-5.5"}}`,
		`{"type":"session.update","session":{"model":"a","model":"b"}}`,
		`{"type":"session\u002eupdate","ſession":{"MODEL":"x"}}`,
		`{"t-y-p-e":"session.update","Session":{"m_o_d_e_l":"y"},"session":{"model":"z"}}`,
		`{"type":"response.create","session":{"model":"gpt-5.5"}}`,
		`{"type":" Session.Update","session":{"model":"gpt-5.5"}}`,
		`{"type":"\u017fession.UPDATE","session":{"model":"gpt-5.5"}}`,
		`{"type":"seßion.update","session":{"model":"gpt-5.5"}}`,
		`{"type":"SESSıON.update","session":{"model":"gpt-5.5"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if !json.Valid(frame) || !utf8.Valid(frame) {
			// The policy refuses it before readFrame runs (its scanner,
			// unlike json.Valid, also checks UTF-8).
			return
		}
		meta := readFrame(frame, false)
		for _, r := range sessionReaders {
			typ, model, ok := r.read(frame)
			if !ok || !policy.TypeIs(typ, "session.update") || model == "" {
				continue
			}
			if !meta.update || !slices.Contains(meta.claimed, model) {
				t.Fatalf("%s reads a session.update claiming %q; the bridge booked update=%v claims %q:\n%s",
					r.name, model, meta.update, meta.claimed, frame)
			}
		}
	})
}

var sessionReaders = []struct {
	name string
	read func([]byte) (typ, model string, ok bool)
}{
	{"encoding/json struct", func(b []byte) (string, string, bool) {
		var v struct {
			Type    string `json:"type"`
			Session struct {
				Model string `json:"model"`
			} `json:"session"`
		}
		err := json.Unmarshal(b, &v)
		return v.Type, v.Session.Model, err == nil
	}},
	{"encoding/json/v2 case-insensitive", func(b []byte) (string, string, bool) {
		top := foldedjson.Members(b)
		var typ, model string
		if json.Unmarshal(top["type"], &typ) != nil {
			return "", "", false
		}
		_ = json.Unmarshal(foldedjson.Members(top["session"])["model"], &model)
		return typ, model, true
	}},
	{"gjson", func(b []byte) (string, string, bool) {
		if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
			return "", "", false
		}
		typ, m := gjson.GetBytes(b, "type"), gjson.GetBytes(b, "session.model")
		return typ.Str, m.Str, typ.Type == gjson.String && m.Type == gjson.String
	}},
	{"last-key-wins map", func(b []byte) (string, string, bool) {
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) != nil {
			return "", "", false
		}
		var typ, model string
		var sess map[string]json.RawMessage
		_ = json.Unmarshal(top["type"], &typ)
		_ = json.Unmarshal(top["session"], &sess)
		_ = json.Unmarshal(sess["model"], &model)
		return typ, model, true
	}},
}
