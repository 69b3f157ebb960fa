// Package release is the client side of releases: it starts a model's release after
// checking the plan and the registry, reads its status, sends decisions, lists and
// watches releases. The mlrelease CLI, the end-to-end tests and the Slack handler
// share it, so each of them talks to ReleaseWorkflow the same way.
package release

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows"
)

// StagePending is the stage search attribute of a release that no worker has picked
// up yet; the workflow replaces it with its first stage.
const StagePending = "pending"

// WorkerTimeout bounds the calls that need a worker to answer (the status query, a
// decision update): without a worker they would wait forever.
const WorkerTimeout = 10 * time.Second

var (
	// ErrAlreadyRunning means the model has a release running; at most one may run.
	// The error also wraps the server's *serviceerror.WorkflowExecutionAlreadyStarted.
	ErrAlreadyRunning = errors.New("a release is already running")
	// ErrNoRelease means the model has no release at all.
	ErrNoRelease = errors.New("no release found")
	// ErrRefused means the release refused a decision (its validator said why).
	ErrRefused = errors.New("refused")
)

// StartOptions says what to release.
type StartOptions struct {
	// Plan is the validated plan; Start does not change it.
	Plan *plan.Plan
	// PlanDir is the plan file's directory: a relative staging dataset path is taken
	// relative to it. Empty means the working directory.
	PlanDir string
	// Version, when set, overrides the plan's candidate version.
	Version string
	// StartedBy is who starts the release, for the record.
	StartedBy string
	// TaskQueue is the worker's task queue; empty means workflows.TaskQueue.
	TaskQueue string
	// Signer, when set, signs the start, and StartedBy becomes its principal: with
	// four eyes, its key may then not approve.
	Signer *Signer
	// ReportURL is where people reach the worker's release reports
	// (MLRELEASE_REPORT_URL); the release's details link to its page there.
	ReportURL string
}

// ReportLink is the page of a model's latest release among the worker's reports.
func ReportLink(base, model string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/releases/" + url.PathEscape(model)
}

// Start checks the plan and the registry, then starts the model's release. Nothing
// starts when the plan is invalid, the model has no champion, or the candidate
// version is unknown or already the champion. A release already running for the
// model is ErrAlreadyRunning.
func Start(ctx context.Context, c client.Client, reg registry.Registry, opts StartOptions) (client.WorkflowRun, error) {
	if opts.Plan == nil {
		return nil, errors.New("start release: no plan")
	}
	p := *opts.Plan
	if opts.Version != "" {
		p.Candidate = opts.Version
	}
	if ds := p.Staging.Dataset; ds != "" && !filepath.IsAbs(ds) {
		abs, err := filepath.Abs(filepath.Join(opts.PlanDir, ds))
		if err != nil {
			return nil, fmt.Errorf("staging dataset %s: %w", ds, err)
		}
		p.Staging.Dataset = abs
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("plan of model %q is invalid:\n%w", p.Model, err)
	}

	champion, candidate, err := resolve(ctx, reg, p.Model, p.Candidate)
	if err != nil {
		return nil, err
	}
	// The release works on the version checked here, even if the challenger alias
	// moves before the worker resolves it.
	p.Candidate = candidate.Version

	// The keys the release will trust, and the start's signature (rule 9).
	var trust workflows.StartTrust
	if trust.AllowedSigners, err = readAllowedSigners(p.Approval.AllowedSigners, opts.PlanDir); err != nil {
		return nil, err
	}
	startedBy := opts.StartedBy
	if opts.Signer != nil {
		startedBy = opts.Signer.Principal
		if trust.StartSigned, err = opts.Signer.signStart(workflows.WorkflowID(p.Model), p, trust.AllowedSigners); err != nil {
			return nil, err
		}
	}

	taskQueue := opts.TaskQueue
	if taskQueue == "" {
		taskQueue = workflows.TaskQueue
	}
	id := workflows.WorkflowID(p.Model)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                       id,
		TaskQueue:                taskQueue,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// Without it the SDK hands back the running release as if it had started ours.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.ModelKey.ValueSet(p.Model),
			workflows.CandidateVersionKey.ValueSet(candidate.Version),
			workflows.StageKey.ValueSet(StagePending),
			workflows.CanaryWeightKey.ValueSet(0),
		),
		StaticSummary: Summary(p.Model, candidate.Version, champion.Version),
		StaticDetails: Details(p, champion.Version, startedBy) + reportLine(ReportLink(opts.ReportURL, p.Model)),
	}, workflows.ReleaseWorkflow, workflows.ReleaseInput{Plan: p, StartedBy: startedBy, StartTrust: trust, Report: ReportLink(opts.ReportURL, p.Model)})
	if err != nil {
		return nil, startError(p.Model, err)
	}
	return run, nil
}

// reportLine is the static details' link to the report, in markdown.
func reportLine(link string) string {
	if link == "" {
		return ""
	}
	return "\n\n[release report](" + link + "): the evidence as pictures"
}

// resolve checks, before anything starts, what the workflow's first step will check
// again: a champion to release against and a candidate that is another version.
func resolve(ctx context.Context, reg registry.Registry, model, version string) (champion, candidate registry.Version, err error) {
	champion, err = reg.ResolveAlias(ctx, model, registry.AliasChampion)
	if errors.Is(err, registry.ErrNotFound) {
		return champion, candidate, fmt.Errorf("model %s has no champion to release against (%w): register the version serving production with `mlrelease register %s VERSION --endpoint URL --alias champion`",
			model, err, model)
	}
	if err != nil {
		return champion, candidate, fmt.Errorf("model %s: read its champion from the registry: %w", model, err)
	}

	if version == "" {
		candidate, err = reg.ResolveAlias(ctx, model, registry.AliasChallenger)
		if errors.Is(err, registry.ErrNotFound) {
			return champion, candidate, fmt.Errorf("model %s: the plan names no candidate version and no version has the challenger alias (%w): pass --version V or set candidate in the plan",
				model, err)
		}
	} else {
		candidate, err = reg.GetVersion(ctx, model, version)
		if errors.Is(err, registry.ErrNotFound) {
			return champion, candidate, fmt.Errorf("version %s of model %s is not in the registry (%w): register it with `mlrelease register %s %s --endpoint URL`, or release another version",
				version, model, err, model, version)
		}
	}
	if err != nil {
		return champion, candidate, fmt.Errorf("model %s: read candidate version %q from the registry: %w", model, version, err)
	}

	switch {
	case candidate.Version == champion.Version:
		return champion, candidate, fmt.Errorf("version %s of model %s is already the champion: nothing to release; name another version with --version",
			candidate.Version, model)
	case candidate.Endpoint == "":
		return champion, candidate, fmt.Errorf("version %s of model %s has no serving endpoint in the registry: register it again with --endpoint URL",
			candidate.Version, model)
	case champion.Endpoint == "":
		return champion, candidate, fmt.Errorf("champion version %s of model %s has no serving endpoint in the registry: register it again with --endpoint URL",
			champion.Version, model)
	}
	return champion, candidate, nil
}

func startError(model string, err error) error {
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return &alreadyRunningError{model: model, cause: err}
	}
	var invalid *serviceerror.InvalidArgument
	if errors.As(err, &invalid) && strings.Contains(strings.ToLower(invalid.Message), "search attribute") {
		return fmt.Errorf("start release of model %s: %w: register mlrelease's search attributes on the Temporal server (temporal operator search-attribute create --name MlreleaseModel --type Keyword, and MlreleaseCandidateVersion Keyword, MlreleaseStage Keyword, MlreleaseCanaryWeight Int)",
			model, err)
	}
	return fmt.Errorf("start release of model %s: %w", model, err)
}

// alreadyRunningError is ErrAlreadyRunning for one model, wrapping the server's error.
type alreadyRunningError struct {
	model string
	cause error
}

func (e *alreadyRunningError) Error() string {
	return fmt.Sprintf("a release of model %s is already running (workflow %s): watch it with `mlrelease watch %s`, or abort it",
		e.model, workflows.WorkflowID(e.model), e.model)
}

func (e *alreadyRunningError) Unwrap() []error { return []error{ErrAlreadyRunning, e.cause} }

// Summary is a release's one-line summary in the Web UI.
func Summary(model, candidate, champion string) string {
	return fmt.Sprintf("release %s %s (champion %s)", model, candidate, champion)
}

// Details is the plan in short markdown, for the Web UI's static details.
func Details(p plan.Plan, champion, startedBy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**Release of %s**: candidate `%s` against champion `%s`", p.Model, p.Candidate, champion)
	if startedBy != "" {
		fmt.Fprintf(&b, ", started by %s", startedBy)
	}
	b.WriteString("\n\n")

	s := p.Staging
	if s.Dataset == "" {
		b.WriteString("- staging: skipped (no evaluation set)\n")
	} else {
		fmt.Fprintf(&b, "- staging: evaluation set `%s`, accuracy at least %g", s.Dataset, s.MinAccuracy)
		if s.MaxAccuracyDrop != nil {
			fmt.Fprintf(&b, " and at most %g below the champion", *s.MaxAccuracyDrop)
		}
		if s.MaxP99Latency > 0 {
			fmt.Fprintf(&b, ", p99 latency at most %s", s.MaxP99Latency)
		}
		b.WriteString("\n")
	}

	if p.Shadow.Share == 0 {
		b.WriteString("- shadow: skipped\n")
	} else {
		fmt.Fprintf(&b, "- shadow: %d%% of traffic mirrored for %s\n", p.Shadow.Share, p.Shadow.Duration)
	}

	steps := make([]string, len(p.Canary.Steps))
	for i, st := range p.Canary.Steps {
		steps[i] = fmt.Sprintf("%d%% for %s", st.Weight, st.Bake)
	}
	metrics := make([]string, len(p.Analysis.Metrics))
	for i, m := range p.Analysis.Metrics {
		metrics[i] = m.Name
	}
	fmt.Fprintf(&b, "- canary: %s; analysed every %s on %s\n", strings.Join(steps, " → "), p.Analysis.Interval, strings.Join(metrics, ", "))

	ap := p.Approval
	switch {
	case ap.Required:
		fmt.Fprintf(&b, "- approval: required from %s within %s, else %s\n", strings.Join(ap.Approvers, ", "), ap.Timeout, ap.OnTimeout)
	case ap.Waits():
		fmt.Fprintf(&b, "- approval: veto window of %s, then %s\n", ap.Timeout, ap.OnTimeout)
	default:
		b.WriteString("- approval: none\n")
	}

	if w := p.PostPromotion.Watch; w > 0 {
		fmt.Fprintf(&b, "- after promotion: watched for %s with the old champion kept warm\n", w)
	} else {
		b.WriteString("- after promotion: no watch\n")
	}
	return b.String()
}

// WebUIURL is the link to a workflow in the Temporal Web UI; the UI redirects it to
// the latest run. The ID is one path segment, so its "/" is escaped.
func WebUIURL(base, namespace, workflowID string) string {
	if namespace == "" {
		namespace = "default"
	}
	return strings.TrimRight(base, "/") + "/namespaces/" + url.PathEscape(namespace) + "/workflows/" + url.PathEscape(workflowID)
}
