package release

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/workflows"
)

// Decide sends a decision (workflows.Approve, Reject, Pause, Resume or Abort) to the
// model's running release.
//
// As an update it waits until the release has recorded the decision and returns it;
// a decision the release refuses is an error wrapping ErrRefused ("refused: <reason>").
// As a signal (viaSignal) it returns once the server has the signal: a worker need
// not run, the returned Decision is what was sent, and the release checks it when it
// takes it, recording a refusal in its status instead of applying it.
func Decide(ctx context.Context, c client.Client, model, kind string, req workflows.DecisionRequest, viaSignal bool) (workflows.Decision, error) {
	if !slices.Contains(workflows.Decisions, kind) {
		return workflows.Decision{}, fmt.Errorf("unknown decision %q: use one of %s", kind, strings.Join(workflows.Decisions, ", "))
	}
	id := workflows.WorkflowID(model)

	if viaSignal {
		if err := c.SignalWorkflow(ctx, id, "", kind, req); err != nil {
			return workflows.Decision{}, decideError(ctx, c, model, kind, err)
		}
		return workflows.Decision{Kind: kind, Who: strings.TrimSpace(req.Who), Comment: req.Comment, Source: req.Source,
			Channel: "signal", At: time.Now().UTC()}, nil
	}

	uctx, cancel := context.WithTimeout(ctx, WorkerTimeout)
	defer cancel()
	var d workflows.Decision
	h, err := c.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   kind,
		Args:         []any{req},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(uctx, &d)
	}
	if err != nil {
		// The server gives up on the update a moment before uctx expires.
		var timedOut *client.WorkflowUpdateServiceTimeoutOrCanceledError
		if ctx.Err() == nil && (uctx.Err() != nil || errors.As(err, &timedOut)) {
			return d, fmt.Errorf("%s the release of model %s: no worker took the decision within %s: is the mlrelease worker running? (--signal queues it for when one runs)",
				kind, model, WorkerTimeout)
		}
		return d, decideError(ctx, c, model, kind, err)
	}
	return d, nil
}

func decideError(ctx context.Context, c client.Client, model, kind string, err error) error {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return fmt.Errorf("%s the release of model %s: %w: %s", kind, model, ErrRefused, app.Message())
	}
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		return fmt.Errorf("%s the release of model %s: %w", kind, model, err)
	}
	// NotFound is also what a closed workflow answers: say which.
	desc, derr := c.DescribeWorkflow(ctx, workflows.WorkflowID(model), "")
	if derr == nil && desc.Status != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return fmt.Errorf("%s the release of model %s: the release has ended (%s): nothing to decide; see `mlrelease status %s`",
			kind, model, statusName(desc.Status), model)
	}
	return notFoundOr(model, fmt.Errorf("%s the release of model %s: %w", kind, model, err), err)
}
