# syntax=docker/dockerfile:1
# tiergate: a static binary on a distroless, non-root base.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t tiergate .
#
# scripts/build-static.sh runs the same build command outside Docker, and CI
# checks that its output is static and starts.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN VERSION="${VERSION}" OUT=/out/tiergate scripts/build-static.sh

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tiergate /tiergate
# 65532 is distroless's nonroot user; the pod's securityContext also requires it.
USER 65532:65532
# ext_proc gRPC, WebSocket bridge, admin (metrics and probes).
EXPOSE 50051 8081 9464
ENTRYPOINT ["/tiergate"]
CMD ["serve"]
