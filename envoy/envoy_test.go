package envoy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names the configs and tiergate agree on.
const (
	groupHeader      = "x-tiergate-group"
	extProcFilter    = "envoy.filters.http.ext_proc"
	headerMutation   = "envoy.filters.http.header_mutation"
	routerFilter     = "envoy.filters.http.router"
	extProcCluster   = "tiergate_extproc"
	bridgeCluster    = "tiergate_ws"
	openAICluster    = "openai"
	anthropicCluster = "anthropic"
	systemCAs        = "/etc/ssl/certs/ca-certificates.crt"
)

// bootstrapFiles returns every Envoy config in this directory, so a new one is
// covered by every test below without being listed.
func bootstrapFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.yaml in envoy/")
	}
	return files
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBootstrapsAreValid(t *testing.T) {
	t.Parallel()
	for _, file := range bootstrapFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			if err := ValidateBootstrap(readFile(t, file)); err != nil {
				t.Errorf("ValidateBootstrap(%s):\n%v", file, err)
			}
		})
	}
}

// view is the part of a bootstrap the assertions read, with its Anys unpacked.
type view struct {
	bootstrap *bootstrapv3.Bootstrap
	listener  *listenerv3.Listener
	hcm       *hcmv3.HttpConnectionManager
	filters   []string // HTTP filter names, in order
	extProc   *extprocv3.ExternalProcessor
	vhost     *routev3.VirtualHost
	clusters  map[string]*clusterv3.Cluster
}

func loadView(t *testing.T, file string) *view {
	t.Helper()
	bs, err := decodeBootstrap(readFile(t, file))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	v := &view{bootstrap: bs, clusters: map[string]*clusterv3.Cluster{}}
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("%s: %d listeners, want 1", file, len(listeners))
	}
	v.listener = listeners[0]
	for _, chain := range v.listener.GetFilterChains() {
		for _, f := range chain.GetFilters() {
			if f.GetName() == "envoy.filters.network.http_connection_manager" {
				v.hcm = &hcmv3.HttpConnectionManager{}
				unpack(t, f.GetTypedConfig(), v.hcm)
			}
		}
	}
	if v.hcm == nil {
		t.Fatalf("%s: no http_connection_manager", file)
	}
	for _, f := range v.hcm.GetHttpFilters() {
		v.filters = append(v.filters, f.GetName())
		if f.GetName() == extProcFilter {
			v.extProc = &extprocv3.ExternalProcessor{}
			unpack(t, f.GetTypedConfig(), v.extProc)
		}
	}
	if v.extProc == nil {
		t.Fatalf("%s: no %s filter", file, extProcFilter)
	}
	vhosts := v.hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhosts) != 1 {
		t.Fatalf("%s: %d virtual hosts, want 1", file, len(vhosts))
	}
	v.vhost = vhosts[0]
	for _, c := range bs.GetStaticResources().GetClusters() {
		v.clusters[c.GetName()] = c
	}
	return v
}

func unpack(t *testing.T, a *anypb.Any, into proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(into); err != nil {
		t.Fatalf("unpacking %s: %v", a.GetTypeUrl(), err)
	}
}

// endpointHost returns the single address a cluster sends to.
func endpointHost(t *testing.T, c *clusterv3.Cluster) string {
	t.Helper()
	var hosts []string
	for _, e := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range e.GetLbEndpoints() {
			hosts = append(hosts, lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	if len(hosts) != 1 {
		t.Fatalf("cluster %s: endpoints %q, want exactly one", c.GetName(), hosts)
	}
	return hosts[0]
}

func atLeast(t *testing.T, what string, got time.Duration, want time.Duration) {
	t.Helper()
	if got < want {
		t.Errorf("%s = %v, want at least %v", what, got, want)
	}
}

func TestBootstrapSettings(t *testing.T) {
	t.Parallel()
	checks := []struct {
		name  string
		check func(t *testing.T, v *view)
	}{
		{"header_mutation is the first filter and strips the client's group header", func(t *testing.T, v *view) {
			if v.filters[0] != headerMutation {
				t.Fatalf("http_filters = %q, want %s first", v.filters, headerMutation)
			}
			hm := &headermutationv3.HeaderMutation{}
			unpack(t, v.hcm.GetHttpFilters()[0].GetTypedConfig(), hm)
			removed := false
			for _, m := range hm.GetMutations().GetRequestMutations() {
				removed = removed || strings.EqualFold(m.GetRemove(), groupHeader)
			}
			if !removed {
				t.Errorf("%s does not remove %s from requests", headerMutation, groupHeader)
			}
		}},
		{"ext_proc runs after header_mutation and the router runs last", func(t *testing.T, v *view) {
			i := slices.Index(v.filters, extProcFilter)
			if i < 1 || v.filters[len(v.filters)-1] != routerFilter {
				t.Errorf("http_filters = %q, want %s after %s and %s last", v.filters, extProcFilter, headerMutation, routerFilter)
			}
		}},
		{"ext_proc fails closed when tiergate cannot answer", func(t *testing.T, v *view) {
			if v.extProc.GetFailureModeAllow() {
				t.Error("failure_mode_allow = true: requests would reach the provider unpoliced")
			}
		}},
		{"ext_proc gives tiergate at least a second per message", func(t *testing.T, v *view) {
			msg := v.extProc.GetMessageTimeout()
			if msg == nil {
				t.Fatal("message_timeout unset (Envoy's default is 200ms)")
			}
			atLeast(t, "message_timeout", msg.AsDuration(), time.Second)
			atLeast(t, "max_message_timeout", v.extProc.GetMaxMessageTimeout().AsDuration(), msg.AsDuration())
		}},
		{"ext_proc lets tiergate turn off phases for paths it does not police", func(t *testing.T, v *view) {
			if !v.extProc.GetAllowModeOverride() {
				t.Error("allow_mode_override = false: tiergate's mode_override would be ignored")
			}
		}},
		{"ext_proc buffers the request body and streams the response", func(t *testing.T, v *view) {
			want := &extprocv3.ProcessingMode{
				RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
				ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
				RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
				ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
				RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
				ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
			}
			if got := v.extProc.GetProcessingMode(); !proto.Equal(got, want) {
				t.Errorf("processing_mode = {%v}, want {%v}", got, want)
			}
		}},
		{"ext_proc keeps the metadata tiergate writes in namespace tiergate", func(t *testing.T, v *view) {
			got := v.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()
			if !slices.Contains(got, "tiergate") {
				t.Errorf("metadata_options.receiving_namespaces.untyped = %q, want it to contain tiergate", got)
			}
		}},
		{"ext_proc reaches tiergate_extproc over HTTP/2", func(t *testing.T, v *view) {
			if got := v.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != extProcCluster {
				t.Fatalf("grpc_service.envoy_grpc.cluster_name = %q, want %s", got, extProcCluster)
			}
			c, ok := v.clusters[extProcCluster]
			if !ok {
				t.Fatalf("no cluster %s", extProcCluster)
			}
			opts := &upstreamhttpv3.HttpProtocolOptions{}
			unpack(t, c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], opts)
			if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Error("cluster is not explicitly HTTP/2: gRPC would be attempted over HTTP/1.1")
			}
		}},
		{"ext_proc may rewrite the headers tiergate rewrites and a refused mutation fails the request", func(t *testing.T, v *view) {
			rules := v.extProc.GetMutationRules()
			if rules.GetDisallowAll().GetValue() {
				t.Fatal("mutation_rules.disallow_all = true")
			}
			if re := rules.GetDisallowExpression().GetRegex(); re != "" {
				disallowed := regexp.MustCompile("^(?:" + re + ")$")
				for _, h := range []string{"content-length", "content-encoding", "anthropic-beta"} {
					if disallowed.MatchString(h) {
						t.Errorf("mutation_rules.disallow_expression %q forbids %s", re, h)
					}
				}
			}
			if !rules.GetDisallowIsError().GetValue() {
				t.Error("mutation_rules.disallow_is_error is not true: a refused rewrite would be skipped silently and the original header forwarded")
			}
		}},
		{"a request body of tens of MiB fits in the buffer", func(t *testing.T, v *view) {
			const want = 32 << 20
			if got := v.listener.GetPerConnectionBufferLimitBytes().GetValue(); got < want {
				t.Errorf("listener per_connection_buffer_limit_bytes = %d, want at least %d", got, want)
			}
		}},
		{"an HTTP/2 client's body may be as large as an HTTP/1.1 client's", func(t *testing.T, v *view) {
			// Envoy bounds an HTTP/2 request's buffer by the stream's window
			// (default 16 MiB), which real Envoy answers with 413 before the
			// listener's limit is reached (internal/e2e).
			limit := v.listener.GetPerConnectionBufferLimitBytes().GetValue()
			h2 := v.hcm.GetHttp2ProtocolOptions()
			if got := h2.GetInitialStreamWindowSize().GetValue(); got < limit {
				t.Errorf("http2_protocol_options.initial_stream_window_size = %d, want at least per_connection_buffer_limit_bytes (%d)", got, limit)
			}
			if got := h2.GetInitialConnectionWindowSize().GetValue(); got < limit {
				t.Errorf("http2_protocol_options.initial_connection_window_size = %d, want at least %d", got, limit)
			}
		}},
		{"no timeout cuts a long LLM stream short", func(t *testing.T, v *view) {
			if d := v.hcm.GetStreamIdleTimeout(); d == nil || (d.AsDuration() != 0 && d.AsDuration() < 10*time.Minute) {
				t.Errorf("stream_idle_timeout = %v, want at least 10m (Envoy's default is 5m)", d.AsDuration())
			}
			for _, r := range v.vhost.GetRoutes() {
				ra := r.GetRoute()
				if ra.GetTimeout() == nil || ra.GetTimeout().AsDuration() != 0 {
					t.Errorf("route %s: timeout = %v, want 0s (Envoy's default is 15s)", r.GetName(), ra.GetTimeout().AsDuration())
				}
				if ra.GetCluster() == bridgeCluster {
					// The bridge's own idle timeout (15 min by default) must fire first.
					atLeast(t, "route "+r.GetName()+" idle_timeout", ra.GetIdleTimeout().AsDuration(), 30*time.Minute)
				}
			}
		}},
		{"x-request-id is generated", func(t *testing.T, v *view) {
			if g := v.hcm.GetGenerateRequestId(); g != nil && !g.GetValue() {
				t.Error("generate_request_id = false: usage records would lose their request_id")
			}
		}},
		{"WebSocket upgrades are allowed by the connection manager", func(t *testing.T, v *view) {
			for _, u := range v.hcm.GetUpgradeConfigs() {
				if strings.EqualFold(u.GetUpgradeType(), "websocket") && (u.GetEnabled() == nil || u.GetEnabled().GetValue()) {
					return
				}
			}
			t.Error("http_connection_manager.upgrade_configs has no enabled websocket entry")
		}},
		{"every cluster a route or ext_proc names exists", func(t *testing.T, v *view) {
			names := []string{v.extProc.GetGrpcService().GetEnvoyGrpc().GetClusterName()}
			for _, r := range v.vhost.GetRoutes() {
				names = append(names, r.GetRoute().GetCluster())
			}
			for _, n := range names {
				if _, ok := v.clusters[n]; !ok {
					t.Errorf("cluster %q is named but not defined", n)
				}
			}
		}},
		{"provider routes send the provider's Host and TLS checks the provider's certificate", func(t *testing.T, v *view) {
			for _, r := range v.vhost.GetRoutes() {
				ra := r.GetRoute()
				if strings.HasPrefix(ra.GetCluster(), "tiergate_") {
					continue
				}
				c := v.clusters[ra.GetCluster()]
				host := endpointHost(t, c)
				if got := ra.GetHostRewriteLiteral(); got != host {
					t.Errorf("route %s: host_rewrite_literal = %q, want %q", r.GetName(), got, host)
				}
				if got := c.GetTransportSocket().GetName(); got != "envoy.transport_sockets.tls" {
					t.Fatalf("cluster %s: transport_socket %q, want TLS", c.GetName(), got)
				}
				tls := &tlsv3.UpstreamTlsContext{}
				unpack(t, c.GetTransportSocket().GetTypedConfig(), tls)
				if tls.GetSni() != host {
					t.Errorf("cluster %s: sni = %q, want %q", c.GetName(), tls.GetSni(), host)
				}
				vc := tls.GetCommonTlsContext().GetValidationContext()
				if got := vc.GetTrustedCa().GetFilename(); got != systemCAs {
					t.Errorf("cluster %s: trusted_ca = %q, want %s", c.GetName(), got, systemCAs)
				}
				sans := vc.GetMatchTypedSubjectAltNames()
				if len(sans) == 0 || sans[0].GetMatcher().GetExact() != host {
					t.Errorf("cluster %s: match_typed_subject_alt_names = %v, want DNS %s", c.GetName(), sans, host)
				}
			}
		}},
		{"no deprecated field or enum value is used", func(t *testing.T, v *view) {
			err := walk(v.bootstrap.ProtoReflect(), "", true, func(path string, m protoreflect.Message, _ bool) error {
				m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
					if fd.Options().(*descriptorpb.FieldOptions).GetDeprecated() {
						t.Errorf("%s: deprecated field", joinPath(path, string(fd.Name())))
					}
					if fd.Kind() == protoreflect.EnumKind && !fd.IsList() && !fd.IsMap() {
						if ev := fd.Enum().Values().ByNumber(val.Enum()); ev != nil && ev.Options().(*descriptorpb.EnumValueOptions).GetDeprecated() {
							t.Errorf("%s: deprecated value %s", joinPath(path, string(fd.Name())), ev.Name())
						}
					}
					return true
				})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, file := range bootstrapFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			v := loadView(t, file)
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) { c.check(t, v) })
			}
		})
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	const ws = "websocket"
	cases := []struct {
		name    string
		path    string
		upgrade string // the Upgrade header; "" for none
		cluster string // "" when no route matches
		// What follows from the cluster, and is asserted for every case: ext_proc
		// and the group header stay away from the bridge, WebSocket stays away from
		// the providers.
	}{
		{"a plain POST /v1/responses goes to OpenAI", "/v1/responses", "", openAICluster},
		{"a WebSocket upgrade on /v1/responses goes to the bridge", "/v1/responses", ws, bridgeCluster},
		{"the upgrade header matches in any letter case", "/v1/responses", "WebSocket", bridgeCluster},
		{"a Realtime upgrade with ?model= goes to the bridge", "/v1/realtime?model=gpt-realtime", ws, bridgeCluster},
		{"Realtime's HTTP endpoints go to OpenAI", "/v1/realtime/client_secrets", "", openAICluster},
		{"responses compaction goes to OpenAI", "/v1/responses/compact", "", openAICluster},
		{"a path that only starts like /v1/responses is not the bridge's", "/v1/responsesx", ws, openAICluster},
		{"an upgrade on a provider path goes nowhere near the bridge", "/v1/chat/completions", ws, openAICluster},
		{"Chat Completions goes to OpenAI", "/v1/chat/completions", "", openAICluster},
		{"Anthropic messages go to Anthropic", "/v1/messages", "", anthropicCluster},
		{"Anthropic token counting goes to Anthropic", "/v1/messages/count_tokens", "", anthropicCluster},
		{"a path outside /v1/ matches no route", "/admin", "", ""},
	}
	for _, file := range bootstrapFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			v := loadView(t, file)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					headers := map[string]string{}
					if c.upgrade != "" {
						headers["upgrade"] = c.upgrade
						headers["connection"] = "Upgrade"
					}
					r := routeFor(t, v.vhost, c.path, headers)
					if r == nil || c.cluster == "" {
						if r != nil || c.cluster != "" {
							t.Fatalf("route = %v, want cluster %q", r, c.cluster)
						}
						return
					}
					if got := r.GetRoute().GetCluster(); got != c.cluster {
						t.Fatalf("cluster = %q (route %s), want %q", got, r.GetName(), c.cluster)
					}
					toBridge := c.cluster == bridgeCluster
					if on := extProcOn(t, v.vhost, r); on == toBridge {
						t.Errorf("route %s: ext_proc on = %v, want %v", r.GetName(), on, !toBridge)
					}
					if ws := websocketAllowed(v.hcm, r); ws != toBridge {
						t.Errorf("route %s: websocket upgrade allowed = %v, want %v", r.GetName(), ws, toBridge)
					}
					if removed := removesGroupHeader(v.vhost, r); removed == toBridge {
						t.Errorf("route %s: %s removed upstream = %v, want %v (the bridge reads it; providers must not see it)",
							r.GetName(), groupHeader, removed, !toBridge)
					}
				})
			}
		})
	}
}

// routeFor returns the route of vh that Envoy picks for a request: the first
// whose match accepts path and headers (lower-case names). It implements only
// the matchers the configs use and fails the test on any other, so that the
// simulation cannot silently misjudge a route it does not understand.
func routeFor(t *testing.T, vh *routev3.VirtualHost, path string, headers map[string]string) *routev3.Route {
	t.Helper()
	p, _, _ := strings.Cut(path, "?")
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		if m.GetCaseSensitive() != nil || len(m.GetQueryParameters()) > 0 || m.GetRuntimeFraction() != nil ||
			m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 || m.GetFilterState() != nil {
			t.Fatalf("route %s: a matcher the test does not simulate: %v", r.GetName(), m)
		}
		var pathOK bool
		switch ps := m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_Prefix:
			pathOK = strings.HasPrefix(p, ps.Prefix)
		case *routev3.RouteMatch_Path:
			pathOK = p == ps.Path
		case *routev3.RouteMatch_PathSeparatedPrefix:
			pathOK = p == ps.PathSeparatedPrefix || strings.HasPrefix(p, ps.PathSeparatedPrefix+"/")
		default:
			t.Fatalf("route %s: path matcher %T is not simulated", r.GetName(), ps)
		}
		if pathOK && headersMatch(t, r, headers) {
			return r
		}
	}
	return nil
}

func headersMatch(t *testing.T, r *routev3.Route, headers map[string]string) bool {
	t.Helper()
	for _, h := range r.GetMatch().GetHeaders() {
		value, present := headers[strings.ToLower(h.GetName())]
		var ok bool
		switch spec := h.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_PresentMatch:
			ok = present == spec.PresentMatch
		case *routev3.HeaderMatcher_StringMatch:
			sm := spec.StringMatch
			v, want := value, ""
			switch {
			case sm.GetExact() != "":
				want = sm.GetExact()
			case sm.GetPrefix() != "":
				want = sm.GetPrefix()
			case sm.GetContains() != "":
				want = sm.GetContains()
			default:
				t.Fatalf("route %s: string matcher %v is not simulated", r.GetName(), sm)
			}
			if sm.GetIgnoreCase() {
				v, want = strings.ToLower(v), strings.ToLower(want)
			}
			switch {
			case sm.GetExact() != "":
				ok = present && v == want
			case sm.GetPrefix() != "":
				ok = present && strings.HasPrefix(v, want)
			default:
				ok = present && strings.Contains(v, want)
			}
		default:
			t.Fatalf("route %s: header matcher %T is not simulated", r.GetName(), spec)
		}
		if ok == h.GetInvertMatch() {
			return false
		}
	}
	return true
}

// extProcOn reports whether ext_proc runs for route r: the most specific
// per-filter config decides.
func extProcOn(t *testing.T, vh *routev3.VirtualHost, r *routev3.Route) bool {
	t.Helper()
	for _, cfgs := range []map[string]*anypb.Any{r.GetTypedPerFilterConfig(), vh.GetTypedPerFilterConfig()} {
		if a, ok := cfgs[extProcFilter]; ok {
			per := &extprocv3.ExtProcPerRoute{}
			unpack(t, a, per)
			return !per.GetDisabled()
		}
	}
	return true
}

// websocketAllowed reports whether Envoy accepts a WebSocket upgrade on route
// r: the route's upgrade_configs override the connection manager's.
func websocketAllowed(hcm *hcmv3.HttpConnectionManager, r *routev3.Route) bool {
	for _, u := range r.GetRoute().GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return u.GetEnabled() == nil || u.GetEnabled().GetValue()
		}
	}
	for _, u := range hcm.GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), "websocket") {
			return u.GetEnabled() == nil || u.GetEnabled().GetValue()
		}
	}
	return false
}

func removesGroupHeader(vh *routev3.VirtualHost, r *routev3.Route) bool {
	return slices.ContainsFunc(append(r.GetRequestHeadersToRemove(), vh.GetRequestHeadersToRemove()...),
		func(h string) bool { return strings.EqualFold(h, groupHeader) })
}

// The two bootstraps must stay the same config reached two ways.
func TestUnixSocketVariantDiffersOnlyInExtProcAddress(t *testing.T) {
	t.Parallel()
	tcp := loadView(t, "envoy.yaml")
	unix := loadView(t, "envoy-unix-socket.yaml")
	eps := unix.clusters[extProcCluster].GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("%s: want exactly one endpoint, got %v", extProcCluster, eps)
	}
	pipe := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe()
	if got, want := pipe.GetPath(), "/var/run/tiergate/extproc.sock"; got != want {
		t.Errorf("%s pipe path = %q, want %q", extProcCluster, got, want)
	}
	for _, v := range []*view{tcp, unix} {
		v.clusters[extProcCluster].LoadAssignment = nil
	}
	if !proto.Equal(tcp.bootstrap, unix.bootstrap) {
		t.Error("envoy.yaml and envoy-unix-socket.yaml differ beyond the tiergate_extproc address; change both together")
	}
}

func TestValidateBootstrapRejectsBrokenFiles(t *testing.T) {
	t.Parallel()
	const extProc = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config"
	type brokenCase struct {
		file string
		want []string // substrings of the error: the place, then what is wrong there
		// anyOnly: the bootstrap decodes and its own ValidateAll passes; only
		// validating inside the Anys finds the problem.
		anyOnly bool
	}
	cases := []brokenCase{
		{"unknown-field.yaml", []string{"static_resources.listeners[0].per_conection_buffer_limit_bytes: unknown field"}, false},
		{"enum-typo.yaml", []string{extProc + ".processing_mode.request_body_mode: unknown value \"BUFFERD\"", "BUFFERED"}, false},
		{"unknown-type-url.yaml", []string{
			"static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[2].typed_config: unknown type",
			"router.v3.Routr",
		}, false},
		{"bad-duration.yaml", []string{extProc + ".message_timeout: invalid google.protobuf.Duration"}, false},
		{"grpc-service-without-target.yaml", []string{extProc + ".grpc_service.target_specifier: value is required"}, true},
		{"negative-message-timeout.yaml", []string{extProc + ".message_timeout: value must be inside range"}, true},
		{"per-route-any-not-disabled.yaml", []string{
			"static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0]" +
				".typed_per_filter_config[envoy.filters.http.ext_proc].disabled: value must equal true",
		}, true},
		{"port-out-of-range.yaml", []string{
			"static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: " +
				"value must be less than or equal to 65535",
		}, false},
		{"yaml-syntax.yaml", []string{"yaml: line 36:"}, false},
	}

	t.Run("the base of the broken files is valid", func(t *testing.T) {
		t.Parallel()
		if err := ValidateBootstrap(readFile(t, "testdata/minimal.yaml")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("every broken file has a case", func(t *testing.T) {
		t.Parallel()
		files, _ := filepath.Glob("testdata/broken/*.yaml")
		for _, f := range files {
			if !slices.ContainsFunc(cases, func(c brokenCase) bool { return c.file == filepath.Base(f) }) {
				t.Errorf("%s has no case in this test", f)
			}
		}
	})
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join("testdata", "broken", c.file)
			b := readFile(t, path)
			if diff := changedLines(t, readFile(t, "testdata/minimal.yaml"), b); diff != 1 {
				t.Errorf("%s changes %d lines of testdata/minimal.yaml, want exactly 1", path, diff)
			}
			err := ValidateBootstrap(b)
			if err == nil {
				t.Fatal("ValidateBootstrap accepted it")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if c.anyOnly {
				bs, derr := decodeBootstrap(b)
				if derr != nil {
					t.Fatalf("decode: %v", derr)
				}
				if verr := bs.ValidateAll(); verr != nil {
					t.Errorf("plain ValidateAll already rejects it, so the case does not test the Any walk: %v", verr)
				}
			}
		})
	}
}

// changedLines counts the lines (comments aside) that differ between two
// files of the same length; a different length counts as many.
func changedLines(t *testing.T, a, b []byte) int {
	t.Helper()
	strip := func(b []byte) []string {
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#") {
				out = append(out, l)
			}
		}
		return out
	}
	la, lb := strip(a), strip(b)
	if len(la) != len(lb) {
		return max(len(la), len(lb))
	}
	n := 0
	for i := range la {
		if la[i] != lb[i] {
			n++
		}
	}
	return n
}

func TestPodConfigHelpers(t *testing.T) {
	pod, err := os.ReadFile("../k8s/base/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile("envoy-unix-socket.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateBootstrap(pod); err != nil {
		t.Fatalf("k8s/base/envoy.yaml: %v", err)
	}
	if p, err := ExtProcSocketPath(pod); err != nil || p != "/var/run/tiergate/extproc.sock" {
		t.Fatalf("ExtProcSocketPath = %q, %v", p, err)
	}
	if a, err := ClusterAddress(pod, "tiergate_ws"); err != nil || a != "127.0.0.1:8081" {
		t.Fatalf("ClusterAddress(tiergate_ws) = %q, %v", a, err)
	}
	if same, err := SameExceptPodListener(pod, base); err != nil || !same {
		t.Fatalf("pod config drifted from envoy-unix-socket.yaml: %v %v", same, err)
	}
	tcp, _ := os.ReadFile("envoy.yaml")
	if same, _ := SameExceptPodListener(pod, tcp); same {
		t.Fatal("SameExceptPodListener must tell the TCP config apart")
	}
	if _, err := ExtProcSocketPath(tcp); err == nil {
		t.Fatal("ExtProcSocketPath accepted a TCP cluster")
	}
}
