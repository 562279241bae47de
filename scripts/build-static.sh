#!/usr/bin/env bash
# Builds tiergate as a static binary with its version stamped: the command
# the Dockerfile runs. OUT (default bin/tiergate) and VERSION (default: git
# describe, else devel) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
OUT=${OUT:-bin/tiergate}
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o "$OUT" ./cmd/tiergate
echo "$OUT"
