package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/workflows"
)

// Version is the worker binary's version, set at build time with
// -ldflags "-X github.com/mlrelease/mlrelease/worker/host.Version=v1.2.3"; empty
// means the VCS revision Go stamped into the binary.
var Version string

// BuildID is the worker's build ID in its Worker Deployment: Version, else the VCS
// revision (with "-dirty" for a modified tree), else "dev".
func BuildID() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
	}
	return "dev"
}

// workerOptions are the Temporal worker's options: heartbeats sent within a second
// (a staging evaluation's progress is then at most a second old when a worker dies),
// and the Worker Deployment Version when cfg names a deployment.
func workerOptions(cfg config.Worker) worker.Options {
	o := worker.Options{MaxHeartbeatThrottleInterval: time.Second}
	if cfg.Deployment != "" {
		o.DeploymentOptions = worker.DeploymentOptions{
			UseVersioning: true,
			Version:       worker.WorkerDeploymentVersion{DeploymentName: cfg.Deployment, BuildID: BuildID()},
			// A release runs on the code it started with, across its runs: a change
			// ships as a new version that takes new releases while the old one drains.
			DefaultVersioningBehavior: workflow.VersioningBehaviorPinned,
		}
	}
	return o
}

// registerWorkflows registers the workflows with their versioning behaviour.
func registerWorkflows(w worker.Worker, versioned bool) {
	release := workflow.RegisterOptions{Name: workflows.WorkflowName}
	watcher := workflow.RegisterOptions{Name: workflows.WatcherWorkflowName}
	if versioned {
		release.VersioningBehavior = workflow.VersioningBehaviorPinned
		// The registry watcher holds no release state worth pinning: it moves to
		// the current version at once.
		watcher.VersioningBehavior = workflow.VersioningBehaviorAutoUpgrade
	}
	w.RegisterWorkflowWithOptions(workflows.ReleaseWorkflow, release)
	w.RegisterWorkflowWithOptions(workflows.WatcherWorkflow, watcher)
}

// adoptDeployment makes this worker's version the deployment's current one when the
// deployment has none yet (its first worker), so that releases reach it. Later
// versions become current by the operator's hand (temporal worker deployment
// set-current-version), as README's "Changing the release workflow" says.
func adoptDeployment(ctx context.Context, c client.Client, cfg config.Worker, logger *slog.Logger) error {
	if cfg.Deployment == "" {
		return nil
	}
	h := c.WorkerDeploymentClient().GetHandle(cfg.Deployment)
	build := BuildID()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The version exists once this worker has polled: retry until then.
		d, err := h.Describe(ctx, client.WorkerDeploymentDescribeOptions{})
		if err == nil {
			cur := d.Info.RoutingConfig.CurrentVersion
			if cur != nil && cur.BuildID != "" {
				logger.Info("worker deployment", "deployment", cfg.Deployment, "buildId", build, "current", cur.BuildID)
				return nil
			}
			if _, err = h.SetCurrentVersion(ctx, client.WorkerDeploymentSetCurrentVersionOptions{BuildID: build}); err == nil {
				logger.Info("worker deployment: this version is now current", "deployment", cfg.Deployment, "buildId", build)
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("make build %s the current version of worker deployment %s: %w", build, cfg.Deployment, errors.Join(err, ctx.Err()))
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}
