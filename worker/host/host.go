// Package host assembles the worker process: the clients its activities hold (from
// MLRELEASE_* settings), the Temporal worker hosting ReleaseWorkflow, and /metrics.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/workflows"
)

// Run hosts the worker until ctx ends. ready, when not nil, is closed once the worker
// polls and /metrics listens; it receives the /metrics address.
func Run(ctx context.Context, cfg config.Worker, opts client.Options, logger *slog.Logger, ready chan<- string) error {
	opts.Logger = tlog.NewStructuredLogger(logger)
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s (set TEMPORAL_ADDRESS): %w", opts.HostPort, err)
	}
	defer c.Close()
	if err := ensureSearchAttributes(ctx, c, opts.Namespace, logger); err != nil {
		return err
	}

	reg, err := registry.OpenSQLite(cfg.RegistryPath)
	if err != nil {
		return fmt.Errorf("open registry %s: %w", cfg.RegistryPath, err)
	}
	defer reg.Close()
	prom, err := analysis.NewPrometheus(cfg.PrometheusURL)
	if err != nil {
		return err
	}
	acts := &activities.Activities{
		Registry: reg,
		Deployer: deploy.NewGateway(cfg.GatewayURL, cfg.GatewayAdminToken, nil),
		Metrics:  prom,
		Scoring:  &scoring.Client{HTTP: &http.Client{Timeout: 30 * time.Second}},
		Notifier: notify.Log{Logger: logger.With("component", "notifier")},
	}

	w := worker.New(c, cfg.TaskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(workflows.ReleaseWorkflow, workflow.RegisterOptions{Name: workflows.WorkflowName})
	w.RegisterActivity(acts)

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on MLRELEASE_WORKER_LISTEN %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", "error", err)
		}
	}()
	defer srv.Close()

	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker on task queue %s: %w", cfg.TaskQueue, err)
	}
	defer w.Stop()
	logger.Info("worker started", "taskQueue", cfg.TaskQueue, "namespace", opts.Namespace, "metrics", ln.Addr().String(),
		"gateway", cfg.GatewayURL, "prometheus", cfg.PrometheusURL, "registry", cfg.RegistryPath)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	<-ctx.Done()
	return nil
}

// ensureSearchAttributes registers the release search attributes that the namespace
// lacks, so that the Web UI can filter releases and the workflow's upserts succeed.
func ensureSearchAttributes(ctx context.Context, c client.Client, namespace string, logger *slog.Logger) error {
	if namespace == "" {
		namespace = client.DefaultNamespace
	}
	ops := c.OperatorService()
	have, err := ops.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes of namespace %s: %w", namespace, err)
	}
	req := &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: map[string]enums.IndexedValueType{}}
	for _, k := range workflows.SearchAttributes {
		if _, ok := have.GetCustomAttributes()[k.GetName()]; !ok {
			req.SearchAttributes[k.GetName()] = k.GetValueType()
		}
	}
	if len(req.SearchAttributes) == 0 {
		return nil
	}
	if _, err := ops.AddSearchAttributes(ctx, req); err != nil {
		return fmt.Errorf("register search attributes %v in namespace %s (register them with `temporal operator search-attribute create`): %w", req.SearchAttributes, namespace, err)
	}
	logger.Info("registered search attributes", "namespace", namespace, "count", len(req.SearchAttributes))
	return nil
}
