#!/usr/bin/env bash
# Regenerates the Go code for proto/tiergate/v1 from its .proto files.
# Needs protoc (Debian: protobuf-compiler, which scripts/test installs) and
# protoc-gen-go, the version pinned as a tool in go.mod (the same as
# google.golang.org/protobuf there), so the output is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
plugin="$(go tool -n protoc-gen-go)"
protoc --plugin=protoc-gen-go="$plugin" --proto_path=proto --go_out=. --go_opt=module=github.com/tiergate/tiergate \
  proto/tiergate/v1/config.proto proto/tiergate/v1/usage.proto proto/tiergate/v1/policytest.proto
