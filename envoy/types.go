package envoy

// Blank imports register Envoy's extension types with the protobuf global
// registry, so that a google.protobuf.Any naming one of them can be resolved,
// decoded and validated. A type that is not listed here is reported as unknown
// even if Envoy knows it; add its package here when a config starts using it.
import (
	// Access logs: stdout/stderr (in the bootstraps) and file.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	// Authentication placeholders named in the bootstraps' comments: whichever an
	// operator enables to set the group header from a verified identity.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	// The HTTP filter chain: strip the group header, call tiergate, route.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	// The pod's probe listener (k8s/base/envoy.yaml): 503 once Envoy drains.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	// The listener's only network filter.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	// Overload manager: the downstream connection limit.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	// TLS to the providers.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	// Per-cluster HTTP protocol: HTTP/2 to ext_proc, HTTP/1.1 to the bridge, ALPN to the providers.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)
