// Package e2e releases the demo model on the real Temporal dev server and the real
// Prometheus, through our gateway and demo model servers: one good candidate is
// promoted after an approval, one bad candidate is rolled back with no human action.
package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/workflows"
)

// fastPlan is the demo plan with durations cut to seconds.
const fastPlan = `
model: wine
staging:
  dataset: ../examples/demo/data/eval.csv
  minAccuracy: 0.85
  maxAccuracyDrop: 0.05
shadow:
  share: 100
  duration: 4s
canary:
  steps:
    - {weight: 20, bake: 4s}
    - {weight: 60, bake: 4s}
analysis:
  interval: 2s
  metrics:
    - name: error-rate
      judge: rate
      query: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}",code=~"5.."})
      totalQuery: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"})
      tolerance: 0.1
      minSamples: 20
      maxHolds: 5
approval:
  required: true
  approvers: [alice]
  timeout: 5m
postPromotion:
  watch: 4s
`

// unattendedPlan is fastPlan taking no decision, and without its shadow soak and its
// watch when canaryOnly: it runs from start to promotion on its own.
func unattendedPlan(t *testing.T, canaryOnly bool) *plan.Plan {
	t.Helper()
	p, err := plan.Parse([]byte(fastPlan))
	require.NoError(t, err)
	p.Approval = plan.Approval{Unsigned: true, OnTimeout: plan.OnTimeoutRollback}
	if canaryOnly {
		p.Staging, p.Shadow, p.PostPromotion = plan.Staging{}, plan.Shadow{}, plan.PostPromotion{}
	}
	require.NoError(t, p.Validate())
	return p
}

func TestRelease(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	l, err := stack.StartLocal(ctx, stack.LocalOptions{Root: root, Dir: t.TempDir()})
	require.NoError(t, err, "start the local stack")
	defer l.Close()

	p, err := plan.Parse([]byte(fastPlan))
	require.NoError(t, err)
	// alice's key is the plan's allowed signer (the worker has none of its own).
	alice := e2eKey(t, "alice")
	p.Approval.AllowedSigners = filepath.Join(t.TempDir(), "allowed_signers")
	require.NoError(t, os.WriteFile(p.Approval.AllowedSigners, []byte("alice "+string(ssh.MarshalAuthorizedKey(alice.Key.PublicKey()))), 0o600))
	start := func(version string, pl *plan.Plan) {
		t.Helper()
		_, err := release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: pl, PlanDir: filepath.Join(root, "e2e"),
			Version: version, StartedBy: "e2e", TaskQueue: l.TaskQueue})
		require.NoError(t, err, "start release of version %s", version)
	}
	result := func() workflows.Result {
		t.Helper()
		var res workflows.Result
		require.NoError(t, l.Temporal.GetWorkflow(ctx, workflows.WorkflowID(stack.DemoModel), "").Get(ctx, &res))
		return res
	}

	t.Run("good candidate is promoted after approval", func(t *testing.T) {
		start("2", p)

		// A second release of the same model is refused while this one runs.
		_, err := release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, PlanDir: root, Version: "3", StartedBy: "e2e", TaskQueue: l.TaskQueue})
		require.ErrorIs(t, err, release.ErrAlreadyRunning)

		// Follow the release until it waits for approval.
		wctx, reached := context.WithCancel(ctx)
		_, _ = release.Watch(wctx, l.Temporal, stack.DemoModel, 200*time.Millisecond, func(s workflows.Status) {
			if s.Stage == workflows.StageAwaitingApproval {
				reached()
			}
		})
		require.NoError(t, ctx.Err())
		st, err := release.GetStatus(ctx, l.Temporal, stack.DemoModel)
		require.NoError(t, err)
		require.Equal(t, workflows.StageAwaitingApproval, st.Stage, "status: %+v", st)
		require.Equal(t, 60, st.CandidateWeight)

		// An approver the plan does not allow is refused and changes nothing.
		// A key the release does not trust is refused and changes nothing.
		run, err := release.ReleaseRun(ctx, l.Temporal, stack.DemoModel)
		require.NoError(t, err)
		signed := func(s *release.Signer, comment string) workflows.DecisionRequest {
			req := workflows.DecisionRequest{Comment: comment, Source: "e2e"}
			require.NoError(t, s.SignDecision(&req, workflows.WorkflowID(stack.DemoModel), run, workflows.Approve))
			return req
		}
		_, err = release.Decide(ctx, l.Temporal, stack.DemoModel, workflows.Approve, signed(e2eKey(t, "mallory"), "ship it"), false)
		require.ErrorContains(t, err, "untrusted key")
		d, err := release.Decide(ctx, l.Temporal, stack.DemoModel, workflows.Approve, signed(alice, "metrics look right"), false)
		require.NoError(t, err)
		require.Equal(t, "alice", d.Who)
		require.Equal(t, alice.Fingerprint(), d.Key)

		res := result()
		require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)
		champ, err := l.Registry.ResolveAlias(ctx, stack.DemoModel, registry.AliasChampion)
		require.NoError(t, err)
		require.Equal(t, "2", champ.Version)
		routes, err := l.Gateway.Current(ctx, stack.DemoModel)
		require.NoError(t, err)
		require.Equal(t, "2", routes.Champion.Version, "the gateway serves the new champion alone")
		require.Nil(t, routes.Candidate)
		v2, err := l.Registry.GetVersion(ctx, stack.DemoModel, "2")
		require.NoError(t, err)
		require.Equal(t, workflows.OutcomePromoted, v2.Tags[workflows.TagOutcome])
		require.Equal(t, "alice", v2.Tags[workflows.TagApprover])
		recordHistory(t, l, "release_promoted_thread.json")
	})

	t.Run("bad candidate is rolled back with no human action", func(t *testing.T) {
		bad := *p
		bad.Staging.Dataset = "" // let live analysis, not staging, catch it
		bad.Shadow.Share = 0
		start("3", &bad)
		res := result()
		require.Equal(t, workflows.OutcomeRolledBack, res.Outcome)
		require.Contains(t, res.Reason, "error-rate")
		require.Contains(t, res.Reason, "e-value", "the sequential rate judge decided")
		require.Empty(t, approvals(res.Status), "no human decided")
		// The evidence of the deciding measurement: the rate judge's counts and e-value.
		require.NotEmpty(t, res.Status.Analyses)
		last := res.Status.Analyses[len(res.Status.Analyses)-1].Measurements[0]
		require.Equal(t, plan.JudgeRate, last.Judge)
		require.Equal(t, analysis.Fail, last.Verdict)
		require.NotNil(t, last.Evidence)
		require.NotNil(t, last.Evidence.EValue)
		require.GreaterOrEqual(t, *last.Evidence.EValue, last.Evidence.Threshold)
		require.Greater(t, last.Evidence.CandidateEvents, 0.0)
		require.Len(t, last.Evidence.Queries, 4, "events and totals, candidate and champion")
		require.Nil(t, last.State, "the judge's working state stays out of the status")

		routes, err := l.Gateway.Current(ctx, stack.DemoModel)
		require.NoError(t, err)
		require.Nil(t, routes.Candidate, "candidate traffic is 0")
		require.Equal(t, 0, routes.CandidateWeight)
		require.Equal(t, "2", routes.Champion.Version, "champion untouched")
		champ, err := l.Registry.ResolveAlias(ctx, stack.DemoModel, registry.AliasChampion)
		require.NoError(t, err)
		require.Equal(t, "2", champ.Version)
		v3, err := l.Registry.GetVersion(ctx, stack.DemoModel, "3")
		require.NoError(t, err)
		require.Equal(t, workflows.OutcomeRolledBack, v3.Tags[workflows.TagOutcome])
		require.Contains(t, v3.Tags[workflows.TagReason], "error-rate")
		_, err = l.Registry.ResolveAlias(ctx, stack.DemoModel, registry.AliasChallenger)
		require.ErrorIs(t, err, registry.ErrNotFound, "challenger cleared")
		recordHistory(t, l, "release_rolled_back_rate_judge.json")
	})

	t.Run("a query Prometheus rejects fails the release before traffic moves", func(t *testing.T) {
		before, err := l.Gateway.Current(ctx, stack.DemoModel)
		require.NoError(t, err)
		broken := *p
		broken.Analysis.Metrics = append([]plan.Metric(nil), p.Analysis.Metrics...)
		broken.Analysis.Metrics[0].Query = `sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}"}[{{.Interval}}])`
		start("3", &broken)
		// A fault, not a verdict: the workflow fails, after its rollback.
		err = l.Temporal.GetWorkflow(ctx, workflows.WorkflowID(stack.DemoModel), "").Get(ctx, nil)
		var app *temporal.ApplicationError
		require.ErrorAs(t, err, &app)
		require.Equal(t, activities.ErrTypeQueryRejected, app.Type())
		st, err := release.GetStatus(ctx, l.Temporal, stack.DemoModel)
		require.NoError(t, err)
		require.Equal(t, workflows.StageRolledBack, st.Stage)
		require.Contains(t, st.Reason, "metric error-rate: query rejected")
		after, err := l.Gateway.Current(ctx, stack.DemoModel)
		require.NoError(t, err)
		require.Equal(t, before.Revision, after.Revision, "no traffic moved")
	})

	t.Run("unknown version starts nothing", func(t *testing.T) {
		lastRun := func() string {
			d, err := l.Temporal.DescribeWorkflowExecution(ctx, workflows.WorkflowID(stack.DemoModel), "")
			require.NoError(t, err)
			return d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
		}
		before := lastRun()
		_, err := release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, PlanDir: root, Version: "42", StartedBy: "e2e", TaskQueue: l.TaskQueue})
		require.ErrorContains(t, err, `"42"`)
		require.Equal(t, before, lastRun(), "no new release started")
	})
}

func approvals(s workflows.Status) []workflows.Decision {
	var out []workflows.Decision
	for _, d := range s.Decisions {
		if d.Kind == workflows.Approve || d.Kind == workflows.Reject {
			out = append(out, d)
		}
	}
	return out
}

// recordHistory writes the release's history for the replay test when
// MLRELEASE_RECORD_HISTORY names a folder (see workflows/testdata/README.md).
func recordHistory(t *testing.T, l *stack.Local, name string) {
	dir := os.Getenv("MLRELEASE_RECORD_HISTORY")
	if dir == "" {
		return
	}
	b, err := stack.HistoryJSON(context.Background(), l.Temporal, workflows.WorkflowID(stack.DemoModel))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	t.Logf("recorded %s (%d bytes)", name, len(b))
}
