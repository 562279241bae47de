#!/usr/bin/env bash
# Regenerates the Go code for proto/tiergate/v1 from its .proto files.
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-go pinned to the
# google.golang.org/protobuf version in go.mod, which .ci/run installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(go env GOPATH)/bin:$PATH"
protoc --proto_path=proto --go_out=. --go_opt=module=github.com/tiergate/tiergate \
  proto/tiergate/v1/config.proto proto/tiergate/v1/usage.proto proto/tiergate/v1/policytest.proto
