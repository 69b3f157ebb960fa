package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/examples/demo/load"
	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/worker/host"
)

// DemoModel is the demo model's name.
const DemoModel = "wine"

// DemoVersion is one demo model version: which weights it serves and what is wrong
// with it.
type DemoVersion struct {
	Version   string
	Weights   string // path under the repo root
	ErrorRate float64
	Latency   time.Duration
}

// DemoVersions are the demo's versions: 1 is the champion, 2 a good candidate, 3 a
// bad one that answers half its requests with 503.
var DemoVersions = []DemoVersion{
	{Version: "1", Weights: "examples/demo/models/v1.json"},
	{Version: "2", Weights: "examples/demo/models/v2.json"},
	{Version: "3", Weights: "examples/demo/models/v2.json", ErrorRate: 0.5},
}

// LocalOptions configure an in-process local stack.
type LocalOptions struct {
	// Root is the repository root: bin/ and examples/ are found there.
	Root string
	// Dir holds the registry, Prometheus's data and the logs.
	Dir string
	// ScrapeInterval is Prometheus's; default 1s.
	ScrapeInterval time.Duration
	// LoadRate is the demo traffic in requests per second; default 40.
	LoadRate float64
	Logger   *slog.Logger
	// AllowedSigners is the worker's MLRELEASE_ALLOWED_SIGNERS file, when set.
	AllowedSigners string
	// Slack configures the worker's Slack app (off when its bot token is empty).
	Slack config.Slack
	// Temporal, when set, is the frontend (host:port) of a Temporal server to use
	// instead of a dev server of the stack's own, with namespace default.
	Temporal string
}

// Local is the whole stack for end-to-end tests and benchmarks, in one process but
// for the real Temporal dev server and the real Prometheus: the gateway, the demo
// model servers, the load generator and the worker run in-process.
type Local struct {
	Temporal      client.Client
	TaskQueue     string
	Registry      *registry.SQLite
	Gateway       *deploy.Gateway
	GatewayURL    string
	PrometheusURL string
	// Endpoints maps demo version to model server URL.
	Endpoints map[string]string
	Config    config.Worker
	// WorkerMetricsURL is the worker's /metrics.
	WorkerMetricsURL string
	// TemporalAddress is the dev server's frontend, for the Temporal CLI.
	TemporalAddress string

	dev     *testsuite.DevServer
	procs   Stack
	cancel  context.CancelFunc
	servers []*http.Server
	done    []chan struct{}
}

// StartLocal brings the stack up and registers the demo versions, champion 1. It
// fails, never skips, when the Temporal CLI or Prometheus is missing.
func StartLocal(ctx context.Context, o LocalOptions) (_ *Local, err error) {
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = time.Second
	}
	if o.LoadRate == 0 {
		o.LoadRate = 40
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Local{cancel: cancel, procs: Stack{LogDir: filepath.Join(o.Dir, "logs")}, Endpoints: map[string]string{}, TaskQueue: "mlrelease-e2e"}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()

	// Model servers, one per demo version.
	ds, err := scoring.LoadCSV(filepath.Join(o.Root, "examples/demo/data/eval.csv"))
	if err != nil {
		return nil, err
	}
	for _, v := range DemoVersions {
		w, err := model.Load(filepath.Join(o.Root, v.Weights))
		if err != nil {
			return nil, err
		}
		h, err := model.NewServer(model.ServerOptions{Weights: w, Version: v.Version, ErrorRate: v.ErrorRate, Latency: v.Latency, Seed: 7})
		if err != nil {
			return nil, err
		}
		if l.Endpoints[v.Version], err = l.serve(h); err != nil {
			return nil, err
		}
	}

	// The gateway.
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Options{Registerer: reg, Gatherer: reg, Logger: o.Logger.With("component", "gateway")})
	if err != nil {
		return nil, err
	}
	if l.GatewayURL, err = l.serve(gw.Handler()); err != nil {
		return nil, err
	}
	l.Gateway = deploy.NewGateway(l.GatewayURL, "", nil)

	// Prometheus scraping the gateway.
	promAddr, err := FreePort()
	if err != nil {
		return nil, err
	}
	if _, err := l.procs.StartPrometheus(ctx, o.Root, filepath.Join(o.Dir, "prometheus"), promAddr, o.ScrapeInterval,
		map[string]string{"gateway": strings.TrimPrefix(l.GatewayURL, "http://")}); err != nil {
		return nil, err
	}
	l.PrometheusURL = "http://" + promAddr

	// The Temporal dev server, or the server given.
	if o.Temporal != "" {
		if l.Temporal, err = client.DialContext(ctx, client.Options{HostPort: o.Temporal, Namespace: client.DefaultNamespace,
			Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))}); err != nil {
			return nil, err
		}
		l.TemporalAddress = o.Temporal
	} else {
		devLog, err := os.Create(filepath.Join(o.Dir, "logs", "temporal.log"))
		if err != nil {
			return nil, err
		}
		if l.dev, err = devserver.Start(ctx, devLog); err != nil {
			return nil, err
		}
		l.Temporal = l.dev.Client()
		l.TemporalAddress = l.dev.FrontendHostPort()
	}

	// The registry with the demo versions.
	l.Registry, err = registry.OpenSQLite(filepath.Join(o.Dir, "registry.db"))
	if err != nil {
		return nil, err
	}
	if err := RegisterDemo(ctx, l.Registry, l.Endpoints); err != nil {
		return nil, err
	}

	// The worker.
	l.Config = config.Worker{TaskQueue: l.TaskQueue, RegistryPath: filepath.Join(o.Dir, "registry.db"), GatewayURL: l.GatewayURL,
		PrometheusURL: l.PrometheusURL, Listen: "127.0.0.1:0", WebUIURL: "http://localhost:8233", AllowedSigners: o.AllowedSigners,
		Slack: o.Slack}
	ready := make(chan string, 1)
	workerDone := make(chan struct{})
	l.done = append(l.done, workerDone)
	var workerErr error
	go func() {
		defer close(workerDone)
		workerErr = host.Run(runCtx, l.Config, client.Options{HostPort: l.TemporalAddress, Namespace: "default"}, o.Logger.With("component", "worker"), ready)
	}()
	select {
	case addr := <-ready:
		l.WorkerMetricsURL = "http://" + addr + "/metrics"
	case <-workerDone:
		return nil, fmt.Errorf("worker stopped at start: %w", workerErr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// Traffic: the champion alone until a release moves it.
	if _, err := l.Gateway.Apply(ctx, deploy.Traffic{Model: DemoModel, Champion: deploy.Backend{Version: "1", URL: l.Endpoints["1"]}}); err != nil {
		return nil, err
	}
	loadDone := make(chan struct{})
	l.done = append(l.done, loadDone)
	go func() {
		defer close(loadDone)
		_, _ = load.Run(runCtx, load.Options{URL: l.GatewayURL + "/models/" + DemoModel + "/invocations", Dataset: ds, Rate: o.LoadRate, Concurrency: 8, Seed: 1})
	}()
	return l, nil
}

// RegisterDemo registers the demo versions at their endpoints, champion 1.
func RegisterDemo(ctx context.Context, r *registry.SQLite, endpoints map[string]string) error {
	for _, v := range DemoVersions {
		meta := map[string]string{"weights": v.Weights}
		if v.ErrorRate > 0 {
			meta["injected_error_rate"] = fmt.Sprint(v.ErrorRate)
		}
		if err := r.RegisterVersion(ctx, registry.Version{Model: DemoModel, Version: v.Version, Endpoint: endpoints[v.Version], Metadata: meta}); err != nil {
			return fmt.Errorf("register demo version %s: %w", v.Version, err)
		}
	}
	return r.SetAlias(ctx, DemoModel, registry.AliasChampion, "1")
}

// serve runs h on a loopback port and returns its base URL.
func (l *Local) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	l.servers = append(l.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// Close stops everything StartLocal started.
func (l *Local) Close() {
	l.cancel()
	for _, d := range l.done {
		<-d
	}
	for _, s := range l.servers {
		_ = s.Close()
	}
	if l.Registry != nil {
		_ = l.Registry.Close()
	}
	if l.dev != nil {
		_ = l.dev.Stop()
	} else if l.Temporal != nil {
		l.Temporal.Close()
	}
	l.procs.Stop()
}
