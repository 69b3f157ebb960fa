package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/analysis"
)

// RoundSignal is the signal that brings a bake's analysis rounds to its release.
const RoundSignal = "analysis-round"

// RoundsInput hands a bake's analysis rounds to the worker's round clock: round k is
// due at Start + k × Analyze.Interval, and the clock runs rounds From+1 to Last. Each
// round but the last goes to the release as a RoundSignal; the last is the
// activity's result.
type RoundsInput struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	// Driver numbers this hand-over within its run: the release takes rounds only
	// from the driver it started last.
	Driver int       `json:"driver"`
	Start  time.Time `json:"start"`
	From   int       `json:"from"`
	Last   int       `json:"last"`
	// Analyze is every round's input; its States are the judges' at round From, and
	// each round goes on from the one before.
	Analyze AnalyzeInput `json:"analyze"`
}

// Round is one analysis round of a bake.
type Round struct {
	Driver       int                    `json:"driver"`
	Index        int                    `json:"index"`
	Measurements []analysis.Measurement `json:"measurements"`
}

// NextRound is the round to run after round from, at now: the next one, or when that
// one is a whole interval or more overdue (the clock fell behind) the latest one
// due, so that no window is judged twice; never past last. due is when it is due.
func NextRound(start time.Time, interval time.Duration, from, last int, now time.Time) (k int, due time.Time) {
	k = from + 1
	if behind := now.Sub(start.Add(time.Duration(k) * interval)); behind >= interval {
		k += int(behind / interval)
	}
	k = min(k, max(last, from+1))
	return k, start.Add(time.Duration(k) * interval)
}

// AdvanceStates is the judges' states after a round's measurements.
func AdvanceStates(states map[string]analysis.JudgeState, ms []analysis.Measurement) map[string]analysis.JudgeState {
	next := make(map[string]analysis.JudgeState, len(states))
	for name, s := range states {
		next[name] = s
	}
	for _, m := range ms {
		if m.State != nil {
			next[m.Metric] = *m.State
		}
	}
	return next
}

// RoundClient is what the round clock needs of Temporal's client.
type RoundClient interface {
	SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error
	RecordActivityHeartbeat(ctx context.Context, taskToken []byte, details ...any) error
	CompleteActivity(ctx context.Context, taskToken []byte, result any, err error) error
}

// RoundClock runs the analysis rounds of every bake handed to this worker, each on
// its own goroutine, without holding an activity slot: AnalyzeRounds completes
// asynchronously. The clock heartbeats each hand-over, so a worker that dies loses
// its bakes' rounds for at most the heartbeat timeout: the release then hands the
// bake to another worker, from the last round it took.
type RoundClock struct {
	Client RoundClient
	Logger *slog.Logger // nil: slog's default

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	stopped bool
	wg      sync.WaitGroup
}

// StartRoundClock starts a round clock on Temporal's client c; Stop stops it.
func StartRoundClock(c RoundClient, log *slog.Logger) *RoundClock {
	ctx, cancel := context.WithCancel(context.Background())
	return &RoundClock{Client: c, Logger: log, ctx: ctx, cancel: cancel}
}

// Stop fails the hand-overs in progress as retryable, so that their releases hand
// them over again at once (to another worker) rather than after the heartbeat
// timeout, and returns when they have.
func (c *RoundClock) Stop() {
	c.mu.Lock()
	c.stopped = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
}

// roundRetries is how often a round's analysis or signal is tried before the
// hand-over fails; roundRetryWait is the wait between tries.
const (
	roundRetries   = 3
	roundRetryWait = time.Second
)

// AnalyzeRounds hands a bake's rounds to the worker's round clock and returns; the
// clock completes it with the last round (or an error). It is cancelled when the
// bake ends sooner.
func (a *Activities) AnalyzeRounds(ctx context.Context, in RoundsInput) (*Round, error) {
	c := a.Rounds
	if c == nil {
		return nil, nonRetryable(ErrTypeInvalid, errors.New("this worker has no round clock (Activities.Rounds)"))
	}
	if in.Analyze.Interval.D() <= 0 || in.Last <= in.From {
		return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("analysis rounds %d to %d every %s: nothing to run", in.From+1, in.Last, in.Analyze.Interval))
	}
	info := activity.GetInfo(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil || c.stopped {
		return nil, errors.New("the worker's round clock is not running")
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		a.runRounds(c.ctx, info.TaskToken, info.HeartbeatTimeout, in)
	}()
	return nil, activity.ErrResultPending
}

// runRounds is one hand-over: it waits for each round, analyses it and sends it, and
// completes the activity with the last.
func (a *Activities) runRounds(ctx context.Context, token []byte, heartbeat time.Duration, in RoundsInput) {
	c := a.Rounds
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("workflowId", in.WorkflowID, "runId", in.RunID, "driver", in.Driver)
	// Completions and heartbeats go out even as the worker stops.
	out := context.WithoutCancel(ctx)
	complete := func(result *Round, err error) {
		if cerr := c.Client.CompleteActivity(out, token, result, err); cerr != nil && !isGone(cerr) {
			log.Warn("complete analysis rounds", "error", cerr)
		}
	}
	// A heartbeat at least every half timeout: the release sets the timeout above
	// twice the interval, so about one heartbeat a round up to a one-minute interval,
	// fewer below it. (A cancellation is seen at the next heartbeat; a round sent
	// meanwhile the release ignores.)
	beat := heartbeat / 2
	if beat <= 0 {
		beat = 10 * time.Second
	}
	lastBeat := time.Now() // the activity's start counts as one
	stopping := func() {
		complete(nil, temporal.NewApplicationError("the worker is stopping", "WorkerStopping"))
	}
	interval := in.Analyze.Interval.D()
	states := in.Analyze.States
	from := in.From
	for {
		k, due := NextRound(in.Start, interval, from, in.Last, time.Now())
		for {
			now := time.Now()
			if !now.Before(lastBeat.Add(beat)) {
				switch err := c.Client.RecordActivityHeartbeat(out, token, from); {
				case temporal.IsCanceledError(err):
					complete(nil, temporal.NewCanceledError())
					return
				case isGone(err):
					return // the release ended or timed this hand-over out
				case err != nil:
					log.Warn("heartbeat analysis rounds", "error", err)
				}
				lastBeat = now
			}
			wait := due.Sub(now)
			if wait <= 0 {
				break
			}
			t := time.NewTimer(min(wait, lastBeat.Add(beat).Sub(now)))
			select {
			case <-ctx.Done():
				t.Stop()
				stopping()
				return
			case <-t.C:
			}
		}

		in.Analyze.States = states
		var ms []analysis.Measurement
		var err error
		for try := 1; ; try++ {
			if ms, err = a.Analyze(ctx, in.Analyze); err == nil || try == roundRetries || isNonRetryable(err) || ctx.Err() != nil {
				break
			}
			time.Sleep(roundRetryWait)
		}
		switch {
		case ctx.Err() != nil:
			stopping()
			return
		case err != nil:
			complete(nil, err)
			return
		}
		states, from = AdvanceStates(states, ms), k
		round := &Round{Driver: in.Driver, Index: k, Measurements: ms}
		if k >= in.Last {
			complete(round, nil)
			return
		}
		for try := 1; ; try++ {
			err = c.Client.SignalWorkflow(out, in.WorkflowID, in.RunID, RoundSignal, round)
			if err == nil || isGone(err) || try == roundRetries {
				break
			}
			time.Sleep(roundRetryWait)
		}
		switch {
		case isGone(err):
			return // the run has ended (or continued as new, with its own rounds)
		case err != nil:
			complete(nil, fmt.Errorf("send analysis round %d: %w", k, err))
			return
		}
	}
}

// isGone is Temporal's answer for a workflow run or activity that no longer exists.
func isGone(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

func isNonRetryable(err error) bool {
	var app *temporal.ApplicationError
	return errors.As(err, &app) && app.NonRetryable()
}
