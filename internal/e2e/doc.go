// Package e2e tests tiergate through real Envoy: the pinned Envoy binary
// (internal/envoyrig, found through $TIERGATE_ENVOY, which scripts/test
// sets) runs each shipped bootstrap (envoy/envoy.yaml, the Unix-socket
// variant and the pod's k8s/base/envoy.yaml), rewritten by envoyrig only
// where it must be to run here, in front of a tiergate binary built without
// the race detector and fake OpenAI and Anthropic upstreams.
//
// The package holds tests only. A missing or wrong Envoy fails them; it
// never skips them.
package e2e
