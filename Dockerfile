# syntax=docker/dockerfile:1
#
# One image for every mlrelease process; docker-compose.yml picks the binary per
# service with `command:`. Binaries (all in /usr/local/bin):
#   worker, gateway, mlrelease (the CLI, from ./starter), modelserver, loadgen.
# Demo data: model weights in /models, the evaluation set in /demo-data.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first so that a source change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && \
    go build -trimpath -ldflags="-s -w" -o /out/ \
        ./worker ./gateway ./examples/demo/modelserver ./examples/demo/loadgen && \
    go build -trimpath -ldflags="-s -w" -o /out/mlrelease ./starter
# The worker's SQLite registry lives on a named volume at /data; create the
# directory owned by the runtime user so a fresh volume inherits that owner.
RUN mkdir -p /rootfs/data

# Static binaries (CGO_ENABLED=0; the SQLite driver is pure Go), so distroless
# static is enough: no shell, no package manager, runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /rootfs/data /data
COPY examples/demo/models/ /models/
COPY examples/demo/data/ /demo/data/
# Plans name their evaluation set relative to themselves: /plans/../demo/data.
COPY examples/plans/ /plans/
USER nonroot:nonroot
EXPOSE 8080 8090 8101 8102
CMD ["worker"]
