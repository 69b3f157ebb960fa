package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

// Since changeLocalIO's version 3 a bake's analysis rounds are pushed to the release
// instead of the release waking itself for each: the bake hands its rounds to the
// worker's round clock (activity AnalyzeRounds, completed asynchronously), which
// runs each round when it is due on the bake's clock and sends it as a signal; the
// last round is the activity's result. A round then costs the release four history
// events (the signal and a workflow task) where a timer and a local activity cost
// six. The release stays the judge: it takes each round as before, and only rounds
// of the hand-over it started last, in order.
//
// A hand-over lost with its worker (no heartbeat within its timeout) or failing for
// any reason but the analysis is started again from the last round taken, with the
// judges' states the release holds; after maxRoundsLost losses in a row without a
// round the stage fails. A failed analysis fails the stage, as it did as an activity.

// maxRoundsLost is how many hand-overs in a row may end without a round.
const maxRoundsLost = 3

// roundHeartbeat is a hand-over's heartbeat timeout for an analysis interval: above
// twice the interval up to a minute, so that the clock heartbeats (a write on the
// server) at most about once a round, and a lost worker's bakes go on elsewhere
// within that time.
func roundHeartbeat(interval time.Duration) time.Duration {
	return 2*min(interval, time.Minute) + 30*time.Second
}

// roundDriver is one bake's hand-overs.
type roundDriver struct {
	r        *release
	stage    Stage
	d        time.Duration
	interval time.Duration
	metrics  []plan.Metric
	ch       workflow.ReceiveChannel
	// driver is the hand-over running (future), numbered in the run's sequence.
	driver int
	future workflow.Future
	cancel workflow.CancelFunc
	// taken is the index of the latest round taken; lost counts hand-overs ended
	// without a round since.
	taken int
	lost  int
	// pauseTimer fires at pauseAt, the limit of the pause in progress.
	pauseAt     time.Time
	pauseTimer  workflow.Future
	cancelPause workflow.CancelFunc
}

func (r *release) roundDriver(ctx workflow.Context, stage Stage, d time.Duration, metrics []plan.Metric) *roundDriver {
	interval := r.plan.Analysis.Interval.D()
	return &roundDriver{r: r, stage: stage, d: d, interval: interval, metrics: metrics,
		ch: workflow.GetSignalChannel(ctx, activities.RoundSignal), taken: int(r.Bake.Elapsed / interval)}
}

// start hands the bake's next rounds over: up to the end of the bake, or past it
// (a bake extended by missing data or a pause) a bake's length more.
func (p *roundDriver) start(ctx workflow.Context) {
	r := p.r
	planned := max(int((p.d+p.interval-1)/p.interval), 1)
	last := planned
	if p.taken >= planned {
		last = p.taken + planned
	}
	r.drivers++
	p.driver = r.drivers
	info := workflow.GetInfo(ctx)
	in := activities.RoundsInput{WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
		Driver: p.driver, Start: r.Bake.Start, From: p.taken, Last: last, Analyze: r.analyzeInput(p.metrics)}
	hb := roundHeartbeat(p.interval)
	left := max(r.Bake.Start.Add(time.Duration(last)*p.interval).Sub(workflow.Now(ctx)), 0)
	actx, cancel := workflow.WithCancel(ctx)
	actx = workflow.WithActivityOptions(actx, workflow.ActivityOptions{
		StartToCloseTimeout: left + hb + 2*time.Minute,
		HeartbeatTimeout:    hb,
		// The release hands the rounds over again itself, from the round it took last.
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
		Summary: fmt.Sprintf("analyse %s at %d%%: rounds %d-%d every %s", p.stage, r.Status.CandidateWeight,
			p.taken+1, last, p.interval),
	})
	p.future, p.cancel = workflow.ExecuteActivity(actx, a.AnalyzeRounds, in), cancel
}

// stop cancels the hand-over running and the pause limit's timer, if any.
func (p *roundDriver) stop() {
	if p.cancel != nil {
		p.cancel()
	}
	p.future, p.cancel = nil, nil
	if p.cancelPause != nil {
		p.cancelPause()
	}
	p.pauseTimer, p.cancelPause, p.pauseAt = nil, nil, time.Time{}
}

// pauseLimit is a timer that fires at the pause limit of the pause in progress, or
// nil: one timer a pause, cancelled at the resume.
func (p *roundDriver) pauseLimit(ctx workflow.Context) workflow.Future {
	r := p.r
	var until time.Time
	if r.Status.Paused {
		until = r.Status.PausedUntil
	}
	if until.Equal(p.pauseAt) {
		return p.pauseTimer
	}
	if p.cancelPause != nil {
		p.cancelPause()
	}
	p.pauseTimer, p.cancelPause, p.pauseAt = nil, nil, until
	if !until.IsZero() {
		tctx, cancel := workflow.WithCancel(ctx)
		p.pauseTimer = workflow.NewTimerWithOptions(tctx, max(until.Sub(workflow.Now(ctx)), time.Millisecond),
			workflow.TimerOptions{Summary: r.bakeSummary(p.stage, p.d)})
		p.cancelPause = cancel
	}
	return p.pauseTimer
}

// next waits for the bake's next round and moves the bake's clock to it. A decision
// (rejection, abort) or an expired pause ends the wait with the stage's failure.
func (p *roundDriver) next(ctx workflow.Context) ([]analysis.Measurement, error) {
	r := p.r
	for {
		var rd activities.Round
		for p.ch.ReceiveAsync(&rd) {
			if rd.Driver == p.driver && rd.Index > p.taken {
				return p.take(rd), nil
			}
			rd = activities.Round{} // a cancelled or earlier hand-over's
		}
		if p.future == nil {
			p.start(ctx)
		}
		if p.future.IsReady() {
			var res *activities.Round
			err := p.future.Get(ctx, &res)
			p.future, p.cancel = nil, nil
			switch {
			case err == nil && res != nil && res.Index > p.taken:
				return p.take(*res), nil
			case ctx.Err() != nil:
				return nil, temporal.NewCanceledError() // the release was cancelled
			case err != nil && !lostRounds(err):
				return nil, err // the analysis failed
			}
			p.lost++
			if p.lost >= maxRoundsLost {
				return nil, fail(fmt.Sprintf("%s analysis at %d%%: no analysis round from %d hand-overs in a row (last: %v)",
					p.stage, r.Status.CandidateWeight, p.lost, err))
			}
			workflow.GetLogger(ctx).Warn("analysis rounds lost; handing them over again", "stage", p.stage,
				"taken", p.taken, "error", err)
			continue
		}
		// The wait is cut short by the pause limit, which then rolls back.
		limit := p.pauseLimit(ctx)
		pausedUntil := r.Status.PausedUntil
		if err := workflow.Await(ctx, func() bool {
			return p.ch.Len() > 0 || p.future.IsReady() || r.Interrupt != nil || !r.Status.PausedUntil.Equal(pausedUntil) ||
				(limit != nil && limit.IsReady())
		}); err != nil {
			return nil, err
		}
		if err := r.check(); err != nil {
			return nil, err
		}
		if err := r.pauseExpired(ctx); err != nil {
			return nil, err
		}
	}
}

func (p *roundDriver) take(rd activities.Round) []analysis.Measurement {
	p.taken, p.lost = rd.Index, 0
	p.r.Bake.Elapsed = time.Duration(rd.Index) * p.interval
	return rd.Measurements
}

// lostRounds says whether a hand-over ended for a cause other than its analysis: its
// worker was lost or stopped, a round could not be sent, or it was cancelled.
func lostRounds(err error) bool {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return !app.NonRetryable()
	}
	return true
}

// analyzeInput is an analysis round's input, with the judges' states so far.
func (r *release) analyzeInput(metrics []plan.Metric) activities.AnalyzeInput {
	return activities.AnalyzeInput{Model: r.plan.Model, Champion: r.Champion.Version, Candidate: r.Candidate.Version,
		Interval: r.plan.Analysis.Interval, Metrics: metrics, Since: r.Judged.Since, States: r.Judged.States}
}
