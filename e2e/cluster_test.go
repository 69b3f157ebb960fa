package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/internal/stack/cluster"
	"github.com/mlrelease/mlrelease/workflows"
)

// A release on a real Temporal cluster: the Temporal server on PostgreSQL, the
// topology docker-compose runs, rather than the dev server. The scale benchmark
// (bench/scale) runs many releases and kills a worker on the same cluster.
func TestClusterRelease(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, t.TempDir())
	require.NoError(t, err, "start the Temporal cluster")
	defer c.Stop()

	l, err := stack.StartLocal(ctx, stack.LocalOptions{Root: root, Dir: t.TempDir(), Temporal: c.HostPort})
	require.NoError(t, err, "start the local stack on the cluster")
	defer l.Close()

	p := unattendedPlan(t, false)
	_, err = release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, PlanDir: filepath.Join(root, "e2e"),
		Version: "2", StartedBy: "e2e", TaskQueue: l.TaskQueue})
	require.NoError(t, err)
	require.NoError(t, release.Begun(ctx, l.Temporal, "wine", time.Minute), "the worker takes the release")

	var res workflows.Result
	require.NoError(t, l.Temporal.GetWorkflow(ctx, workflows.WorkflowID("wine"), "").Get(ctx, &res))
	require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)
	routes, err := l.Gateway.Current(ctx, "wine")
	require.NoError(t, err)
	require.Equal(t, "2", routes.Champion.Version)

	// The cluster's visibility store lists it by its search attributes.
	list, err := release.List(ctx, l.Temporal, "wine")
	require.NoError(t, err)
	require.NotEmpty(t, list)
}
