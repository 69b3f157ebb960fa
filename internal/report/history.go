package report

import (
	"errors"
	"fmt"
	"io"
	"slices"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

// FromHistory reads a release from its workflow history as `temporal workflow show
// --output json` exports it: the status in its result, and every round the release
// wrote to its audit log (the inputs of its RecordEvents activities), so an exported
// history is a report that needs no server. A release that has not completed has no
// result to read: ask the running release instead (FromRelease).
func FromHistory(r io.Reader) (Release, error) {
	h, err := client.HistoryFromJSON(r, client.HistoryJSONOptions{})
	if err != nil {
		return Release{}, fmt.Errorf("read the history: %w", err)
	}
	dc := converter.GetDefaultDataConverter()
	var rel Release
	var audit []registry.Event
	done := false
	for _, e := range h.GetEvents() {
		switch e.GetEventType() {
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			a := e.GetActivityTaskScheduledEventAttributes()
			if a.GetActivityType().GetName() != "RecordEvents" {
				continue
			}
			var model string
			var events []registry.Event
			if err := dc.FromPayloads(a.GetInput(), &model, &events); err != nil {
				return Release{}, fmt.Errorf("event %d: read the audit events: %w", e.GetEventId(), err)
			}
			audit = append(audit, events...)
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
			var res workflows.Result
			if err := dc.FromPayloads(e.GetWorkflowExecutionCompletedEventAttributes().GetResult(), &res); err != nil {
				return Release{}, fmt.Errorf("read the release's result: %w", err)
			}
			rel.Status, done = res.Status, true
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
			// A release that failed after its rollback puts its status in the error.
			if st, ok := statusIn(dc, e.GetWorkflowExecutionFailedEventAttributes().GetFailure().GetApplicationFailureInfo().GetDetails()); ok {
				rel.Status, done = st, true
			}
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
			if st, ok := statusIn(dc, e.GetWorkflowExecutionCanceledEventAttributes().GetDetails()); ok {
				rel.Status, done = st, true
			}
		}
	}
	if !done {
		return Release{}, fmt.Errorf("the history has no result: the release is running, continued as new, or failed; ask the release itself (mlrelease report MODEL)")
	}
	var rounds []workflows.AnalysisRound
	if len(audit) > 0 {
		// Decisions only (no round in this run's audit events) is no error.
		ev, err := release.EvidenceOf(rel.Status.Model, rel.Status.ReleaseRun, audit)
		if err != nil && !errors.Is(err, release.ErrNoRelease) {
			return Release{}, err
		}
		rounds = ev.Rounds
	}
	rel.Rounds = completeRounds(rounds, rel.Status)
	if len(rel.Status.Decisions) > 0 {
		rel.Now = rel.Status.UpdatedAt
	}
	return rel, nil
}

// statusIn reads a status from an ended release's error details.
func statusIn(dc converter.DataConverter, details *commonpb.Payloads) (workflows.Status, bool) {
	var st workflows.Status
	if details == nil || dc.FromPayloads(details, &st) != nil || st.ReleaseID == "" {
		return st, false
	}
	return st, true
}

// completeRounds are the audit log's rounds, and the status's own where the log has
// none (releases from before the audit log kept every round in their status).
func completeRounds(logged []workflows.AnalysisRound, st workflows.Status) []workflows.AnalysisRound {
	if len(logged) > 0 {
		return logged
	}
	out := slices.Clone(st.Analyses)
	for i := range out {
		if out[i].Round == 0 {
			out[i].Round = i + 1
		}
	}
	return out
}
