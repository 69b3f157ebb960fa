// Package roundtest stands in for the worker's round clock (activities.RoundClock)
// in Temporal's test environment, where no activity can signal a workflow.
package roundtest

import (
	"context"
	"sync"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
)

// Clock runs each hand-over's rounds on the workflow's clock, choosing them as the
// real clock does (activities.NextRound), each taking Takes() to analyse, and sends
// each but the last as a RoundSignal; the last is the activity's result. A cancelled
// hand-over sends nothing more; one whose analysis fails ends with the error.
type Clock struct {
	Env     *testsuite.TestWorkflowEnvironment
	Analyze func(in activities.AnalyzeInput) ([]analysis.Measurement, error)
	// Takes, when set, is how long a round's analysis takes on the workflow's clock.
	Takes func() time.Duration
	// OnHandOver, when set, is called at each hand-over.
	OnHandOver func()
	// Dies, when set, says whether a hand-over's worker dies after it sent the
	// round numbered after (From for none): it sends no more, and the hand-over
	// times out a heartbeat timeout later.
	Dies func(in activities.RoundsInput) (after int, dead bool)

	mu        sync.Mutex
	cancelled map[string]bool // by activity ID
	// final is the latest hand-over's last round: when it is due on the workflow's
	// clock, and the input to analyse it with (its states filled in by then).
	finalAt  time.Time
	final    *activities.RoundsInput
	finalK   int
	finalErr error
	// handOvers counts hand-overs started; started is the latest one's input.
	handOvers int
	started   *activities.RoundsInput
	startedID string
	heartbeat time.Duration
}

// HandOvers is the number of hand-overs so far.
func (f *Clock) HandOvers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.handOvers
}

// Install mocks AnalyzeRounds with the clock and listens for its starts and
// cancellations. It takes the environment's activity listeners.
func (f *Clock) Install() {
	f.cancelled = map[string]bool{}
	f.Env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		if info.ActivityType.Name != "AnalyzeRounds" {
			return
		}
		var in activities.RoundsInput
		if err := args.Get(&in); err != nil {
			panic(err)
		}
		// The listener runs inside the environment's loop, which cannot take
		// callbacks now: the mock plans the hand-over.
		f.mu.Lock()
		defer f.mu.Unlock()
		f.started, f.startedID, f.heartbeat = &in, info.ActivityID, info.HeartbeatTimeout
	})
	f.Env.SetOnActivityCanceledListener(func(info *activity.Info) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.cancelled[info.ActivityID] = true
	})
	f.Env.OnActivity("AnalyzeRounds", mock.Anything, mock.Anything).AfterFn(func() time.Duration {
		f.mu.Lock()
		in, id := *f.started, f.startedID
		f.mu.Unlock()
		f.handOver(id, in)
		f.mu.Lock()
		defer f.mu.Unlock()
		return max(f.finalAt.Sub(f.Env.Now()), 0)
	}).Return(func(context.Context, activities.RoundsInput) (*activities.Round, error) {
		f.mu.Lock()
		in, k, lost := *f.final, f.finalK, f.finalErr
		f.mu.Unlock()
		if lost != nil {
			return nil, lost
		}
		ms, err := f.Analyze(in.Analyze)
		if err != nil {
			return nil, err
		}
		return &activities.Round{Driver: in.Driver, Index: k, Measurements: ms}, nil
	}).Maybe()
}

// handOver plans a hand-over's rounds as the real clock would run them, and
// schedules each but the last.
func (f *Clock) handOver(id string, in activities.RoundsInput) {
	f.mu.Lock()
	f.handOvers++
	f.mu.Unlock()
	if f.OnHandOver != nil {
		f.OnHandOver()
	}
	interval := in.Analyze.Interval.D()
	states := in.Analyze.States
	now := f.Env.Now()
	after, dead := 0, false
	if f.Dies != nil {
		after, dead = f.Dies(in)
	}
	for from := in.From; ; {
		if dead && from >= after {
			last := in
			f.mu.Lock()
			f.final, f.finalAt = &last, now.Add(f.heartbeat)
			f.finalErr = temporal.NewTimeoutError(enumspb.TIMEOUT_TYPE_HEARTBEAT, nil)
			f.mu.Unlock()
			break
		}
		k, due := activities.NextRound(in.Start, interval, from, in.Last, now)
		now = maxTime(now, due).Add(f.takes())
		if k >= in.Last {
			last := in
			f.mu.Lock()
			f.final, f.finalK, f.finalAt, f.finalErr = &last, k, now, nil
			f.mu.Unlock()
			break
		}
		f.Env.RegisterDelayedCallback(func() {
			f.mu.Lock()
			gone := f.cancelled[id]
			f.mu.Unlock()
			if gone {
				return
			}
			round := in
			round.Analyze.States = states
			ms, err := f.Analyze(round.Analyze)
			f.mu.Lock()
			if err != nil {
				// As the real clock does, the hand-over ends with the error: here at
				// the time its last round was due, and nothing more is sent.
				f.cancelled[id] = true
				if f.final != nil && f.final.Driver == in.Driver {
					f.finalErr = err
				}
				f.mu.Unlock()
				return
			}
			states = activities.AdvanceStates(states, ms)
			if f.final != nil && f.final.Driver == in.Driver {
				f.final.Analyze.States = states
			}
			f.mu.Unlock()
			f.Env.SignalWorkflow(activities.RoundSignal, activities.Round{Driver: in.Driver, Index: k, Measurements: ms})
		}, now.Sub(f.Env.Now()))
		from = k
	}
}

func (f *Clock) takes() time.Duration {
	if f.Takes == nil {
		return 0
	}
	return f.Takes()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
