# mlrelease: `make run` brings up the local stack and a demo release; `make test`
# passes the whole suite. Both install what they need on a fresh machine.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TEMPORAL_CLI_VERSION := v1.5.1
export PATH := $(BIN):$(PATH)

.PHONY: run test build temporal prometheus bench vet clean

## run: the local stack (Temporal dev server + Web UI, Prometheus, gateway, demo models,
## load, worker) and a release of the demo model; Ctrl-C stops it all.
run: build temporal prometheus
	$(BIN)/localstack

## test: every test, including the end-to-end release on the real dev server and Prometheus.
test: temporal prometheus
	$(GO) vet ./...
	$(GO) test -p 2 -count=1 -timeout 30m ./...

## build: our binaries into bin/.
build:
	$(GO) build -o $(BIN)/ ./worker ./gateway ./examples/demo/modelserver ./examples/demo/loadgen ./internal/stack/localstack
	$(GO) build -o $(BIN)/mlrelease ./starter

## temporal: the Temporal CLI (dev server and Web UI), built once from source into bin/.
temporal:
	@if command -v temporal >/dev/null; then exit 0; fi; \
	echo "building the Temporal CLI $(TEMPORAL_CLI_VERSION) into bin/ (once; about 4 minutes)"; \
	GOBIN=$(BIN) $(GO) install github.com/temporalio/cli/cmd/temporal@$(TEMPORAL_CLI_VERSION)

## prometheus: Prometheus on PATH or in bin/; installed from Debian's packages when we can.
prometheus:
	@if command -v prometheus >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Prometheus from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "Prometheus not found. Install it (Debian/Ubuntu: sudo apt-get install prometheus;" \
			"macOS: brew install prometheus) or put its binary in bin/prometheus, then run make again." >&2; \
		exit 1; \
	fi

## bench: the benchmarks whose figures bench/README.md records.
bench: temporal prometheus
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf .mlrelease
