package workflows

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplay replays histories recorded on a real dev server (testdata/README.md says
// how). A change to ReleaseWorkflow's command sequence that is not guarded by
// workflow.GetVersion fails here with a non-determinism error.
func TestReplay(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recorded histories in testdata/")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflowWithOptions(ReleaseWorkflow, workflow.RegisterOptions{Name: WorkflowName})
			require.NoError(t, r.ReplayWorkflowHistoryFromJSONFile(nil, f))
		})
	}
}

// TestReplayFailsWhenTheCommandSequenceChanges: the replay check catches a change to
// the workflow's commands that no workflow.GetVersion guards. A release that first
// sleeps issues a timer where every recorded history has its first activity.
func TestReplayFailsWhenTheCommandSequenceChanges(t *testing.T) {
	changed := func(ctx workflow.Context, in ReleaseInput) (*Result, error) {
		if err := workflow.Sleep(ctx, time.Second); err != nil {
			return nil, err
		}
		return ReleaseWorkflow(ctx, in)
	}
	files, err := filepath.Glob("testdata/*.json")
	require.NoError(t, err)
	for _, f := range files {
		r := worker.NewWorkflowReplayer()
		r.RegisterWorkflowWithOptions(changed, workflow.RegisterOptions{Name: WorkflowName})
		err := r.ReplayWorkflowHistoryFromJSONFile(nil, f)
		require.Errorf(t, err, "%s replays a changed workflow", f)
		// A non-determinism error, or (a run whose only command is continue-as-new) a
		// different result than the history's last event.
		msg := err.Error()
		require.Truef(t, strings.Contains(msg, "TMPRL1100") || strings.Contains(msg, "doesn't return the same result as the last event"),
			"%s: want a non-determinism error, got %.300s", f, msg)
	}
}
