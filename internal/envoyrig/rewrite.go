package envoyrig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// IdentityFilterName names the filter [Rewrite] inserts when
// Options.IdentityHeader is set, so that tests can find (and remove) it.
const IdentityFilterName = "envoyrig.test_identity"

// IngressListener names the shipped bootstraps' client-facing listener.
const IngressListener = "llm_ingress"

// GroupHeader is the header the shipped bootstraps strip from clients and
// tiergate reads the caller's group from (identity.group_header).
const GroupHeader = "x-tiergate-group"

// TLSFiles names a certificate and its key, both PEM files.
type TLSFiles struct {
	Cert, Key string
}

// Options say what to change. A zero field changes nothing.
type Options struct {
	// Admin is the address ("host:port") Envoy's admin API binds instead.
	// A cluster that points at the old admin address (the pod's
	// envoy_admin) is pointed at the new one too.
	Admin string
	// Listeners maps a listener's name to the address ("host:port") it
	// binds instead.
	Listeners map[string]string
	// Clusters maps a cluster's name to its single endpoint instead:
	// "host:port", or "unix:///path" for a Unix socket.
	Clusters map[string]string
	// UpstreamCA is a PEM file of CAs that replaces the system CAs every
	// upstream TLS context trusts. The SNI and the names checked stay.
	UpstreamCA string
	// DownstreamTLS, when set, makes the client-facing listener
	// (IngressListener) serve TLS, HTTP/2 and HTTP/1.1 by ALPN, with this
	// certificate. The pod's probe listener stays plain, as the kubelet
	// expects.
	DownstreamTLS *TLSFiles
	// IdentityHeader, when set, inserts a header_mutation filter right
	// after the filter that strips the group header: it sets the group
	// header from this request header, standing in for the
	// authentication filter an operator adds there.
	IdentityHeader string
	// WithoutExtProc removes the ext_proc filter from every connection
	// manager: Envoy alone, the floor a benchmark measures ext_proc
	// servers against.
	WithoutExtProc bool
	// PlainUpstreams makes every cluster that reaches its upstream over TLS
	// speak plain HTTP/1.1 instead (no transport socket, no ALPN), for a
	// benchmark's local stand-in whose TLS would only add the same noise
	// to every configuration measured.
	PlainUpstreams bool
	// ExactBalance makes the client-facing listener (IngressListener)
	// spread its connections evenly over Envoy's workers. A benchmark
	// opens only a few connections, and left to the kernel they land on
	// one worker in some rounds and on both in others, which moves a
	// round's throughput and CPU per request by a third whatever the
	// ext_proc server; with exact balance every round splits them alike.
	ExactBalance bool
}

// extProcFilter is the ext_proc HTTP filter's name in the bootstraps.
const extProcFilter = "envoy.filters.http.ext_proc"

// Rewrite returns the bootstrap yamlBytes with the changes o asks for, as
// JSON (which Envoy reads as YAML). It fails if something o names is not
// in the bootstrap, so a renamed listener or cluster cannot go unnoticed.
func Rewrite(yamlBytes []byte, o Options) ([]byte, error) {
	tree, err := decodeTree(yamlBytes)
	if err != nil {
		return nil, err
	}
	if err := rewriteTree(tree, o); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(tree, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the rewritten bootstrap: %w", err)
	}
	return out, nil
}

func decodeTree(yamlBytes []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSON(yamlBytes)
	if err != nil {
		return nil, fmt.Errorf("read the bootstrap: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var tree map[string]any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("read the bootstrap: %w", err)
	}
	return tree, nil
}

func rewriteTree(tree map[string]any, o Options) error {
	clusters := list(obj(tree, "static_resources"), "clusters")
	if o.Admin != "" {
		sa := obj(tree, "admin", "address", "socket_address")
		if sa == nil {
			return errors.New("the bootstrap has no admin socket address")
		}
		old := joinHostPort(sa)
		if err := setSocketAddress(sa, o.Admin); err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		// A cluster that reaches the admin API (the pod's envoy_admin) follows it.
		for _, c := range clusters {
			if ep := clusterSocketAddress(c); ep != nil && joinHostPort(ep) == old {
				if err := setSocketAddress(ep, o.Admin); err != nil {
					return err
				}
			}
		}
	}
	listeners := list(obj(tree, "static_resources"), "listeners")
	for name, addr := range o.Listeners {
		l := byName(listeners, name)
		if l == nil {
			return fmt.Errorf("no listener %s", name)
		}
		sa := obj(l, "address", "socket_address")
		if sa == nil {
			return fmt.Errorf("listener %s has no socket address", name)
		}
		if err := setSocketAddress(sa, addr); err != nil {
			return fmt.Errorf("listener %s: %w", name, err)
		}
	}
	if o.ExactBalance {
		l := byName(listeners, IngressListener)
		if l == nil {
			return fmt.Errorf("no listener %s to balance", IngressListener)
		}
		l["connection_balance_config"] = map[string]any{"exact_balance": map[string]any{}}
	}
	if o.DownstreamTLS != nil {
		l := byName(listeners, IngressListener)
		if l == nil {
			return fmt.Errorf("no listener %s to serve TLS", IngressListener)
		}
		for _, fc := range list(l, "filter_chains") {
			fc["transport_socket"] = downstreamTLS(*o.DownstreamTLS)
		}
	}
	for name, ep := range o.Clusters {
		c := byName(clusters, name)
		if c == nil {
			return fmt.Errorf("no cluster %s", name)
		}
		if err := setClusterEndpoint(c, ep); err != nil {
			return fmt.Errorf("cluster %s: %w", name, err)
		}
	}
	if o.UpstreamCA != "" {
		for _, c := range clusters {
			ts := obj(c, "transport_socket", "typed_config", "common_tls_context", "validation_context")
			if ts == nil {
				continue
			}
			ts["trusted_ca"] = map[string]any{"filename": o.UpstreamCA}
		}
	}
	if o.WithoutExtProc {
		if n := removeFilter(listeners, extProcFilter); n == 0 {
			return errors.New("no connection manager runs ext_proc: nothing to remove")
		}
	}
	if o.PlainUpstreams {
		n := 0
		for _, c := range clusters {
			if obj(c, "transport_socket", "typed_config", "common_tls_context") == nil {
				continue
			}
			delete(c, "transport_socket")
			// auto_config picks the protocol by ALPN, which plain TCP lacks.
			c["typed_extension_protocol_options"] = map[string]any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
					"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					"explicit_http_config": map[string]any{"http_protocol_options": map[string]any{}},
				},
			}
			n++
		}
		if n == 0 {
			return errors.New("no cluster reaches its upstream over TLS: nothing to make plain")
		}
	}
	if o.IdentityHeader != "" {
		n := 0
		for _, l := range listeners {
			for _, fc := range list(l, "filter_chains") {
				for _, f := range list(fc, "filters") {
					hcm := obj(f, "typed_config")
					if hcm == nil {
						continue
					}
					if inserted := insertIdentity(hcm, o.IdentityHeader); inserted {
						n++
					}
				}
			}
		}
		if n == 0 {
			return fmt.Errorf("no filter removes %s: nowhere to insert the test identity", GroupHeader)
		}
	}
	return nil
}

// removeFilter drops the HTTP filter called name from every connection
// manager of listeners and returns how many it dropped. Per-route settings
// for it stay: Envoy ignores those of a filter that is not in the chain.
func removeFilter(listeners []node, name string) int {
	n := 0
	for _, l := range listeners {
		for _, fc := range list(l, "filter_chains") {
			for _, f := range list(fc, "filters") {
				hcm := obj(f, "typed_config")
				filters, ok := hcm["http_filters"].([]any)
				if !ok {
					continue
				}
				kept := make([]any, 0, len(filters))
				for _, hf := range filters {
					if m, _ := hf.(map[string]any); m["name"] == name {
						n++
						continue
					}
					kept = append(kept, hf)
				}
				hcm["http_filters"] = kept
			}
		}
	}
	return n
}

// insertIdentity puts the identity stand-in right after the filter that
// removes the group header, in one connection manager's chain.
func insertIdentity(hcm node, header string) bool {
	filters, ok := hcm["http_filters"].([]any)
	if !ok {
		return false
	}
	for i, f := range filters {
		fm, _ := f.(map[string]any)
		if !removesGroupHeader(fm) {
			continue
		}
		identity := map[string]any{
			"name": IdentityFilterName,
			"typed_config": map[string]any{
				"@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
				"mutations": map[string]any{
					"request_mutations": []any{map[string]any{
						"append": map[string]any{
							"header":           map[string]any{"key": GroupHeader, "value": "%REQ(" + header + ")%"},
							"append_action":    "OVERWRITE_IF_EXISTS_OR_ADD",
							"keep_empty_value": false,
						},
					}},
				},
			},
		}
		out := make([]any, 0, len(filters)+1)
		out = append(out, filters[:i+1]...)
		out = append(out, identity)
		out = append(out, filters[i+1:]...)
		hcm["http_filters"] = out
		return true
	}
	return false
}

func removesGroupHeader(f node) bool {
	for _, m := range list(obj(f, "typed_config", "mutations"), "request_mutations") {
		if m["remove"] == GroupHeader {
			return true
		}
	}
	return false
}

func downstreamTLS(files TLSFiles) map[string]any {
	return map[string]any{
		"name": "envoy.transport_sockets.tls",
		"typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
			"common_tls_context": map[string]any{
				"alpn_protocols": []any{"h2", "http/1.1"},
				"tls_certificates": []any{map[string]any{
					"certificate_chain": map[string]any{"filename": files.Cert},
					"private_key":       map[string]any{"filename": files.Key},
				}},
			},
		},
	}
}

func clusterSocketAddress(c node) node {
	eps := list(obj(c, "load_assignment"), "endpoints")
	if len(eps) != 1 {
		return nil
	}
	lbs := list(eps[0], "lb_endpoints")
	if len(lbs) != 1 {
		return nil
	}
	return obj(lbs[0], "endpoint", "address", "socket_address")
}

func setClusterEndpoint(c node, ep string) error {
	eps := list(obj(c, "load_assignment"), "endpoints")
	if len(eps) != 1 || len(list(eps[0], "lb_endpoints")) != 1 {
		return errors.New("want exactly one endpoint")
	}
	addr := obj(list(eps[0], "lb_endpoints")[0], "endpoint", "address")
	if addr == nil {
		return errors.New("the endpoint has no address")
	}
	if path, ok := strings.CutPrefix(ep, "unix://"); ok {
		delete(addr, "socket_address")
		addr["pipe"] = map[string]any{"path": path}
		return nil
	}
	delete(addr, "pipe")
	sa, _ := addr["socket_address"].(map[string]any)
	if sa == nil {
		sa = map[string]any{}
		addr["socket_address"] = sa
	}
	return setSocketAddress(sa, ep)
}

func setSocketAddress(sa node, hostPort string) error {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("address %q: %w", hostPort, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("address %q: port: %w", hostPort, err)
	}
	sa["address"] = host
	sa["port_value"] = json.Number(strconv.FormatUint(p, 10))
	return nil
}

func joinHostPort(sa node) string {
	return net.JoinHostPort(fmt.Sprint(sa["address"]), fmt.Sprint(sa["port_value"]))
}

// node is one mapping of the bootstrap's JSON tree.
type node = map[string]any

// obj follows keys through nested mappings; nil if one is missing.
func obj(n node, keys ...string) node {
	for _, k := range keys {
		if n == nil {
			return nil
		}
		n, _ = n[k].(map[string]any)
	}
	return n
}

// list returns the mappings of the list at key (nil if there is none).
func list(n node, key string) []node {
	if n == nil {
		return nil
	}
	items, _ := n[key].([]any)
	out := make([]node, 0, len(items))
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func byName(items []node, name string) node {
	for _, it := range items {
		if it["name"] == name {
			return it
		}
	}
	return nil
}
