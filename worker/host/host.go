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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/report"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/workflows"
)

// Run hosts the worker until ctx ends. ready, when not nil, is closed once the worker
// polls and /metrics listens; it receives the /metrics address.
func Run(ctx context.Context, cfg config.Worker, opts client.Options, logger *slog.Logger, ready chan<- string) error {
	opts.Logger = tlog.NewStructuredLogger(logger)
	// Rule 9: the keys every release started here trusts, and refusals on /metrics.
	trust, bridge, err := loadTrust(cfg)
	if err != nil {
		return err
	}
	workflows.SetWorkerTrust(trust)
	wo := workerOptions(cfg)
	if err := tune(cfg.Tuning, &wo); err != nil {
		return err
	}
	// /metrics: the process, refused decisions, and the Temporal SDK's own metrics.
	metrics := prometheus.NewRegistry()
	refused := newRefusedCounter()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), refused)
	if opts.MetricsHandler == nil {
		opts.MetricsHandler = refusalMetrics{refused: refused, next: newSDKMetrics(metrics)}
	}
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s (set TEMPORAL_ADDRESS): %w", opts.HostPort, err)
	}
	defer c.Close()
	if err := ensureSearchAttributes(ctx, c, opts.Namespace, logger); err != nil {
		return err
	}

	reg, err := registry.Open(cfg.Registry, cfg.RegistryPath)
	if err != nil {
		return fmt.Errorf("open the %s registry: %w", cfg.Registry, err)
	}
	defer reg.Close()
	prom, err := analysis.NewPrometheus(cfg.PrometheusURL)
	if err != nil {
		return err
	}
	deployer := deploy.Targets{Gateway: deploy.NewGateway(cfg.GatewayURL, cfg.GatewayAdminToken, nil)}
	if cfg.Kubeconfig != "" || os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		if deployer.Kube, err = deploy.NewKubeClient(cfg.Kubeconfig); err != nil {
			return err
		}
	}
	acts := &activities.Activities{
		Registry: reg,
		Deployer: deployer,
		Metrics:  prom,
		Scoring:  &scoring.Client{HTTP: &http.Client{Timeout: 30 * time.Second}},
		Notifier: notifier(cfg, logger),
		// Bakes' analysis rounds, until the worker stops; then the ones in progress
		// are handed back, before the client closes.
		Rounds: activities.StartRoundClock(c, logger),
	}
	defer acts.Rounds.Stop()

	w := worker.New(c, cfg.TaskQueue, wo)
	registerWorkflows(w, cfg.Deployment != "")
	w.RegisterActivity(acts)

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	serveSlack(ctx, mux, c, cfg, logger, bridge, refused)
	// Release reports: /releases/MODEL and /releases/MODEL/RUN.
	mux.Handle("GET /releases/", report.Handler(c, reg, func(id string) string { return release.WebUIURL(cfg.WebUIURL, opts.Namespace, id) }, logger))
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
	if err := adoptDeployment(ctx, c, cfg, logger); err != nil {
		return err
	}
	if err := startWatcher(ctx, c, cfg, reg, logger); err != nil {
		return err
	}
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
// Where the operator API is not the way (Temporal Cloud creates search attributes
// through its own control plane), it says what to run instead.
func ensureSearchAttributes(ctx context.Context, c client.Client, namespace string, logger *slog.Logger) error {
	if namespace == "" {
		namespace = client.DefaultNamespace
	}
	ops := c.OperatorService()
	have, err := ops.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if notHere(err) {
		// The attributes may well exist: say how to make sure, and go on.
		logger.Warn("cannot list the namespace's search attributes; releases need them", "namespace", namespace,
			"error", err, "create them with", searchAttributeAdvice(namespace, workflows.SearchAttributes))
		return nil
	}
	if err != nil {
		return fmt.Errorf("list search attributes of namespace %s: %w", namespace, err)
	}
	var missing []temporal.SearchAttributeKey
	req := &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: map[string]enums.IndexedValueType{}}
	for _, k := range workflows.SearchAttributes {
		if _, ok := have.GetCustomAttributes()[k.GetName()]; !ok {
			req.SearchAttributes[k.GetName()] = k.GetValueType()
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := ops.AddSearchAttributes(ctx, req); err != nil {
		return fmt.Errorf("register the search attributes releases need in namespace %s (%w); create them with %s, then start the worker again",
			namespace, err, searchAttributeAdvice(namespace, missing))
	}
	logger.Info("registered search attributes", "namespace", namespace, "count", len(req.SearchAttributes))
	return nil
}

// notHere reports an error saying the operator API is not available to this client
// (Temporal Cloud, or an API key without the right), rather than a failure.
func notHere(err error) bool {
	var denied *serviceerror.PermissionDenied
	var unimplemented *serviceerror.Unimplemented
	return errors.As(err, &denied) || errors.As(err, &unimplemented)
}

// searchAttributeAdvice says how to create the search attributes by hand: on a
// self-hosted cluster with the Temporal CLI, on Temporal Cloud with tcld (or the
// namespace's page in the Cloud UI).
func searchAttributeAdvice(namespace string, keys []temporal.SearchAttributeKey) string {
	var cli, cloud []string
	for _, k := range keys {
		t := "Keyword"
		if k.GetValueType() == enums.INDEXED_VALUE_TYPE_INT {
			t = "Int"
		}
		cli = append(cli, fmt.Sprintf("--name %s --type %s", k.GetName(), t))
		cloud = append(cloud, fmt.Sprintf("--search-attribute '%s=%s'", k.GetName(), t))
	}
	return fmt.Sprintf("`temporal operator search-attribute create --namespace %s %s` (self-hosted), or `tcld namespace search-attributes add --namespace %s %s` (Temporal Cloud)",
		namespace, strings.Join(cli, " "), namespace, strings.Join(cloud, " "))
}

// startWatcher ensures the release watcher runs when a plans folder is configured.
// A watcher already running is kept as it is (terminate it to change its settings).
func startWatcher(ctx context.Context, c client.Client, cfg config.Worker, reg registry.Registry, logger *slog.Logger) error {
	wc := cfg.Watch
	if wc.PlansDir == "" {
		return nil
	}
	if _, ok := reg.(registry.Finder); !ok {
		return fmt.Errorf("MLRELEASE_WATCH_PLANS_DIR is set but the %s registry cannot be watched: use MLRELEASE_REGISTRY=mlflow", cfg.Registry)
	}
	plansDir, err := filepath.Abs(wc.PlansDir)
	if err != nil {
		return fmt.Errorf("MLRELEASE_WATCH_PLANS_DIR %s: %w", wc.PlansDir, err)
	}
	mark := registry.Mark{Alias: wc.Alias}
	if wc.Tag != "" {
		k, v, ok := strings.Cut(wc.Tag, "=")
		if !ok || k == "" {
			return fmt.Errorf("MLRELEASE_WATCH_TAG=%q: want KEY=VALUE, e.g. mlrelease.release=requested", wc.Tag)
		}
		mark = registry.Mark{TagKey: k, TagValue: v}
	}
	if mark.Alias == "" && mark.TagKey == "" {
		return errors.New("the watcher needs MLRELEASE_WATCH_ALIAS or MLRELEASE_WATCH_TAG")
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       workflows.WatcherWorkflowID,
		TaskQueue:                cfg.TaskQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		StaticSummary:            "release watcher: starts a release when a version gets " + mark.String(),
	}, workflows.WatcherWorkflow, workflows.WatcherInput{Mark: mark, PlansDir: plansDir, Interval: wc.Interval, TaskQueue: cfg.TaskQueue})
	if err != nil {
		return fmt.Errorf("start the release watcher: %w", err)
	}
	logger.Info("release watcher running", "workflowId", run.GetID(), "runId", run.GetRunID(), "mark", mark.String(), "plans", plansDir)
	return nil
}
