package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"go.temporal.io/sdk/activity"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows/roundtest"
)

// The long-release tests run releases of days on the test suite's skipped clock,
// across as many runs (continue-as-new) as they take, and check rule 10: every
// payload within PayloadBudget, every run's history far below Temporal's limits.

// sevenDayPlan: 10 canary steps of 12 h at a 1-minute interval, 4 metrics, a
// required approval and a 3-day pause limit: with a 2-day pause it runs 7 days.
const sevenDayPlan = `
model: iris
candidate: "2"
canary:
  steps:
    - {weight: 5, bake: 12h}
    - {weight: 10, bake: 12h}
    - {weight: 15, bake: 12h}
    - {weight: 20, bake: 12h}
    - {weight: 25, bake: 12h}
    - {weight: 30, bake: 12h}
    - {weight: 40, bake: 12h}
    - {weight: 50, bake: 12h}
    - {weight: 60, bake: 12h}
    - {weight: 75, bake: 12h}
analysis:
  interval: 1m
  metrics:
    - name: error-rate
      query: sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",code=~"5.."}[{{.Interval}}])) / sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.01
    - name: p99-latency-seconds
      query: histogram_quantile(0.99, sum by (le) (rate(mlrelease_gateway_request_duration_seconds_bucket{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}])))
      max: 0.5
    - name: p50-latency-seconds
      query: histogram_quantile(0.5, sum by (le) (rate(mlrelease_gateway_request_duration_seconds_bucket{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}])))
      max: 0.2
    - name: online-accuracy
      query: sum(rate(mlrelease_gateway_feedback_correct_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}])) / sum(rate(mlrelease_gateway_feedback_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      min: 0.8
approval:
  required: true
  approvers: [alice]
  timeout: 24h
pause:
  limit: 72h
postPromotion:
  watch: 1h
`

// longRun is one release driven across its runs on the test suite.
type longRun struct {
	t    *testing.T
	plan plan.Plan
	// limits force continue-as-new sooner than the defaults (zero: defaults).
	limits RunLimits
	// at are decisions to send, by time since the release started.
	at []timedDecision
	// failAt, when set, makes every measurement fail from then on.
	failAt time.Duration

	mu      sync.Mutex
	start   time.Time
	now     func() time.Time
	largest int    // the largest payload seen
	what    string // what it was
	audited map[int]bool
	// per run: activities and analysis rounds, for the history estimate
	runActivities, runRounds []int
	// runLocal counts the local activities of each run: one marker event each.
	runLocal  []int
	traffic   []deploy.Traffic
	runs      int
	decisions int // audited
	// firstRun is the release's first run ID, in its audit keys (the test suite
	// leaves it empty).
	firstRun string
}

type timedDecision struct {
	after time.Duration
	kind  string
	req   DecisionRequest
}

// payload notes the JSON size of v, the form the default data converter writes.
func (l *longRun) payload(what string, v any) {
	b, err := json.Marshal(v)
	require.NoError(l.t, err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(b) > l.largest {
		l.largest, l.what = len(b), what
	}
	require.LessOrEqualf(l.t, len(b), PayloadBudget, "%s is %d bytes, over the budget", what, len(b))
}

func (l *longRun) activity() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runActivities[len(l.runActivities)-1]++
}

// activityIn counts an activity, or a local one.
func (l *longRun) activityIn(ctx context.Context) {
	if !activity.GetInfo(ctx).IsLocalActivity {
		l.activity()
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runLocal[len(l.runLocal)-1]++
}

// env is one run's test environment with every activity mocked.
func (l *longRun) env(s *testsuite.WorkflowTestSuite, start time.Time) *testsuite.TestWorkflowEnvironment {
	env := s.NewTestWorkflowEnvironment()
	env.SetStartWorkflowOptions(testStartOptions())
	env.SetStartTime(start)
	env.RegisterWorkflow(ReleaseWorkflow)
	env.RegisterActivity(&activities.Activities{})
	env.OnActivity(a.Resolve, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.ResolveInput) (activities.Resolved, error) {
			l.activity()
			return activities.Resolved{Champion: champion, Candidate: candidate}, nil
		}).Maybe()
	env.OnActivity(a.CheckQueries, mock.Anything, mock.Anything).Return(
		func(_ context.Context, qs []activities.NamedQuery) error { l.activity(); return nil }).Maybe()
	env.OnActivity(a.ChangeRegistry, mock.Anything, mock.Anything).Return(
		func(_ context.Context, c activities.RegistryChange) error {
			l.activity()
			l.payload("ChangeRegistry input", c)
			return nil
		}).Maybe()
	env.OnActivity(a.RecordEvents, mock.Anything, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, model string, events []registry.Event) error {
			l.activityIn(ctx)
			l.payload("RecordEvents input", events)
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, e := range events {
				if e.Kind == EventDecision {
					l.decisions++
					continue
				}
				var rd AnalysisRound
				require.NoError(l.t, json.Unmarshal([]byte(e.Evidence["round"]), &rd))
				require.Equal(l.t, AuditKey(WorkflowID("iris"), l.firstRun, rd.Round), e.Key)
				l.audited[rd.Round] = true
			}
			return nil
		}).Maybe()
	env.OnActivity(a.SetTraffic, mock.Anything, mock.Anything).Return(
		func(_ context.Context, t deploy.Traffic) (deploy.Applied, error) {
			l.activity()
			l.mu.Lock()
			l.traffic = append(l.traffic, t)
			l.mu.Unlock()
			return deploy.Applied{Traffic: t}, nil
		}).Maybe()
	env.OnActivity(a.Analyze, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.AnalyzeInput) ([]analysis.Measurement, error) {
			l.activityIn(ctx)
			return l.analyze(in)
		}).Maybe()
	clock := &roundtest.Clock{Env: env, Analyze: l.analyze, OnHandOver: l.activity}
	clock.Install()
	env.OnActivity(a.Notify, mock.Anything, mock.Anything).Return(
		func(_ context.Context, m notify.Message) error {
			l.activity()
			l.payload("Notify input", m)
			return nil
		}).Maybe()
	env.OnActivity(a.Announce, mock.Anything, mock.Anything).Return(
		func(_ context.Context, m notify.Message) (notify.Ref, error) {
			l.activity()
			l.payload("Announce input", m)
			return notify.Ref{Channel: "C-releases", TS: "1700000000.000001"}, nil
		}).Maybe()
	return env
}

// analyze is an analysis round: passing, or failing from failAt on.
func (l *longRun) analyze(in activities.AnalyzeInput) ([]analysis.Measurement, error) {
	l.payload("Analyze input", in)
	l.mu.Lock()
	l.runRounds[len(l.runRounds)-1]++
	failing := l.failAt > 0 && l.now().Sub(l.start) >= l.failAt
	l.mu.Unlock()
	out := make([]analysis.Measurement, 0, len(in.Metrics))
	for i, m := range in.Metrics {
		v := 0.001
		if m.Min != nil {
			v = 0.95
		}
		if failing {
			v = 1e6
			if m.Min != nil {
				v = 0
			}
		}
		verdict, msg := analysis.JudgeThreshold(m, &v)
		b := v
		meas := analysis.Measurement{Metric: m.Name, Judge: m.Judge, Verdict: verdict, Value: &v, Baseline: &b, Message: msg,
			Query: strings.Repeat("q", 300), BaselineQuery: strings.Repeat("b", 300), At: l.now(),
			Evidence: &analysis.Evidence{CandidateN: 1e6, ChampionN: 1e6, Statistic: "e-value", Queries: []string{strings.Repeat("x", 300), strings.Repeat("y", 300)}}}
		if i == 0 {
			// A sequential judge's state: its size must not grow with the release.
			st := in.States[m.Name]
			st.Batches++
			if len(st.Tests) == 0 {
				st.Tests = []analysis.RateMixture{{LogLR: make([]float64, 64)}, {LogLR: make([]float64, 64)}}
			}
			meas.State = &st
		}
		out = append(out, meas)
	}
	l.payload("Analyze output", out)
	return out, nil
}

// estimatedEvents bounds a run's history from what it did: each activity (a bake's
// hand-over of rounds among them) takes at most 6 events with its workflow task, each
// local activity its marker, each round 5 at most with its workflow task (its signal,
// or before changeLocalIO's version 3 its timer), and the run's start, end, markers,
// search attributes and decisions fewer than 200.
func estimatedEvents(activities, local, rounds int) int { return 6*activities + local + 5*rounds + 200 }

// run drives the release to its end and returns its result and the number of runs.
func (l *longRun) run() Result {
	s := &testsuite.WorkflowTestSuite{}
	l.audited = map[int]bool{}
	l.start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	in := ReleaseInput{Plan: l.plan, StartedBy: "ci", Limits: l.limits}
	runStart := l.start
	for {
		l.runs++
		require.Less(l.t, l.runs, 1000, "the release never ends")
		l.runActivities = append(l.runActivities, 0)
		l.runRounds = append(l.runRounds, 0)
		l.runLocal = append(l.runLocal, 0)
		env := l.env(s, runStart)
		l.now = env.Now
		for _, d := range l.at {
			if at := l.start.Add(d.after); !at.Before(runStart) {
				d := d
				env.RegisterDelayedCallback(func() {
					env.UpdateWorkflow(d.kind, "", &testsuite.TestUpdateCallback{
						OnReject:   func(err error) { l.t.Errorf("%s at %s refused: %v", d.kind, d.after, err) },
						OnAccept:   func() {},
						OnComplete: func(any, error) {},
					}, d.req)
				}, at.Sub(runStart))
			}
		}
		env.ExecuteWorkflow(ReleaseWorkflow, in)
		require.True(l.t, env.IsWorkflowCompleted())
		v, err := env.QueryWorkflow(QueryStatus)
		require.NoError(l.t, err)
		var st Status
		require.NoError(l.t, v.Get(&st))
		l.payload("status query", st)
		n := len(l.runActivities) - 1
		require.Lessf(l.t, estimatedEvents(l.runActivities[n], l.runLocal[n], l.runRounds[n]), 10_000,
			"run %d: %d activities, %d local, %d rounds", l.runs, l.runActivities[n], l.runLocal[n], l.runRounds[n])

		err = env.GetWorkflowError()
		var can *workflow.ContinueAsNewError
		if errors.As(err, &can) {
			require.Equal(l.t, WorkflowName, can.WorkflowType.Name)
			var next ReleaseInput
			require.NoError(l.t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
			l.payload("continue-as-new input", next)
			require.NotNil(l.t, next.Carried)
			in, runStart = next, env.Now()
			continue
		}
		require.NoError(l.t, err)
		var res Result
		require.NoError(l.t, env.GetWorkflowResult(&res))
		l.payload("result", res)
		return res
	}
}

func parsePlan(t *testing.T, y string, change func(p *plan.Plan)) plan.Plan {
	p, err := plan.Parse([]byte(y))
	require.NoError(t, err)
	p.Approval.Unsigned = true // typed names: signed_test.go tests signed decisions
	if change != nil {
		change(p)
		require.NoError(t, p.Validate())
	}
	return *p
}

// TestSevenDayRelease: 10 steps of 12 h at a 1-minute interval with 4 metrics, a
// 2-day pause under a 3-day limit, then an approval: promoted, through many runs,
// every payload within budget and every round in the audit log.
func TestSevenDayRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("a 7-day release on the skipped clock takes a while")
	}
	who := DecisionRequest{Who: "alice", Comment: "looks good", Source: "cli"}
	l := &longRun{t: t, plan: parsePlan(t, sevenDayPlan, nil), at: []timedDecision{
		{after: 30 * time.Hour, kind: Pause, req: DecisionRequest{Who: "bob", Comment: "investigating a customer report"}},
		{after: 78 * time.Hour, kind: Resume, req: DecisionRequest{Who: "bob", Comment: "unrelated"}},
		{after: 7*24*time.Hour + 2*time.Hour, kind: Approve, req: who},
	}}
	res := l.run()
	require.Equal(t, OutcomePromoted, res.Outcome, res.Reason)
	st := res.Status
	require.Equal(t, StagePromoted, st.Stage)
	require.Equal(t, 100, st.CandidateWeight)
	// Paused at 30 h in step 3 (24-36 h) until 78 h, which holds step 3 until then;
	// steps 4-10 take 84 h more, then the approval at 170 h and the 1 h watch: one
	// round a minute while baking, paused or watching.
	require.Equal(t, (78+84+1)*60, st.Rounds)
	require.GreaterOrEqual(t, st.UpdatedAt.Sub(st.StartedAt), 7*24*time.Hour)
	require.Len(t, st.Analyses, RecentRounds)
	require.Len(t, st.Series, 4)
	for _, s := range st.Series {
		require.LessOrEqual(t, len(s.Points), SeriesPoints)
		require.Equal(t, 1, s.Points[0].Round)
		require.Equal(t, analysis.Pass, s.Points[0].Verdict)
	}
	require.Len(t, l.audited, st.Rounds, "every round is in the audit log")
	require.Greater(t, l.runs, 2)
	require.Equal(t, l.runs, st.Runs)
	kinds := []string{}
	for _, d := range st.Decisions {
		kinds = append(kinds, d.Kind)
	}
	require.Equal(t, []string{Pause, Resume, Approve}, kinds)
	require.Equal(t, 3, l.decisions, "every decision is in the audit log")
	require.Equal(t, 3, st.DecisionsTaken)
	t.Logf("7-day release: %d rounds over %d runs, largest payload %d bytes (%s), at most %d activities and %d rounds in a run (history at most %d events by estimate)",
		st.Rounds, l.runs, l.largest, l.what, maxOf(l.runActivities), maxOf(l.runRounds), l.maxEvents())
}

// TestPauseLimitRollsBack: a pause longer than the plan's limit rolls back, across
// runs, with the candidate's traffic back at 0.
func TestPauseLimitRollsBack(t *testing.T) {
	l := &longRun{t: t, plan: parsePlan(t, sevenDayPlan, nil), limits: RunLimits{RoundsPerRun: 200}, at: []timedDecision{
		{after: 2 * time.Hour, kind: Pause, req: DecisionRequest{Who: "bob", Comment: "investigating"}},
	}}
	res := l.run()
	require.Equal(t, OutcomeRolledBack, res.Outcome)
	require.Contains(t, res.Reason, "pause limit of 72h")
	require.Equal(t, 0, res.Status.CandidateWeight)
	require.Equal(t, StageRolledBack, res.Status.Stage)
	last := l.traffic[len(l.traffic)-1]
	require.Nil(t, last.Candidate, "the champion's route alone")
	// Rolled back 72 h after the pause, not a round later.
	require.WithinDuration(t, l.start.Add(74*time.Hour), res.Status.UpdatedAt, 2*time.Minute)
	require.Greater(t, l.runs, 2)
}

// TestThirtyDayWatch: a release whose post-promotion watch lasts 30 days at a
// 10-minute interval ends promoted; a failure on day 20 of the watch restores the
// champion.
func TestThirtyDayWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30-day watch on the skipped clock takes a while")
	}
	thirty := func(p *plan.Plan) {
		p.Canary.Steps = []plan.Step{{Weight: 10, Bake: plan.Duration(time.Hour)}, {Weight: 50, Bake: plan.Duration(time.Hour)}}
		p.Analysis.Interval = plan.Duration(10 * time.Minute)
		p.Approval = plan.Approval{OnTimeout: plan.OnTimeoutPromote}
		p.PostPromotion.Watch = plan.Duration(30 * 24 * time.Hour)
	}
	t.Run("promoted", func(t *testing.T) {
		l := &longRun{t: t, plan: parsePlan(t, sevenDayPlan, thirty)}
		res := l.run()
		require.Equal(t, OutcomePromoted, res.Outcome, res.Reason)
		require.GreaterOrEqual(t, res.Status.Rounds, 30*24*6)
		require.Len(t, l.audited, res.Status.Rounds)
		t.Logf("30-day watch: %d rounds over %d runs, largest payload %d bytes (%s), history at most %d events a run by estimate",
			res.Status.Rounds, l.runs, l.largest, l.what, l.maxEvents())
	})
	t.Run("fails on day 20", func(t *testing.T) {
		l := &longRun{t: t, plan: parsePlan(t, sevenDayPlan, thirty), failAt: 20 * 24 * time.Hour}
		res := l.run()
		require.Equal(t, OutcomeRolledBack, res.Outcome)
		require.Contains(t, res.Reason, "watching analysis")
		require.Equal(t, champion.Version, res.Status.Champion)
		require.Equal(t, 0, res.Status.CandidateWeight)
		var failed bool
		for _, s := range res.Status.Series {
			for _, p := range s.Points {
				failed = failed || p.Verdict == analysis.Fail
			}
		}
		require.True(t, failed, "the failure is in the series")
	})
}

func (l *longRun) maxEvents() int {
	m := 0
	for i := range l.runActivities {
		m = max(m, estimatedEvents(l.runActivities[i], l.runLocal[i], l.runRounds[i]))
	}
	return m
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// TestContinueAsNewWhileAwaitingApproval: a run that has used up its rounds when the
// approval wait begins hands over at once; the next run waits out the rest of the
// same deadline and takes the approval; another release times out at the original
// deadline, not a new one.
func TestContinueAsNewWhileAwaitingApproval(t *testing.T) {
	short := func(p *plan.Plan) {
		p.Canary.Steps = []plan.Step{{Weight: 10, Bake: plan.Duration(10 * time.Minute)}}
		p.PostPromotion.Watch = 0
	}
	l := &longRun{t: t, plan: parsePlan(t, sevenDayPlan, short), limits: RunLimits{RoundsPerRun: 10}, at: []timedDecision{
		{after: 5 * time.Hour, kind: Approve, req: DecisionRequest{Who: "alice", Comment: "ok"}},
	}}
	res := l.run()
	require.Equal(t, OutcomePromoted, res.Outcome, res.Reason)
	require.GreaterOrEqual(t, l.runs, 2)

	l = &longRun{t: t, plan: parsePlan(t, sevenDayPlan, short), limits: RunLimits{RoundsPerRun: 10}}
	res = l.run()
	require.Equal(t, OutcomeRolledBack, res.Outcome)
	require.Contains(t, res.Reason, "approval timed out")
	// 10 minutes of canary, then the 24 h timeout, across the switch.
	require.WithinDuration(t, l.start.Add(24*time.Hour+10*time.Minute), res.Status.UpdatedAt, time.Minute)
}
