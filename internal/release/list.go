package release

import (
	"context"
	"fmt"
	"slices"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/workflows"
)

// Release is one release as the server's visibility store lists it.
type Release struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	Model      string `json:"model"`
	// Status is the workflow's execution status: running, completed, failed, ...
	Status string `json:"status"`
	// Stage, Candidate and Weight are the search attributes the release keeps current.
	Stage     workflows.Stage `json:"stage"`
	Candidate string          `json:"candidate"`
	Weight    int             `json:"weight"`
	StartedAt time.Time       `json:"startedAt"`
	// ClosedAt is zero while the release runs.
	ClosedAt time.Time `json:"closedAt"`
}

// List returns the releases of every model, or of model when it is not empty, newest
// first. Visibility is eventually consistent: a release started a moment ago may not
// be listed yet.
func List(ctx context.Context, c client.Client, model string) ([]Release, error) {
	query := fmt.Sprintf("WorkflowType = '%s'", workflows.WorkflowName)
	if model != "" {
		if !plan.ValidName(model) {
			return nil, fmt.Errorf("list releases: model %q must be letters, digits, '.', '_' or '-'", model)
		}
		query += fmt.Sprintf(" AND %s = '%s'", workflows.ModelKey.GetName(), model)
	}
	var out []Release
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list releases (%s): %w", query, err)
		}
		for _, e := range resp.GetExecutions() {
			// A run that continued as new is not a release of its own: the release
			// goes on in its latest run, which is listed.
			if e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW {
				continue
			}
			r := Release{
				WorkflowID: e.GetExecution().GetWorkflowId(),
				RunID:      e.GetExecution().GetRunId(),
				Status:     statusName(e.GetStatus()),
				StartedAt:  e.GetStartTime().AsTime(),
			}
			if e.GetCloseTime() != nil {
				r.ClosedAt = e.GetCloseTime().AsTime()
			}
			fields := e.GetSearchAttributes().GetIndexedFields()
			var stage string
			decode(fields, workflows.ModelKey.GetName(), &r.Model)
			decode(fields, workflows.StageKey.GetName(), &stage)
			decode(fields, workflows.CandidateVersionKey.GetName(), &r.Candidate)
			decode(fields, workflows.CanaryWeightKey.GetName(), &r.Weight)
			r.Stage = workflows.Stage(stage)
			if r.Stage == workflows.StageRolledBack {
				r.Weight = 0 // releases from before the rollback zeroed the attribute
			}
			out = append(out, r)
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	slices.SortStableFunc(out, func(a, b Release) int { return b.StartedAt.Compare(a.StartedAt) })
	return out, nil
}

// decode reads one search attribute; a missing or unreadable one leaves v as it is,
// since a listing should not fail on one odd row.
func decode(fields map[string]*commonpb.Payload, name string, v any) {
	if p, ok := fields[name]; ok {
		_ = converter.GetDefaultDataConverter().FromPayload(p, v)
	}
}
