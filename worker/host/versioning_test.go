package host

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
)

// TestWorkerRunsAsADeploymentVersion: with MLRELEASE_WORKER_DEPLOYMENT set, the
// worker polls as a version of that deployment (build ID from the binary), makes it
// current as the deployment's first worker, and a release runs pinned to it.
func TestWorkerRunsAsADeploymentVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = dev.Stop() }()

	cfg := config.Worker{
		TaskQueue:     "versioned-test",
		Deployment:    "mlrelease-test",
		Registry:      "sqlite",
		RegistryPath:  filepath.Join(t.TempDir(), "registry.db"),
		GatewayURL:    "http://127.0.0.1:1",
		PrometheusURL: "http://127.0.0.1:1",
		Listen:        "127.0.0.1:0",
	}
	opts := client.Options{HostPort: dev.FrontendHostPort(), Namespace: "default"}
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg, opts, slog.New(slog.DiscardHandler), ready) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("worker stopped at start: %v", err)
	}

	c, err := client.Dial(opts)
	require.NoError(t, err)
	defer c.Close()
	d, err := c.WorkerDeploymentClient().GetHandle("mlrelease-test").Describe(ctx, client.WorkerDeploymentDescribeOptions{})
	require.NoError(t, err)
	require.NotNil(t, d.Info.RoutingConfig.CurrentVersion)
	require.Equal(t, BuildID(), d.Info.RoutingConfig.CurrentVersion.BuildID)

	// A release of a model the registry lacks fails at once, on this version.
	p, err := plan.Parse([]byte("model: ghost\ncandidate: \"2\"\nanalysis:\n  metrics:\n    - {name: e, query: up, max: 1}\n"))
	require.NoError(t, err)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.WorkflowID("ghost"), TaskQueue: cfg.TaskQueue},
		workflows.WorkflowName, workflows.ReleaseInput{Plan: *p, StartedBy: "ci"})
	require.NoError(t, err)
	require.Error(t, run.Get(ctx, nil))
	desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	vi := desc.GetWorkflowExecutionInfo().GetVersioningInfo()
	require.NotNil(t, vi)
	require.Equal(t, enums.VERSIONING_BEHAVIOR_PINNED, vi.GetBehavior())
	require.Equal(t, BuildID(), vi.GetDeploymentVersion().GetBuildId())

	stop()
	require.NoError(t, <-done)
}
