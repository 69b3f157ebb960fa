package workflows

import (
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// Names of the release watcher.
const (
	// WatcherWorkflowName is WatcherWorkflow's registered name.
	WatcherWorkflowName = "WatcherWorkflow"
	// WatcherWorkflowID is the one watcher of a namespace; the worker starts it when
	// a plans folder is configured.
	WatcherWorkflowID = "mlrelease-watcher"
	// QueryWatcher returns a WatcherStatus.
	QueryWatcher = "watcher"
	// WatcherActor is who the watcher's releases are started by.
	WatcherActor = "mlrelease-watcher"
	// DefaultPollsPerRun bounds one run's history before it continues as new.
	DefaultPollsPerRun = 100
	// OutcomeNotStarted tags a marked version the watcher could not release.
	OutcomeNotStarted = "not_started"
)

// WatcherInput configures the watcher. It carries its counters across
// continue-as-new.
type WatcherInput struct {
	// Mark is what asks for a release: an alias (challenger) or a tag.
	Mark registry.Mark `json:"mark"`
	// PlansDir holds MODEL.yaml per model (and plans a version's mlrelease.plan names).
	PlansDir string `json:"plansDir"`
	// Interval between polls of the registry.
	Interval time.Duration `json:"interval"`
	// TaskQueue of the releases; empty means the watcher's own.
	TaskQueue string `json:"taskQueue,omitempty"`
	// PollsPerRun: after this many polls the watcher continues as new; 0 means
	// DefaultPollsPerRun.
	PollsPerRun int `json:"pollsPerRun,omitempty"`
	// Status so far, carried from the previous run.
	Status WatcherStatus `json:"status"`
}

// WatcherStatus is what the watcher query returns.
type WatcherStatus struct {
	// Polls counts every poll since the watcher first started; Runs its runs.
	Polls int `json:"polls"`
	Runs  int `json:"runs"`
	// Started and Refused count versions, over all runs; Last lists the latest few
	// (model/version: what happened).
	Started int       `json:"started"`
	Refused int       `json:"refused"`
	Last    []string  `json:"last,omitempty"`
	LastErr string    `json:"lastError,omitempty"`
	At      time.Time `json:"at"`
}

const watcherLastKept = 20

// WatcherWorkflow starts a release when a version gets the configured alias or tag.
// Each poll lists the marked versions that were never released; for each it
// prepares the release (the plan from the plans folder, the registry's checks) and
// either starts ReleaseWorkflow as an abandoned child with the model's release ID,
// or tags the version with why it cannot be released. A started or refused version
// is tagged mlrelease.watcher, so neither a second identical mark nor a restarted
// watcher releases it again; the child start itself is a workflow command, done
// once however often the worker restarts. A model that already has a release
// running keeps its marked version waiting for the next poll.
func WatcherWorkflow(ctx workflow.Context, in WatcherInput) error {
	if in.Interval <= 0 {
		in.Interval = 30 * time.Second
	}
	limit := in.PollsPerRun
	if limit <= 0 {
		limit = DefaultPollsPerRun
	}
	st := &in.Status
	st.Runs++
	if err := workflow.SetQueryHandler(ctx, QueryWatcher, func() (WatcherStatus, error) { return *st, nil }); err != nil {
		return err
	}
	logger := workflow.GetLogger(ctx)
	for polls := 0; polls < limit && !workflow.GetInfo(ctx).GetContinueAsNewSuggested(); polls++ {
		if err := watchOnce(ctx, in, st); err != nil {
			// A poll that fails (registry down) is retried at the next one.
			logger.Warn("watcher poll failed", "error", err)
			st.LastErr = err.Error()
		} else {
			st.LastErr = ""
		}
		st.Polls++
		st.At = workflow.Now(ctx)
		timer := workflow.NewTimerWithOptions(ctx, in.Interval, workflow.TimerOptions{Summary: "next poll of the registry for " + in.Mark.String()})
		if err := timer.Get(ctx, nil); err != nil {
			return err
		}
	}
	return workflow.NewContinueAsNewError(ctx, WatcherWorkflow, in)
}

// watchOnce polls the registry once and handles every marked version.
func watchOnce(ctx workflow.Context, in WatcherInput, st *WatcherStatus) error {
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3},
		Summary:             "find versions with " + in.Mark.String(),
	})
	var marked []activities.MarkedVersion
	if err := workflow.ExecuteActivity(actx, a.FindMarked, in.Mark).Get(ctx, &marked); err != nil {
		return err
	}
	for _, v := range marked {
		var p activities.Prepared
		pctx := workflow.WithActivityOptions(actx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3},
			Summary:             fmt.Sprintf("prepare the release of %s %s", v.Model, v.Version),
		})
		if err := workflow.ExecuteActivity(pctx, a.PrepareRelease, activities.PrepareInput{MarkedVersion: v, PlansDir: in.PlansDir}).Get(ctx, &p); err != nil {
			return err
		}
		if p.Refused != "" {
			if err := refuse(ctx, v, p.Refused); err != nil {
				return err
			}
			st.Refused++
			st.note(v, "refused: "+p.Refused)
			continue
		}
		started, err := startRelease(ctx, in, v, p)
		if err != nil {
			return err
		}
		if started {
			st.Started++
			st.note(v, "release started")
		}
	}
	return nil
}

// startRelease starts the version's release as a child that outlives the watcher,
// then tags the version. It reports false when the model has a release running.
func startRelease(ctx workflow.Context, in WatcherInput, v activities.MarkedVersion, p activities.Prepared) (bool, error) {
	taskQueue := in.TaskQueue
	if taskQueue == "" {
		taskQueue = workflow.GetInfo(ctx).TaskQueueName
	}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            WorkflowID(v.Model),
		TaskQueue:             taskQueue,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			ModelKey.ValueSet(v.Model),
			CandidateVersionKey.ValueSet(v.Version),
			StageKey.ValueSet("pending"),
			CanaryWeightKey.ValueSet(0),
		),
		StaticSummary: fmt.Sprintf("release %s %s (champion %s)", v.Model, v.Version, p.Champion),
		StaticDetails: fmt.Sprintf("**Release of %s**: candidate `%s` against champion `%s`, started by the release watcher when the version got %s",
			v.Model, v.Version, p.Champion, in.Mark.String()),
	})
	child := workflow.ExecuteChildWorkflow(cctx, ReleaseWorkflow, ReleaseInput{Plan: *p.Plan, StartedBy: WatcherActor})
	var exec workflow.Execution
	if err := child.GetChildWorkflowExecution().Get(ctx, &exec); err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			workflow.GetLogger(ctx).Info("a release of the model is running; the version waits for the next poll", "model", v.Model, "version", v.Version)
			return false, nil
		}
		return false, fmt.Errorf("start the release of %s %s: %w", v.Model, v.Version, err)
	}
	return true, mark(ctx, activities.RegistryChange{Model: v.Model, Version: v.Version,
		Tags: map[string]string{activities.TagWatched: "started " + exec.RunID},
		Event: registry.Event{Kind: "release_requested", Actor: WatcherActor,
			Message: fmt.Sprintf("release %s run %s started: the version got %s", exec.ID, exec.RunID, in.Mark.String())}})
}

// refuse tags a version that cannot be released with the reason.
func refuse(ctx workflow.Context, v activities.MarkedVersion, reason string) error {
	return mark(ctx, activities.RegistryChange{Model: v.Model, Version: v.Version,
		Tags:  map[string]string{activities.TagWatched: "refused", TagOutcome: OutcomeNotStarted, TagReason: reason},
		Event: registry.Event{Kind: "release_refused", Actor: WatcherActor, Message: reason}})
}

// mark writes the watcher's tags; it must land, so it is retried without limit.
func mark(ctx workflow.Context, c activities.RegistryChange) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		Summary:             fmt.Sprintf("registry: %s %s %s", c.Event.Kind, c.Model, c.Version),
	})
	return workflow.ExecuteActivity(ctx, a.ChangeRegistry, c).Get(ctx, nil)
}

func (s *WatcherStatus) note(v activities.MarkedVersion, what string) {
	s.Last = append(s.Last, v.Model+"/"+v.Version+": "+what)
	if n := len(s.Last); n > watcherLastKept {
		s.Last = s.Last[n-watcherLastKept:]
	}
}
