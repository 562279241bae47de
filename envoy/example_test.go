package envoy_test

import (
	"fmt"

	"github.com/tiergate/tiergate/envoy"
)

func ExampleValidateBootstrap() {
	err := envoy.ValidateBootstrap([]byte(`
static_resources:
  clusters:
  - name: tiergate_extproc
    conect_timeout: 1s
    typ: STATIC
`))
	fmt.Println(err)
	// Output:
	// static_resources.clusters[0].conect_timeout: unknown field in envoy.config.cluster.v3.Cluster
	// static_resources.clusters[0].typ: unknown field in envoy.config.cluster.v3.Cluster
}

// A filter config is a google.protobuf.Any, whose content the bootstrap's own
// validation does not see; ValidateBootstrap checks it, at any depth.
func ExampleValidateBootstrap_insideAny() {
	err := envoy.ValidateBootstrap([]byte(`
static_resources:
  listeners:
  - address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config: {}
          http_filters:
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {envoy_grpc: {cluster_name: tiergate_extproc}}
              message_timeout: 7200s
`))
	fmt.Println(err)
	// Output:
	// static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.message_timeout: value must be inside range [0s, 1h0m0s]
}
