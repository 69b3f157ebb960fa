package activities_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
)

// countingMetrics answers every query with 0.001 and counts the reads.
type countingMetrics struct {
	mu    sync.Mutex
	reads []time.Time
}

func (m *countingMetrics) Value(context.Context, string, time.Time) (*float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads = append(m.reads, time.Now())
	v := 0.001
	return &v, nil
}

func (m *countingMetrics) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.reads)
}

// roundsInput is what roundsWorkflow hands over, and when to cancel.
type roundsInput struct {
	Rounds      activities.RoundsInput
	CancelAfter int
	Heartbeat   time.Duration
}

// roundsWorkflow hands rounds over as a release does and returns every round it got,
// in order, the last from the activity's result; with CancelAfter it cancels the
// hand-over after that many rounds and waits for it to end cancelled, keeping the
// rounds sent before.
func roundsWorkflow(ctx workflow.Context, in roundsInput) ([]activities.Round, error) {
	info := workflow.GetInfo(ctx)
	in.Rounds.WorkflowID, in.Rounds.RunID = info.WorkflowExecution.ID, info.WorkflowExecution.RunID
	ch := workflow.GetSignalChannel(ctx, activities.RoundSignal)
	actx, cancel := workflow.WithCancel(ctx)
	actx = workflow.WithActivityOptions(actx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute,
		HeartbeatTimeout: in.Heartbeat, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1}, WaitForCancellation: true})
	f := workflow.ExecuteActivity(actx, "AnalyzeRounds", in.Rounds)
	var got []activities.Round
	for {
		var done bool
		var err error
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(ch, func(c workflow.ReceiveChannel, _ bool) {
			var r activities.Round
			c.Receive(ctx, &r)
			got = append(got, r)
		})
		sel.AddFuture(f, func(f workflow.Future) {
			var r *activities.Round
			if err = f.Get(ctx, &r); r != nil {
				got = append(got, *r)
			}
			done = true
		})
		sel.Select(ctx)
		if in.CancelAfter > 0 && len(got) == in.CancelAfter {
			// Wait for the clock to report the cancellation; keep what it sent first.
			cancel()
			err := f.Get(ctx, nil)
			var r activities.Round
			for ch.ReceiveAsync(&r) {
				got = append(got, r)
			}
			if !temporal.IsCanceledError(err) {
				return nil, fmt.Errorf("the hand-over ended with %v, not cancelled", err)
			}
			return got, nil
		}
		if done {
			return got, err
		}
	}
}

// The round clock on a real Temporal server: rounds come when due on the bake's
// clock, as signals and the last as the result; a clock that fell behind skips to the
// latest round due; a cancelled hand-over stops at its next heartbeat; a worker that
// stops hands its bakes back at once.
func TestRoundClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = srv.Stop() }()
	c := srv.Client()

	metrics := &countingMetrics{}
	rounds := activities.StartRoundClock(c, slog.New(slog.DiscardHandler))
	w := worker.New(c, "rounds", worker.Options{})
	w.RegisterWorkflow(roundsWorkflow)
	w.RegisterActivity(&activities.Activities{Metrics: metrics, Rounds: rounds})
	require.NoError(t, w.Start())
	defer w.Stop()

	max := 1.0
	analyze := activities.AnalyzeInput{Model: "m", Champion: "1", Candidate: "2",
		Metrics: []plan.Metric{{Name: "errors", Query: `errors{variant="{{.Variant}}"}`, Max: &max}}}
	run := func(id string, in roundsInput) ([]activities.Round, error) {
		if in.Heartbeat == 0 {
			in.Heartbeat = 5 * time.Second
		}
		r, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "rounds"}, roundsWorkflow, in)
		require.NoError(t, err)
		var got []activities.Round
		err = r.Get(ctx, &got)
		return got, err
	}
	indexes := func(rs []activities.Round) []int {
		var out []int
		for _, r := range rs {
			out = append(out, r.Index)
		}
		return out
	}

	t.Run("on the bake's clock", func(t *testing.T) {
		in := analyze
		in.Interval = plan.Duration(time.Second)
		start := time.Now()
		got, err := run("on-time", roundsInput{Rounds: activities.RoundsInput{Driver: 7, Start: start, Last: 3, Analyze: in}})
		require.NoError(t, err)
		require.Equal(t, []int{1, 2, 3}, indexes(got))
		for _, r := range got {
			require.Equal(t, 7, r.Driver)
			require.Len(t, r.Measurements, 1)
			require.Equal(t, "pass", string(r.Measurements[0].Verdict))
			due := start.Add(time.Duration(r.Index) * time.Second)
			require.False(t, r.Measurements[0].At.Before(due), "round %d analysed at %s, before it was due at %s", r.Index, r.Measurements[0].At, due)
		}
	})

	t.Run("fallen behind", func(t *testing.T) {
		// Rounds 1 and 2 of a 2 s interval were due 3 s and 1 s ago: the clock takes
		// round 2, the latest due, at once, then round 3 when it is due.
		in := analyze
		in.Interval = plan.Duration(2 * time.Second)
		got, err := run("behind", roundsInput{Rounds: activities.RoundsInput{Driver: 1, Start: time.Now().Add(-5 * time.Second), Last: 3, Analyze: in}})
		require.NoError(t, err)
		require.Equal(t, []int{2, 3}, indexes(got))
	})

	t.Run("cancelled", func(t *testing.T) {
		// The clock sees a cancellation at its next heartbeat, every second here: by
		// then it may have sent one more round (the release ignores it), never more.
		before := metrics.count()
		in := analyze
		in.Interval = plan.Duration(time.Second)
		got, err := run("cancelled", roundsInput{Rounds: activities.RoundsInput{Driver: 1, Start: time.Now(), Last: 10, Analyze: in},
			CancelAfter: 2, Heartbeat: 2 * time.Second})
		require.NoError(t, err, "the hand-over ends cancelled")
		require.LessOrEqual(t, len(got), 3)
		// Each round reads the candidate's value and the champion's; nothing more is
		// analysed once the clock has reported the cancellation.
		require.Equal(t, 2*len(got), metrics.count()-before)
	})

	t.Run("worker stops", func(t *testing.T) {
		in := analyze
		in.Interval = plan.Duration(time.Minute)
		r, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "stops", TaskQueue: "rounds"}, roundsWorkflow,
			roundsInput{Rounds: activities.RoundsInput{Driver: 1, Start: time.Now(), Last: 3, Analyze: in}, Heartbeat: time.Hour})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			desc, err := c.DescribeWorkflowExecution(ctx, r.GetID(), "")
			return err == nil && len(desc.GetPendingActivities()) == 1 &&
				desc.GetPendingActivities()[0].GetState() == enumspb.PENDING_ACTIVITY_STATE_STARTED
		}, 30*time.Second, 50*time.Millisecond, "the hand-over never started")
		stopped := time.Now()
		rounds.Stop()
		err = r.Get(ctx, nil)
		var app *temporal.ApplicationError
		require.True(t, errors.As(err, &app), "%v", err)
		require.Equal(t, "WorkerStopping", app.Type())
		require.Less(t, time.Since(stopped), 10*time.Second, "handed back at once, not after the heartbeat timeout (1 h)")
	})
}
