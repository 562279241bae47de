// Package check validates tiergate's Kubernetes manifests offline: every
// kustomization renders, every object decodes strictly against
// client-go's built-in schema (and the Prometheus Operator's types for its
// objects), and the objects agree with each other and with tiergate.
//
// It is a module of its own so that client-go and the operator's API types
// stay out of tiergate's main module.
package check
