# mlrelease: `make run` brings up the local stack and a demo release; `make test`
# passes the whole suite. Both install what they need on a fresh machine.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TEMPORAL_CLI_VERSION := v1.5.1
export PATH := $(BIN):$(PATH)

# MLflow for the MLflow tests and examples/mlflow: a virtual environment outside the
# clone, shared by every checkout on the machine (override with MLRELEASE_MLFLOW_VENV).
MLFLOW_VERSION := 3.17.2
MLRELEASE_MLFLOW_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mlrelease/venv-mlflow-$(MLFLOW_VERSION)
export MLRELEASE_MLFLOW_VENV
PYTHON ?= python3

.PHONY: run test build temporal prometheus mlflow kube-apiserver chromium openssh temporal-server bench bench-gateway bench-scale vet clean

## run: the local stack (Temporal dev server + Web UI, Prometheus, gateway, demo models,
## load, worker) and a release of the demo model; Ctrl-C stops it all.
run: build temporal prometheus
	$(BIN)/localstack

## test: every test, including the end-to-end release on the real dev server and Prometheus.
test: temporal prometheus mlflow kube-apiserver chromium openssh temporal-server
	$(GO) vet ./...
	$(GO) test -p 2 -count=1 -timeout 30m ./...
	# The gateway's data path under the race detector (its race test mixes bodies while routes change).
	$(GO) test -race -count=1 -timeout 10m ./internal/gateway/

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

## kube-apiserver: a real Kubernetes API server for the Kubernetes deployer tests:
## kube-apiserver built once from k8s.io/kubernetes (tools/kubeapiserver, its own module)
## into bin/ (about 3 to 10 minutes on 2 cores), on Debian's etcd-server.
KUBERNETES_VERSION := $(shell awk '/^require k8s.io\/kubernetes /{print $$3}' tools/kubeapiserver/go.mod)
kube-apiserver:
	@if ! command -v etcd >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing etcd from Debian's packages"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; \
		else echo "the Kubernetes tests need etcd 3.4+ (Debian/Ubuntu: sudo apt-get install etcd-server)" >&2; exit 1; fi; \
	fi
	@if [ -x $(BIN)/kube-apiserver ] && [ "$$(cat $(BIN)/.kube-apiserver-version 2>/dev/null)" = $(KUBERNETES_VERSION) ]; then exit 0; fi; \
	echo "building kube-apiserver $(KUBERNETES_VERSION) into bin/ (once; several minutes)"; \
	cd tools/kubeapiserver && $(GO) build -o $(BIN)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver && \
	echo $(KUBERNETES_VERSION) > $(BIN)/.kube-apiserver-version

## openssh: ssh-keygen and ssh-agent, for the tests of signed decisions against OpenSSH.
openssh:
	@if command -v ssh-keygen >/dev/null && command -v ssh-agent >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing OpenSSH's client tools from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-client >/dev/null; \
	else echo "the signing tests need ssh-keygen and ssh-agent (Debian/Ubuntu: sudo apt-get install openssh-client)" >&2; exit 1; fi

## temporal-server: a real Temporal cluster for the cluster test and the scale benchmark:
## the Temporal server and its SQL schema tool, built once from go.temporal.io/server
## (tools/temporalserver, its own module) into bin/, on Debian's PostgreSQL.
TEMPORAL_SERVER_VERSION := $(shell awk '/^require go.temporal.io\/server /{print $$3}' tools/temporalserver/go.mod)
temporal-server:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing PostgreSQL from Debian's packages"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
		else echo "the Temporal cluster needs PostgreSQL (Debian/Ubuntu: sudo apt-get install postgresql)" >&2; exit 1; fi; \
	fi
	@if [ -x $(BIN)/temporal-server ] && [ -x $(BIN)/temporal-sql-tool ] && [ "$$(cat $(BIN)/.temporal-server-version 2>/dev/null)" = $(TEMPORAL_SERVER_VERSION) ]; then exit 0; fi; \
	echo "building the Temporal server $(TEMPORAL_SERVER_VERSION) into bin/ (once; several minutes)"; \
	cd tools/temporalserver && $(GO) build -o $(BIN)/temporal-server go.temporal.io/server/cmd/server && \
	$(GO) build -o $(BIN)/temporal-sql-tool go.temporal.io/server/cmd/tools/sql && \
	echo $(TEMPORAL_SERVER_VERSION) > $(BIN)/.temporal-server-version

## chromium: Debian's chromium, for the test that opens release reports in a real browser.
chromium:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "the report tests need chromium (Debian/Ubuntu: sudo apt-get install chromium)" >&2; exit 1; fi

## mlflow: MLflow and scikit-learn (examples/mlflow/requirements.txt, pinned) in a cached
## virtual environment; once per machine (about 2 minutes), then nothing.
mlflow:
	@if cmp -s examples/mlflow/requirements.txt "$(MLRELEASE_MLFLOW_VENV)/.installed"; then exit 0; fi; \
	echo "installing MLflow $(MLFLOW_VERSION) into $(MLRELEASE_MLFLOW_VENV) (once; about 2 minutes)"; \
	command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.10 or newer" >&2; exit 1; }; \
	rm -rf "$(MLRELEASE_MLFLOW_VENV)" && mkdir -p "$$(dirname "$(MLRELEASE_MLFLOW_VENV)")" && \
	$(PYTHON) -m venv "$(MLRELEASE_MLFLOW_VENV)" && \
	"$(MLRELEASE_MLFLOW_VENV)/bin/pip" install -q --disable-pip-version-check -r examples/mlflow/requirements.txt && \
	cp examples/mlflow/requirements.txt "$(MLRELEASE_MLFLOW_VENV)/.installed"

## bench: the benchmarks whose figures bench/README.md records.
bench: temporal prometheus
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./bench/...

## bench-scale: N concurrent releases on the dev server or the Temporal cluster
## (MLRELEASE_SCALE_N, MLRELEASE_SCALE_SERVER=dev|cluster, ...: bench/README.md).
bench-scale: temporal prometheus temporal-server
	$(GO) test -run '^$$' -bench Scale -benchtime 1x -timeout 0 ./bench/scale/

## bench-gateway: wrk against the upstream, nginx and the gateway side by side, then a
## slow 100% shadow; installs nginx and wrk from Debian's packages when we can.
bench-gateway:
	@if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null; \
		else echo "bench-gateway needs nginx and wrk (Debian/Ubuntu: sudo apt-get install nginx wrk)" >&2; exit 1; fi; \
	fi
	bench/gateway/run.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf .mlrelease
