package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// A release renews its history (continue-as-new) before Temporal's limits come near
// (rule 10): when the server suggests it, or when the run has taken
// DefaultRoundsPerRun analysis rounds or DefaultHistoryLimit events, whichever comes
// first. The next run gets the plan and the whole state (Carried) and goes on where
// this one was; the workflow ID stays release/<model>.
const (
	// DefaultRoundsPerRun bounds a run's analysis rounds: 4 events each (6 before
	// changeLocalIO's version 3, 11 before changeLocalIO), so a run stays far below
	// 10,000 events.
	DefaultRoundsPerRun = 500
	// DefaultHistoryLimit is the history length at which a run continues as new even
	// without the server's suggestion (the server's own limit is 51,200 events).
	DefaultHistoryLimit = 8000

	// heartbeatTimeout is how soon a lost activity (its worker crashed) is retried:
	// every I/O activity heartbeats more often than this.
	heartbeatTimeout = 5 * time.Second
)

// Workflow changes guarded by workflow.GetVersion, so that releases that began
// before them replay unchanged.
const (
	// changeLongRelease: rounds go to the registry's audit log in batches, the
	// status keeps a bounded window, and a rollback zeroes the canary weight search
	// attribute.
	changeLongRelease = "long-release"
	// changeAuditDecisions: every decision also goes to the audit log, and the
	// status keeps the latest RecentDecisions.
	changeAuditDecisions = "audit-decisions"
	// changeLocalIO: the short, idempotent I/O of a release (resolve, the query
	// check, registry changes and audit batches, analysis rounds; since version 2
	// traffic changes on the gateway) runs as local activities, each one marker in
	// the history instead of an activity's three events and a workflow task of its
	// own; and analysis rounds are due on the bake's clock, so that a bake lasts what
	// the plan says however long each round takes. What may take long stays an
	// activity that heartbeats: traffic changes on Kubernetes (the deployer waits for
	// the status), the staging evaluation, and notifications (best effort, at the
	// notifier's pace). Since version 3 the worker's round clock pushes a bake's
	// analysis rounds to the release as signals (rounds.go): four events a round
	// instead of six.
	changeLocalIO = "local-io"
)

// roundsPerRun and historyLimit are the run's limits; the input may lower them (tests
// force continue-as-new this way).
func (r *release) roundsPerRun() int {
	if r.limits.RoundsPerRun > 0 {
		return r.limits.RoundsPerRun
	}
	return DefaultRoundsPerRun
}

func (r *release) historyLimit() int {
	if r.limits.HistoryLimit > 0 {
		return r.limits.HistoryLimit
	}
	return DefaultHistoryLimit
}

// continueAsNewDue says whether this run should hand over to a new one.
func (r *release) continueAsNewDue(ctx workflow.Context) bool {
	if !r.bounded {
		return false
	}
	info := workflow.GetInfo(ctx)
	return info.GetContinueAsNewSuggested() ||
		info.GetCurrentHistoryLength() >= r.historyLimit() ||
		r.Status.Rounds-r.roundsAtStart >= r.roundsPerRun()
}

// continueAsNewIfDue continues as new when due: after every update handler has
// finished and every signal already delivered has been taken, so that no decision
// is lost in the switch (a signal arriving later makes the server refuse this run's
// completion and replay it with the signal, which is then taken here).
func (r *release) continueAsNewIfDue(ctx workflow.Context) error {
	if !r.continueAsNewDue(ctx) {
		return nil
	}
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return err
	}
	r.takeSignals(ctx)
	if err := r.check(); err != nil {
		return err
	}
	if err := r.flushRounds(ctx, true); err != nil {
		return err
	}
	workflow.GetLogger(ctx).Info("continue as new", "rounds", r.Status.Rounds, "runs", r.Runs+1,
		"historyLength", workflow.GetInfo(ctx).GetCurrentHistoryLength())
	next := r.input // the plan, who started it, its trust: as the release began
	next.Carried = r.Carried
	return workflow.NewContinueAsNewError(ctx, WorkflowName, next)
}

// takeSignals applies every decision signal already delivered but not yet taken.
func (r *release) takeSignals(ctx workflow.Context) {
	for _, kind := range Decisions {
		ch := workflow.GetSignalChannel(ctx, kind)
		for {
			var req DecisionRequest
			if !ch.ReceiveAsync(&req) {
				break
			}
			r.onSignal(ctx, kind, req)
		}
	}
}

// flushRounds writes the rounds not yet in the registry's audit log, in batches of
// AuditBatch (all of them when all is set). Retried until it succeeds, like every
// record.
func (r *release) flushRounds(ctx workflow.Context, all bool) error {
	if !r.bounded {
		return nil
	}
	for len(r.Unrecorded) >= AuditBatch || (all && len(r.Unrecorded) > 0) {
		n := min(len(r.Unrecorded), AuditBatch)
		events, err := auditEvents(r.Status.ReleaseID, workflow.GetInfo(ctx).FirstRunID, r.Candidate.Version, r.Unrecorded[:n])
		if err != nil {
			return temporal.NewNonRetryableApplicationError("audit rounds", "Invalid", err)
		}
		summary := fmt.Sprintf("registry: audit rounds %d-%d", r.Unrecorded[0].Round, r.Unrecorded[n-1].Round)
		if err := r.recordEvents(ctx, summary, events); err != nil {
			return err
		}
		r.Unrecorded = append([]AnalysisRound(nil), r.Unrecorded[n:]...)
	}
	for len(r.UnrecordedDecisions) >= AuditBatch || (all && len(r.UnrecordedDecisions) > 0) {
		n := min(len(r.UnrecordedDecisions), AuditBatch)
		first := r.Status.DecisionsTaken - len(r.UnrecordedDecisions) + 1
		events, err := decisionEvents(r.Status.ReleaseID, workflow.GetInfo(ctx).FirstRunID, r.Candidate.Version, first, r.UnrecordedDecisions[:n])
		if err != nil {
			return temporal.NewNonRetryableApplicationError("audit decisions", "Invalid", err)
		}
		summary := fmt.Sprintf("registry: audit decisions %d-%d", first, first+n-1)
		if err := r.recordEvents(ctx, summary, events); err != nil {
			return err
		}
		r.UnrecordedDecisions = append([]Decision(nil), r.UnrecordedDecisions[n:]...)
	}
	return nil
}

// recordEvents appends events to the registry's audit log, retried until it
// succeeds.
func (r *release) recordEvents(ctx workflow.Context, summary string, events []registry.Event) error {
	return r.mustIO(ctx, summary, a.RecordEvents, r.plan.Model, events).Get(ctx, nil)
}

// bindTally gives a tally carried from the previous run its metrics back (they are
// not serialised with it).
func bindTally(t *analysis.Tally, metrics []plan.Metric) {
	for i := range t.Metrics {
		for _, m := range metrics {
			if m.Name == t.Metrics[i].Name {
				t.Metrics[i].Metric = m
			}
		}
	}
}
