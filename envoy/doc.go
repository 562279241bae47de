// Package envoy holds the Envoy bootstrap configs that run beside tiergate
// (envoy.yaml over TCP, envoy-unix-socket.yaml with ext_proc over a Unix socket)
// and the check that validates them against Envoy's own protos.
//
// [ValidateBootstrap] is a plain function of bytes so that other checks (the
// Envoy config embedded in the Kubernetes ConfigMap) can reuse it. The package
// knows nothing of tiergate's policy, gRPC server or WebSocket bridge: it owns
// the wiring contract only (which filter, which route, which cluster), and the
// tests in this directory assert that contract.
package envoy
