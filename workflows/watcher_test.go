package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// fakeWatchedRegistry stands in for the registry behind the watcher's activities:
// versions carry the mark until the watcher tags them.
type fakeWatchedRegistry struct {
	mu      sync.Mutex
	marked  []activities.MarkedVersion
	tags    map[string]map[string]string // model/version -> tags
	refused map[string]string            // model/version -> reason PrepareRelease gives
}

func (f *fakeWatchedRegistry) find(_ context.Context, _ registry.Mark) ([]activities.MarkedVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []activities.MarkedVersion
	for _, v := range f.marked {
		if f.tags[v.Model+"/"+v.Version][activities.TagWatched] == "" {
			out = append(out, v)
		}
	}
	return out, nil
}

func (f *fakeWatchedRegistry) change(c activities.RegistryChange) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := c.Model + "/" + c.Version
	if f.tags[k] == nil {
		f.tags[k] = map[string]string{}
	}
	for key, v := range c.Tags {
		f.tags[k][key] = v
	}
	return nil
}

func (f *fakeWatchedRegistry) prepare(_ context.Context, in activities.PrepareInput) (activities.Prepared, error) {
	if reason := f.refused[in.Model+"/"+in.Version]; reason != "" {
		return activities.Prepared{Refused: reason}, nil
	}
	p := plan.Plan{Model: in.Model, Candidate: in.Version}
	return activities.Prepared{Plan: &p, Champion: "1"}, nil
}

func newWatcherEnv(t *testing.T, f *fakeWatchedRegistry) *testsuite.TestWorkflowEnvironment {
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(WatcherWorkflow, workflow.RegisterOptions{Name: WatcherWorkflowName})
	env.RegisterWorkflowWithOptions(ReleaseWorkflow, workflow.RegisterOptions{Name: WorkflowName})
	env.RegisterActivity(a)
	env.OnActivity(a.FindMarked, mock.Anything, mock.Anything).Return(f.find)
	env.OnActivity(a.PrepareRelease, mock.Anything, mock.Anything).Return(f.prepare)
	env.OnActivity(a.ChangeRegistry, mock.Anything, mock.Anything).Return(func(_ context.Context, c activities.RegistryChange) error { return f.change(c) })
	return env
}

func TestWatcherStartsOneReleasePerVersionAndContinuesAsNew(t *testing.T) {
	f := &fakeWatchedRegistry{
		marked:  []activities.MarkedVersion{{Model: "wine", Version: "2"}, {Model: "wine", Version: "4", Plan: "nope"}},
		tags:    map[string]map[string]string{},
		refused: map[string]string{"wine/4": "no plan nope for model wine"},
	}
	env := newWatcherEnv(t, f)
	var releases []ReleaseInput
	env.OnWorkflow(WorkflowName, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in ReleaseInput) (*Result, error) {
		releases = append(releases, in)
		return &Result{Outcome: OutcomePromoted}, nil
	})
	// A second, identical mark on version 2 half-way through: still one release.
	env.RegisterDelayedCallback(func() {
		f.mu.Lock()
		f.marked = append(f.marked, activities.MarkedVersion{Model: "wine", Version: "2"})
		f.mu.Unlock()
	}, 2*time.Minute)

	env.ExecuteWorkflow(WatcherWorkflowName, WatcherInput{Mark: registry.Mark{Alias: "challenger"}, PlansDir: "/plans",
		Interval: time.Minute, PollsPerRun: 5})

	require.True(t, env.IsWorkflowCompleted())
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "continues as new after PollsPerRun polls: %v", env.GetWorkflowError())
	require.Len(t, releases, 1, "exactly one release")
	require.Equal(t, "2", releases[0].Plan.Candidate)
	require.Equal(t, WatcherActor, releases[0].StartedBy)
	require.Contains(t, f.tags["wine/2"][activities.TagWatched], "started ")
	require.Equal(t, "refused", f.tags["wine/4"][activities.TagWatched])
	require.Equal(t, OutcomeNotStarted, f.tags["wine/4"][TagOutcome])
	require.Equal(t, "no plan nope for model wine", f.tags["wine/4"][TagReason])

	// The next run carries the counters.
	var next WatcherInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.Equal(t, 5, next.Status.Polls)
	require.Equal(t, 1, next.Status.Started)
	require.Equal(t, 1, next.Status.Refused)
	require.Equal(t, 1, next.Status.Runs)
}

func TestWatcherLeavesAVersionWaitingWhileTheModelHasARelease(t *testing.T) {
	f := &fakeWatchedRegistry{marked: []activities.MarkedVersion{{Model: "wine", Version: "3"}}, tags: map[string]map[string]string{}}
	env := newWatcherEnv(t, f)
	starts := 0
	env.OnWorkflow(WorkflowName, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in ReleaseInput) (*Result, error) {
		starts++
		// The release runs longer than the watcher's run: the next polls find the
		// model busy (the child ID is taken) and start nothing.
		_ = workflow.Sleep(ctx, time.Hour)
		return &Result{Outcome: OutcomeRolledBack}, nil
	})
	env.ExecuteWorkflow(WatcherWorkflow, WatcherInput{Mark: registry.Mark{TagKey: "mlrelease.release", TagValue: "requested"},
		Interval: time.Minute, PollsPerRun: 3})
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "%v", env.GetWorkflowError())
	require.Equal(t, 1, starts)
}

func TestWatcherTagsAgreeWithTheRelease(t *testing.T) {
	// activities.Released reads the tag every release writes.
	v := registry.Version{Tags: map[string]string{TagRelease: "release/wine"}}
	require.True(t, activities.Released(v, registry.Mark{Alias: "challenger"}))
	require.False(t, activities.Released(registry.Version{Tags: map[string]string{TagRelease: "requested"}},
		registry.Mark{TagKey: TagRelease, TagValue: "requested"}), "the mark itself is not a release")
}
