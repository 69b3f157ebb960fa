package release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/workflows"
)

// GetStatus returns where the model's latest release is and its evidence. A running
// release answers the status query (a worker must run); an ended one is read from its
// result, so no worker is needed.
func GetStatus(ctx context.Context, c client.Client, model string) (workflows.Status, error) {
	st, _, err := fetch(ctx, c, model)
	return st, err
}

// fetch returns the status and whether the workflow has closed.
func fetch(ctx context.Context, c client.Client, model string) (workflows.Status, bool, error) {
	id := workflows.WorkflowID(model)
	desc, err := c.DescribeWorkflow(ctx, id, "")
	if err != nil {
		return workflows.Status{}, false, notFoundOr(model, fmt.Errorf("describe release of model %s: %w", model, err), err)
	}

	if desc.Status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		qctx, cancel := context.WithTimeout(ctx, WorkerTimeout)
		defer cancel()
		var st workflows.Status
		// No run ID: the query goes to the release's current run, which may have
		// continued as new since the describe.
		v, err := c.QueryWorkflow(qctx, id, "", workflows.QueryStatus)
		if err == nil {
			err = v.Get(&st)
		}
		if err != nil {
			if ctx.Err() == nil && qctx.Err() != nil {
				if desc.HistoryLength <= 2 {
					// Not begun: say why (no worker, or busy ones).
					return st, false, notBegun(ctx, c, model, desc.TaskQueueName, time.Since(desc.WorkflowStartTime).Round(time.Second))
				}
				return st, false, fmt.Errorf("release of model %s: no worker answered the status query within %s: is the mlrelease worker running on task queue %s?",
					model, WorkerTimeout, desc.TaskQueueName)
			}
			return st, false, fmt.Errorf("query status of the release of model %s: %w", model, err)
		}
		return st, false, nil
	}

	// Closed: the result holds the final status whenever the workflow completed.
	var res workflows.Result
	runErr := c.GetWorkflow(ctx, id, desc.WorkflowExecution.RunID).Get(ctx, &res)
	if runErr == nil {
		return res.Status, true, nil
	}
	if ctx.Err() != nil {
		return workflows.Status{}, true, ctx.Err()
	}
	// Failed or cancelled after the rollback: the error carries the final status.
	if st, ok := failedStatus(runErr); ok {
		st.Reason = strings.TrimSpace(st.Reason + " (" + endedReason(desc.Status, runErr) + ")")
		return st, true, nil
	}
	// Terminated or timed out: no status, so tell what the search attributes and the
	// close event say.
	st := closedStatus(model, desc, runErr)
	addInput(ctx, c, &st, desc.WorkflowExecution.RunID)
	return st, true, nil
}

// failedStatus takes the final status from the error of a release that failed or was
// cancelled (workflows.ReleaseWorkflow puts it in the error's details).
func failedStatus(runErr error) (workflows.Status, bool) {
	var st workflows.Status
	var app *temporal.ApplicationError
	if errors.As(runErr, &app) && app.HasDetails() && app.Details(&st) == nil && st.ReleaseID != "" {
		return st, true
	}
	var ce *temporal.CanceledError
	if errors.As(runErr, &ce) && ce.HasDetails() && ce.Details(&st) == nil && st.ReleaseID != "" {
		return st, true
	}
	return st, false
}

// addInput fills in what the release's input says (who started it, the steps, the
// approval); best effort, since the status is useful without it.
func addInput(ctx context.Context, c client.Client, st *workflows.Status, runID string) {
	ev, err := c.GetWorkflowHistory(ctx, st.ReleaseID, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT).Next()
	if err != nil {
		return
	}
	var in workflows.ReleaseInput
	if converter.GetDefaultDataConverter().FromPayloads(ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in) != nil {
		return
	}
	st.StartedBy = in.StartedBy
	st.Steps = in.Plan.Canary.Steps
	st.ApprovalRequired = in.Plan.Approval.Required
	st.Approvers = in.Plan.Approval.Approvers
	if st.Candidate == "" {
		st.Candidate = in.Plan.Candidate
	}
}

// closedStatus is the status of a release that ended without a result.
func closedStatus(model string, desc *client.WorkflowExecutionDescription, runErr error) workflows.Status {
	st := workflows.Status{
		ReleaseID: desc.WorkflowExecution.ID,
		Model:     model,
		StartedAt: desc.WorkflowStartTime,
		Gates:     []workflows.Gate{},
		Analyses:  []workflows.AnalysisRound{},
		Decisions: []workflows.Decision{},
	}
	sa := desc.TypedSearchAttributes
	if v, ok := sa.GetKeyword(workflows.CandidateVersionKey); ok {
		st.Candidate = v
	}
	if v, ok := sa.GetKeyword(workflows.StageKey); ok {
		st.Stage = workflows.Stage(v)
	}
	if v, ok := sa.GetInt64(workflows.CanaryWeightKey); ok {
		st.CandidateWeight = int(v)
	}
	if desc.WorkflowCloseTime != nil {
		st.UpdatedAt = *desc.WorkflowCloseTime
	}
	if st.Stage == workflows.StageRolledBack {
		st.Outcome = workflows.OutcomeRolledBack
		st.CandidateWeight = 0 // the rollback's last step; older releases kept the canary weight
	}
	st.Reason = endedReason(desc.Status, runErr)
	return st
}

// endedReason says how a workflow without a result ended.
func endedReason(s enumspb.WorkflowExecutionStatus, runErr error) string {
	switch s {
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "the release workflow was terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "the release workflow was cancelled"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "the release workflow timed out"
	}
	// The execution error only adds the IDs; its cause says what went wrong.
	var wee *temporal.WorkflowExecutionError
	if errors.As(runErr, &wee) && errors.Unwrap(wee) != nil {
		runErr = errors.Unwrap(wee)
	}
	return fmt.Sprintf("the release workflow ended %s: %v", statusName(s), runErr)
}

// Watch polls the model's release every interval until it ends, calling onChange with
// each status that differs from the last one, and returns the final status. A release
// whose workflow closed without ending (terminated, say) is an error. Failed polls
// (a worker restarting) are retried a few times in a row before Watch gives up.
func Watch(ctx context.Context, c client.Client, model string, every time.Duration, onChange func(workflows.Status)) (workflows.Status, error) {
	const maxFailedPolls = 5
	if every <= 0 {
		every = 2 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()

	var last workflows.Status
	var lastJSON []byte
	failed := 0
	for {
		st, closed, err := fetch(ctx, c, model)
		switch {
		case err == nil:
			failed = 0
			last = st
			if b, _ := json.Marshal(st); !bytes.Equal(b, lastJSON) {
				lastJSON = b
				if onChange != nil {
					onChange(st)
				}
			}
			if st.Stage.Done() {
				return st, nil
			}
			if closed {
				return st, fmt.Errorf("release of model %s ended at stage %s without an outcome: %s", model, st.Stage, st.Reason)
			}
		case errors.Is(err, ErrNoRelease) || ctx.Err() != nil:
			return last, err
		default:
			if failed++; failed >= maxFailedPolls {
				return last, fmt.Errorf("watch release of model %s: %d polls failed in a row: %w", model, failed, err)
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-tick.C:
		}
	}
}

// notFoundOr turns the server's NotFound into ErrNoRelease for model and returns
// wrapped otherwise.
func notFoundOr(model string, wrapped, err error) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return fmt.Errorf("%w for model %s (workflow %s): start one with `mlrelease start -f plan.yaml`",
			ErrNoRelease, model, workflows.WorkflowID(model))
	}
	return wrapped
}

// statusName is a workflow execution status in lower case ("completed").
func statusName(s enumspb.WorkflowExecutionStatus) string {
	switch s {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return "running"
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return "completed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		return "failed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "cancelled"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return "continued_as_new"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "timed_out"
	case enumspb.WORKFLOW_EXECUTION_STATUS_PAUSED:
		return "paused"
	}
	return "unknown"
}
