package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows/roundtest"
)

// testPlan is a full plan. Its timeline, with every activity instant:
// shadow 0-10m (10 analyses), canary 10%% 10-15m, 25%% 15-20m, 50%% 20-30m
// (20 analyses in all), approval from 30m, watch 10m after promotion.
const testPlan = `
model: iris
candidate: "2"
staging:
  dataset: /data/iris-eval.csv
  minAccuracy: 0.9
  maxP99Latency: 200ms
shadow:
  share: 20
  duration: 10m
canary:
  steps:
    - {weight: 10, bake: 5m}
    - {weight: 25, bake: 5m}
    - {weight: 50, bake: 10m}
analysis:
  interval: 1m
  metrics:
    - name: error-rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.01
    - name: p99-latency-seconds
      query: histogram_quantile(0.99, sum by (le) (rate(latency_bucket{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}])))
      max: 0.5
approval:
  required: true
  approvers: [alice, bob]
  timeout: 4h
postPromotion:
  watch: 10m
`

// Points of the test plan's timeline, from the workflow's start.
const (
	shadowRounds   = 10
	canaryRounds   = 20
	duringCanary   = 12*time.Minute + 30*time.Second // step 1, 10%
	duringApproval = 45 * time.Minute
)

var (
	champion  = registry.Version{Model: "iris", Version: "1", Endpoint: "http://iris-v1:8080"}
	candidate = registry.Version{Model: "iris", Version: "2", Endpoint: "http://iris-v2:8080"}

	passing = 0.001 // within both metrics' max
	failing = 1.0   // above both
)

type releaseSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env *testsuite.TestWorkflowEnvironment

	// Behaviours the default mocks consult; a test changes them before running.
	value        func(call int, m plan.Metric) *float64 // nil is no data
	setTraffic   func(t deploy.Traffic) error
	evaluation   activities.EvaluateOutput
	checkQueries error
	// evaluationTakes is how long, on the workflow's clock, EvaluateStaging takes;
	// analyzeTakes the same of an analysis round.
	evaluationTakes, analyzeTakes time.Duration
	// trafficDelay is how long, on the workflow's clock, the nth SetTraffic call takes.
	trafficDelay map[int]time.Duration

	mu            sync.Mutex
	analyzeCalls  int
	analyzeInputs []activities.AnalyzeInput
	analyzeAt     []time.Time // when each round ended, on the workflow's clock
	trafficCalls  int
	traffic       []deploy.Traffic // every SetTraffic call, failed attempts included
	trafficFailed []bool
	changes       []activities.RegistryChange
	notes         []notify.Message
	// announce, when set, answers Announce (the notifier's thread and approval
	// request); nil posts them.
	announce func(m notify.Message) (notify.Ref, error)
	// notifyErr, when set, is what Notify fails with.
	notifyErr error
	// audited are the rounds written to the audit log, in order.
	audited []AnalysisRound
	// clock is the fake round clock.
	clock *roundtest.Clock
}

func TestReleaseWorkflow(t *testing.T) { suite.Run(t, new(releaseSuite)) }

func (s *releaseSuite) SetupTest() {
	s.env = s.NewTestWorkflowEnvironment()
	s.env.SetStartWorkflowOptions(testStartOptions())
	s.env.RegisterWorkflow(ReleaseWorkflow)
	s.env.RegisterActivity(&activities.Activities{})

	s.value = func(int, plan.Metric) *float64 { return &passing }
	s.setTraffic = func(deploy.Traffic) error { return nil }
	s.evaluation = activities.EvaluateOutput{
		Champion:  analysis.StagingReport{Requests: 150, N: 150, Correct: 141, Accuracy: 0.94, P99: 40 * time.Millisecond},
		Candidate: analysis.StagingReport{Requests: 150, N: 150, Correct: 144, Accuracy: 0.96, P99: 50 * time.Millisecond},
	}
	s.checkQueries = nil
	s.announce = nil
	s.notifyErr = nil
	s.trafficDelay = nil
	s.evaluationTakes, s.analyzeTakes = 0, 0
	s.analyzeAt = nil
	s.trafficCalls = 0
	s.analyzeCalls, s.traffic, s.trafficFailed, s.changes, s.notes = 0, nil, nil, nil, nil
	s.analyzeInputs = nil
	s.audited = nil

	s.env.OnActivity(a.Resolve, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.ResolveInput) (activities.Resolved, error) {
			if in.Model != "iris" || in.Candidate != "2" {
				return activities.Resolved{}, fmt.Errorf("unexpected resolve %+v", in)
			}
			return activities.Resolved{Champion: champion, Candidate: candidate}, nil
		})
	s.env.OnActivity(a.CheckQueries, mock.Anything, mock.Anything).Return(
		func(_ context.Context, qs []activities.NamedQuery) error {
			for _, q := range qs {
				if strings.Contains(q.Query, "{{") {
					return fmt.Errorf("query %s not rendered: %s", q.Metric, q.Query)
				}
			}
			return s.checkQueries
		})
	s.env.OnActivity(a.ChangeRegistry, mock.Anything, mock.Anything).Return(
		func(_ context.Context, c activities.RegistryChange) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.changes = append(s.changes, c)
			return nil
		})
	s.env.OnActivity(a.SetTraffic, mock.Anything, mock.Anything).Return(
		func(_ context.Context, t deploy.Traffic) (deploy.Applied, error) {
			if err := t.Validate(); err != nil {
				return deploy.Applied{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeInvalid, err)
			}
			err := s.setTraffic(t)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.traffic = append(s.traffic, t)
			s.trafficFailed = append(s.trafficFailed, err != nil)
			if err != nil {
				return deploy.Applied{}, err
			}
			return deploy.Applied{Traffic: t, Revision: int64(len(s.traffic))}, nil
		}).AfterFn(func() time.Duration {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.trafficCalls++
		return s.trafficDelay[s.trafficCalls]
	}).Maybe()
	s.env.OnActivity(a.EvaluateStaging, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.EvaluateInput) (activities.EvaluateOutput, error) {
			if in.Champion != champion.Endpoint || in.Candidate != candidate.Endpoint {
				return activities.EvaluateOutput{}, fmt.Errorf("unexpected endpoints %+v", in)
			}
			return s.evaluation, nil
		}).AfterFn(func() time.Duration { return s.evaluationTakes }).Maybe()
	s.env.OnActivity(a.Analyze, mock.Anything, mock.Anything).Return(
		func(_ context.Context, in activities.AnalyzeInput) ([]analysis.Measurement, error) {
			return s.analyze(in)
		}).AfterFn(func() time.Duration { return s.analyzeTakes }).Maybe()
	s.clock = &roundtest.Clock{Env: s.env, Analyze: s.analyze, Takes: func() time.Duration { return s.analyzeTakes }}
	s.clock.Install()
	s.env.OnActivity(a.RecordEvents, mock.Anything, mock.Anything, mock.Anything).Return(
		func(_ context.Context, model string, events []registry.Event) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, e := range events {
				if e.Kind == EventDecision {
					continue
				}
				var rd AnalysisRound
				if err := json.Unmarshal([]byte(e.Evidence["round"]), &rd); err != nil {
					return err
				}
				s.audited = append(s.audited, rd)
			}
			return nil
		}).Maybe()
	s.env.OnActivity(a.Notify, mock.Anything, mock.Anything).Return(
		func(_ context.Context, m notify.Message) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.notes = append(s.notes, m)
			return s.notifyErr
		}).Maybe()
	s.env.OnActivity(a.Announce, mock.Anything, mock.Anything).Return(
		func(_ context.Context, m notify.Message) (notify.Ref, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.notes = append(s.notes, m)
			if s.announce != nil {
				return s.announce(m)
			}
			return notify.Ref{Channel: "C-releases", TS: fmt.Sprintf("1700000000.%06d", len(s.notes))}, nil
		}).Maybe()
}

// analyze is an analysis round: the default Analyze mock's, and the fake round
// clock's.
func (s *releaseSuite) analyze(in activities.AnalyzeInput) ([]analysis.Measurement, error) {
	s.mu.Lock()
	s.analyzeCalls++
	call := s.analyzeCalls
	// A local activity gets the workflow's values as they are: keep a copy.
	kept := in
	kept.States = make(map[string]analysis.JudgeState, len(in.States))
	for k, v := range in.States {
		kept.States[k] = v.Clone()
	}
	s.analyzeInputs = append(s.analyzeInputs, kept)
	s.analyzeAt = append(s.analyzeAt, s.env.Now())
	s.mu.Unlock()
	out := make([]analysis.Measurement, 0, len(in.Metrics))
	for _, m := range in.Metrics {
		if m.Sequential() {
			// A counting judge: its state counts the rounds it has seen.
			st := in.States[m.Name]
			st.Batches++
			out = append(out, analysis.Measurement{Metric: m.Name, Judge: m.Judge, Verdict: analysis.Pass, State: &st,
				Evidence: &analysis.Evidence{Statistic: "e-value"}})
			continue
		}
		v := s.value(call, m)
		verdict, msg := analysis.JudgeThreshold(m, v)
		out = append(out, analysis.Measurement{Metric: m.Name, Judge: m.Judge, Verdict: verdict, Value: v, Message: msg})
	}
	return out, nil
}

func (s *releaseSuite) AfterTest(_, _ string) { s.env.AssertExpectations(s.T()) }

func testStartOptions() client.StartWorkflowOptions {
	return client.StartWorkflowOptions{ID: WorkflowID("iris"), TaskQueue: TaskQueue}
}

// testPlanWith parses the test plan, lets a test change it, and validates the result.
func (s *releaseSuite) testPlanWith(change func(p *plan.Plan)) plan.Plan {
	p, err := plan.Parse([]byte(testPlan))
	s.Require().NoError(err)
	// These tests are about the release, not identity: typed names (signed_test.go
	// tests signed decisions).
	p.Approval.Unsigned = true
	if change != nil {
		change(p)
		s.Require().NoError(p.Validate())
	}
	return *p
}

func (s *releaseSuite) run(p plan.Plan) {
	s.env.ExecuteWorkflow(ReleaseWorkflow, ReleaseInput{Plan: p, StartedBy: "ci"})
	s.Require().True(s.env.IsWorkflowCompleted())
}

// rounds are every analysis round of the ended release, from the audit log (the
// status keeps the latest RecentRounds).
func (s *releaseSuite) rounds() []AnalysisRound {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, rd := range s.audited {
		s.Require().Equal(i+1, rd.Round, "rounds are audited once each, in order")
	}
	return append([]AnalysisRound(nil), s.audited...)
}

func (s *releaseSuite) result() Result {
	s.Require().NoError(s.env.GetWorkflowError())
	var res Result
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	return res
}

func (s *releaseSuite) status() Status {
	v, err := s.env.QueryWorkflow(QueryStatus)
	s.Require().NoError(err)
	var st Status
	s.Require().NoError(v.Get(&st))
	return st
}

// update sends a decision as an update and returns a function that reports what
// came of it once the workflow has run.
func (s *releaseSuite) update(after time.Duration, kind string, req DecisionRequest) func() (accepted bool, refusal error) {
	var accepted bool
	var refusal error
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(kind, kind+"-"+req.Who, &testsuite.TestUpdateCallback{
			OnAccept:   func() { accepted = true },
			OnReject:   func(err error) { refusal = err },
			OnComplete: func(any, error) {},
		}, req)
	}, after)
	return func() (bool, error) { return accepted, refusal }
}

func (s *releaseSuite) approveAt(after time.Duration, who string) func() (bool, error) {
	return s.update(after, Approve, DecisionRequest{Who: who, Comment: "looks good", Source: "cli"})
}

// weights is the candidate weight of every applied SetTraffic; -1 is champion-only routing.
func (s *releaseSuite) weights() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for i, t := range s.traffic {
		if s.trafficFailed[i] {
			continue
		}
		w := t.CandidateWeight
		if t.Candidate == nil {
			w = -1
		}
		out = append(out, w)
	}
	return out
}

func (s *releaseSuite) appliedTraffic() []deploy.Traffic {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []deploy.Traffic
	for i, t := range s.traffic {
		if !s.trafficFailed[i] {
			out = append(out, t)
		}
	}
	return out
}

// assertTrafficRule checks rule 2 on every traffic change before the release ended:
// the candidate's weight is one of the plan's steps (or 0), only rises, and reaches
// 100 only at promotion.
func (s *releaseSuite) assertTrafficRule(p plan.Plan, promoted bool) {
	allowed := []int{0}
	for _, st := range p.Canary.Steps {
		allowed = append(allowed, st.Weight)
	}
	if promoted && p.PostPromotion.Watch > 0 {
		allowed = append(allowed, 100-p.HoldoutOrDefault()) // the watch's holdout
	}
	prev := 0
	for i, t := range s.appliedTraffic() {
		if t.Candidate == nil {
			continue // champion-only: rollback, or the promoted candidate serving alone
		}
		s.Equal(champion.Version, t.Champion.Version, "call %d: the champion serves until promotion", i)
		s.Equal(candidate.Version, t.Candidate.Version, "call %d", i)
		if t.CandidateWeight == 100 {
			s.True(promoted, "call %d: 100%% without promotion", i)
		} else {
			s.Contains(allowed, t.CandidateWeight, "call %d: weight outside the plan", i)
		}
		s.GreaterOrEqual(t.CandidateWeight, prev, "call %d: candidate weight fell from %d to %d before the release ended", i, prev, t.CandidateWeight)
		if t.ShadowShare > 0 {
			s.Zero(t.CandidateWeight, "call %d: shadow only at weight 0", i)
		}
		prev = t.CandidateWeight
	}
}

// assertRolledBack checks rollback on every side: outcome and reason, champion-only
// routing last, the candidate tagged and its challenger alias deleted, the champion
// alias never moved.
func (s *releaseSuite) assertRolledBack(p plan.Plan, reasonPrefix string) Status {
	st := s.status()
	s.Equal(StageRolledBack, st.Stage)
	s.Equal(OutcomeRolledBack, st.Outcome)
	s.True(strings.HasPrefix(st.Reason, reasonPrefix), "reason %q, want prefix %q", st.Reason, reasonPrefix)
	s.Zero(st.CandidateWeight)
	s.Zero(st.ShadowShare)

	applied := s.appliedTraffic()
	s.Require().NotEmpty(applied)
	last := applied[len(applied)-1]
	s.Nil(last.Candidate, "last traffic must be champion-only")
	s.Zero(last.CandidateWeight)
	s.Zero(last.ShadowShare)
	s.Equal(champion.Version, last.Champion.Version)
	s.Equal(champion.Endpoint, last.Champion.URL)
	s.assertTrafficRule(p, false)

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.changes {
		s.NotContains(c.SetAliases, registry.AliasChampion, "champion alias moved: %+v", c)
	}
	rb := s.changes[len(s.changes)-1]
	s.Equal("iris", rb.Model)
	s.Equal(candidate.Version, rb.Version)
	s.Equal([]string{registry.AliasChallenger}, rb.DeleteAliases)
	s.Equal(OutcomeRolledBack, rb.Tags[TagOutcome])
	s.Equal(string(StageRolledBack), rb.Tags[TagStage])
	s.Equal(st.Reason, rb.Tags[TagReason])
	s.Equal("rolled_back", rb.Event.Kind)
	s.Equal(st.Reason, rb.Event.Message)
	s.Contains(s.noteTextsLocked(), "rolled back: "+st.Reason, "people are told why")
	return st
}

// noteTextsLocked are the notifications' texts (s.mu held). Fire-and-forget notifications (the
// approval request among them) may complete after the final one, so tests look for
// a text rather than at a position.
func (s *releaseSuite) noteTextsLocked() []string {
	texts := make([]string, len(s.notes))
	for i, m := range s.notes {
		texts[i] = m.Text
	}
	return texts
}

func (s *releaseSuite) TestPromotion() {
	p := s.testPlanWith(nil)
	var stages []string
	var canaryWeights []int64
	s.env.OnUpsertTypedSearchAttributes(mock.Anything).Run(func(args mock.Arguments) {
		sa := args.Get(0).(temporal.SearchAttributes)
		if v, ok := sa.GetKeyword(StageKey); ok {
			stages = append(stages, v)
			model, _ := sa.GetKeyword(ModelKey)
			s.Equal("iris", model)
		}
		if v, ok := sa.GetInt64(CanaryWeightKey); ok {
			canaryWeights = append(canaryWeights, v)
		}
	}).Return(nil)
	approval := s.approveAt(duringApproval, "alice")
	var atApproval Status
	s.env.RegisterDelayedCallback(func() { atApproval = s.status() }, duringApproval-time.Second)
	s.run(p)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal("every gate passed; approved by alice", res.Reason)
	s.Equal(StagePromoted, res.Status.Stage)
	s.Equal(100, res.Status.CandidateWeight)
	accepted, refusal := approval()
	s.True(accepted)
	s.NoError(refusal)

	s.Equal(StageAwaitingApproval, atApproval.Stage)
	s.Equal(50, atApproval.CandidateWeight)
	s.Equal(3, atApproval.Step)

	// The Web UI's search attributes follow the release.
	s.Equal([]string{"resolving", "deploying", "staging", "shadow", "canary", "awaiting_approval", "promoting", "watching", "promoted"}, stages)
	s.Equal([]int64{0, 0, 10, 25, 50, 95}, canaryWeights)

	// 0 at deploy, 0 with shadow, each step, 95 (the old champion keeps the watch's
	// 5% holdout), then the candidate alone.
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1}, s.weights())
	s.Require().NotNil(res.Status.Budget, "the release's error budget is in the status")
	s.Equal(0.05, res.Status.Budget.Alpha)
	applied := s.appliedTraffic()
	s.Zero(applied[0].ShadowShare)
	s.Equal(20, applied[1].ShadowShare)
	for _, t := range applied[2:6] {
		s.Zero(t.ShadowShare)
	}
	final := applied[6]
	s.Equal(deploy.Backend{Version: candidate.Version, URL: candidate.Endpoint}, final.Champion)
	s.Nil(final.Candidate)
	s.assertTrafficRule(p, true)

	// Gates and every analysis round are in the status.
	s.Len(res.Status.Gates, 4)
	for _, g := range res.Status.Gates {
		s.Equal(analysis.Pass, g.Verdict, g.Name)
	}
	all := s.rounds()
	s.Len(all, shadowRounds+canaryRounds+10)
	s.Equal(len(all), res.Status.Rounds)
	s.Len(res.Status.Analyses, RecentRounds)
	for _, r := range all {
		s.Len(r.Measurements, 2)
	}
	first := all[shadowRounds]
	s.Equal(StageCanary, first.Stage)
	s.Equal(1, first.Step)
	s.Equal(10, first.Weight)

	// The registry: challenger at start, champion moved at promotion, promoted tags.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Require().NotEmpty(s.changes)
	start := s.changes[0]
	s.Equal([]string{registry.AliasChallenger}, start.SetAliases)
	s.Equal(candidate.Version, start.Version)
	s.Equal(WorkflowID("iris"), start.Tags[TagRelease])
	s.Equal("release_started", start.Event.Kind)
	s.Equal("ci", start.Event.Actor)

	var moved, promoted *activities.RegistryChange
	for i, c := range s.changes {
		if slices.Contains(c.SetAliases, registry.AliasChampion) {
			s.Nil(moved, "champion alias moved twice")
			moved = &s.changes[i]
		}
		if c.Tags[TagOutcome] != "" {
			promoted = &s.changes[i]
		}
	}
	s.Require().NotNil(moved)
	s.Equal(candidate.Version, moved.Version)
	s.Equal([]string{registry.AliasChallenger}, moved.DeleteAliases)
	s.Equal("alice", moved.Tags[TagApprover])
	s.Equal("alice", moved.Event.Actor)
	s.Require().NotNil(promoted)
	s.Equal(OutcomePromoted, promoted.Tags[TagOutcome])
	s.Equal(string(StagePromoted), promoted.Tags[TagStage])
	s.Equal(res.Reason, promoted.Tags[TagReason])

	s.Contains(s.noteTextsLocked(), "promoted: "+res.Reason)

	approvals := 0
	for _, d := range res.Status.Decisions {
		if d.Kind == Approve {
			approvals++
			s.Equal("alice", d.Who)
			s.Equal("update", d.Channel)
			s.False(d.Refused)
		}
	}
	s.Equal(1, approvals)
}

func (s *releaseSuite) TestStagingGateFailureRollsBack() {
	p := s.testPlanWith(nil)
	s.evaluation.Candidate.Accuracy = 0.7
	s.evaluation.Candidate.Correct = 105
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	st := s.assertRolledBack(p, "staging gate accuracy: candidate accuracy 0.7000, min 0.9000")
	s.Equal([]int{0, -1}, s.weights(), "no traffic before the gates pass")
	s.Zero(s.analyzeCalls)
	var failed []string
	for _, g := range st.Gates {
		if g.Verdict == analysis.Fail {
			failed = append(failed, g.Name)
		}
	}
	s.Equal([]string{"accuracy", "accuracy_vs_champion"}, failed)
}

func (s *releaseSuite) TestShadowGateFailureRollsBack() {
	p := s.testPlanWith(nil)
	s.value = func(call int, m plan.Metric) *float64 {
		if call == 3 && m.Name == "error-rate" {
			return &failing
		}
		return &passing
	}
	s.run(p)

	s.Equal(OutcomeRolledBack, s.result().Outcome)
	s.assertRolledBack(p, "shadow analysis at 0%: metric error-rate failed 1 time(s), limit 0: 1 is above max 0.01")
	s.Equal([]int{0, 0, -1}, s.weights())
	s.Equal(3, s.analyzeCalls, "a failed analysis rolls back at once")
}

// A sequential judge's state goes from each round to the next through the whole
// canary, across its steps, and on through the post-promotion watch (where the
// champion serves nothing, so the canary's counts are its baseline); it starts again
// after the shadow soak. The status shows the evidence without the state.
func (s *releaseSuite) TestSequentialJudgeStateCarriesAcrossCanarySteps() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Analysis.Metrics = append(p.Analysis.Metrics, plan.Metric{Name: "errors", Judge: plan.JudgeRate,
			Query: "sum(e)", TotalQuery: "sum(t)", NoData: plan.NoDataHold, MaxHolds: p.Analysis.Metrics[0].MaxHolds,
			ConsecutiveErrorLimit: p.Analysis.Metrics[0].ConsecutiveErrorLimit})
		p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, 0, plan.OnTimeoutPromote
	})
	s.run(p)
	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome, res.Reason)

	// Rounds by the start of their test: shadow; canary (all its steps) and watch.
	var starts []time.Time
	rounds := map[time.Time][]activities.AnalyzeInput{}
	for _, in := range s.analyzeInputs {
		if _, ok := rounds[in.Since]; !ok {
			starts = append(starts, in.Since)
		}
		rounds[in.Since] = append(rounds[in.Since], in)
	}
	s.Require().Len(starts, 2, "shadow; canary and watch")
	canaryAndWatch := rounds[starts[1]]
	s.Greater(len(canaryAndWatch), len(p.Canary.Steps), "one state across every canary step")
	watching := 0
	for _, round := range s.rounds() {
		if round.Stage == StageWatching {
			watching++
		}
	}
	s.Positive(watching, "the watch analysed")
	for _, start := range starts {
		for i, in := range rounds[start] {
			s.Equal(i, in.States["errors"].Batches, "round %d of its stage gets the state of the %d before it", i, i)
		}
	}
	for _, round := range s.rounds() {
		for _, m := range round.Measurements {
			s.Nil(m.State, "no working state in the status")
		}
	}
}

// A bake lasts what the plan says: rounds are due on the bake's clock, every interval
// from its start, however long each round takes (here 20 s of a 1 m interval); the
// shadow soak of 10 m and the canary's steps of 5, 5 and 10 m take 10 rounds each,
// one a minute, and the next stage starts when its predecessor's time is up.
func (s *releaseSuite) TestBakesRunOnTheBakesClock() {
	s.analyzeTakes = 20 * time.Second
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, 0, plan.OnTimeoutPromote
		p.PostPromotion.Watch = 0
	})
	s.run(p)
	s.Equal(OutcomePromoted, s.result().Outcome)
	s.Require().Len(s.analyzeAt, shadowRounds+canaryRounds)
	// Each stage's rounds are a minute apart, on the minute of its bake; the round
	// trip (20 s) does not push the next round back.
	stages := [][]time.Time{s.analyzeAt[:10], s.analyzeAt[10:15], s.analyzeAt[15:20], s.analyzeAt[20:]}
	for i, rounds := range stages {
		for k := 1; k < len(rounds); k++ {
			s.Equalf(time.Minute, rounds[k].Sub(rounds[k-1]), "stage %d round %d", i, k)
		}
		if i > 0 {
			// The next bake begins when the last round of the one before ended (its
			// traffic change takes no time here), and its first round is due an
			// interval in.
			prev := stages[i-1]
			s.Equalf(s.analyzeTakes+time.Minute, rounds[0].Sub(prev[len(prev)-1]), "stage %d starts on time", i)
		}
	}
}

// A round that takes longer than the interval (150 s of 1 m) does not make the
// release judge one window twice: the rounds it fell behind by are skipped, each
// round at least an interval after the one before, and the bake still ends on its
// clock, within one round trip of its duration.
func (s *releaseSuite) TestRoundsFallenBehindAreSkipped() {
	s.analyzeTakes = 150 * time.Second
	began := s.env.Now()
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Canary.Steps = p.Canary.Steps[:1]
		p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, 0, plan.OnTimeoutPromote
		p.PostPromotion.Watch = 0
	})
	s.run(p)
	s.Equal(OutcomePromoted, s.result().Outcome)
	s.Less(len(s.analyzeAt), shadowRounds, "fewer rounds than the shadow soak's 10 alone")
	for k := 1; k < len(s.analyzeAt); k++ {
		s.GreaterOrEqualf(s.analyzeAt[k].Sub(s.analyzeAt[k-1]), time.Minute, "round %d", k)
	}
	// The two bakes: 10 m of shadow, 5 m of canary (staging and traffic changes take
	// no time here).
	// Each bake ends at most an interval and a round trip after its time: its last
	// round is the first due at or after it.
	last := s.analyzeAt[len(s.analyzeAt)-1]
	s.LessOrEqual(last.Sub(began), 15*time.Minute+2*(time.Minute+s.analyzeTakes))
}

// Since changeLocalIO's version 3 a bake's rounds are pushed to the release: one
// hand-over to the round clock a bake (shadow, three canary steps, the watch), every
// round taken from it, and no analysis activity or local activity of the release's
// own.
func (s *releaseSuite) TestRoundsArePushed() {
	var own []string
	s.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		own = append(own, info.ActivityType.Name)
	})
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, 0, plan.OnTimeoutPromote
	})
	s.run(p)
	s.Equal(OutcomePromoted, s.result().Outcome)
	s.Equal(5, s.clock.HandOvers(), "one hand-over a bake")
	s.Len(s.analyzeAt, shadowRounds+canaryRounds+10)
	s.Equal(shadowRounds+canaryRounds+10, s.status().Rounds)
	s.NotContains(own, "Analyze")
}

// A hand-over lost with its worker (no heartbeat within its timeout) is handed over
// again from the last round the release took, and the bake goes on; three lost in a
// row with no round between them fail the stage and roll back.
func (s *releaseSuite) TestLostRoundsAreHandedOverAgain() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Canary.Steps = p.Canary.Steps[:1]
		p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, 0, plan.OnTimeoutPromote
		p.PostPromotion.Watch = 0
	})
	var froms []int
	s.clock.Dies = func(in activities.RoundsInput) (int, bool) {
		froms = append(froms, in.From)
		return 4, in.Driver == 1 // the shadow soak's first worker dies after round 4
	}
	s.run(p)
	s.Equal(OutcomePromoted, s.result().Outcome)
	s.Equal([]int{0, 4, 0}, froms, "the shadow soak handed over again from round 4, then the canary step")
	// The rounds the lost worker missed are skipped (their windows were a heartbeat
	// timeout ago), none judged twice.
	st := s.status()
	s.Less(st.Rounds, shadowRounds+5)
	s.GreaterOrEqual(st.Rounds, 4+1+5)

	s.SetupTest()
	p = s.testPlanWith(nil)
	s.clock.Dies = func(activities.RoundsInput) (int, bool) { return 2, true } // every worker dies after round 2
	s.run(p)
	s.assertRolledBack(p, "shadow analysis at 0%: no analysis round from 3 hand-overs in a row")
	s.Equal(2, s.status().Rounds)
}

func (s *releaseSuite) TestCanaryAnalysisFailureRollsBack() {
	for _, tc := range []struct {
		name    string
		call    int // Analyze call that fails
		weights []int
		reason  string
	}{
		{"first step", shadowRounds + 1, []int{0, 0, 10, -1}, "canary analysis at 10%: metric p99-latency-seconds failed 1 time(s)"},
		{"last step", shadowRounds + 13, []int{0, 0, 10, 25, 50, -1}, "canary analysis at 50%: metric p99-latency-seconds failed 1 time(s)"},
	} {
		s.Run(tc.name, func() {
			s.SetupTest()
			p := s.testPlanWith(nil)
			s.value = func(call int, m plan.Metric) *float64 {
				if call == tc.call && m.Name == "p99-latency-seconds" {
					return &failing
				}
				return &passing
			}
			s.run(p)

			s.Equal(OutcomeRolledBack, s.result().Outcome)
			s.assertRolledBack(p, tc.reason)
			s.Equal(tc.weights, s.weights())
			s.Equal(tc.call, s.analyzeCalls)
		})
	}
}

func (s *releaseSuite) TestWatchFailureRestoresChampion() {
	p := s.testPlanWith(nil)
	s.approveAt(duringApproval, "bob")
	s.value = func(call int, m plan.Metric) *float64 {
		if call == shadowRounds+canaryRounds+2 {
			return &failing
		}
		return &passing
	}
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.True(strings.HasPrefix(res.Reason, "watching analysis at 95%: metric error-rate failed"), res.Reason)
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1}, s.weights())
	last := s.appliedTraffic()[6]
	s.Equal(champion.Version, last.Champion.Version, "the old champion serves again")

	s.mu.Lock()
	defer s.mu.Unlock()
	var aliasTo []string
	for _, c := range s.changes {
		if slices.Contains(c.SetAliases, registry.AliasChampion) {
			aliasTo = append(aliasTo, c.Version)
		}
	}
	s.Equal([]string{candidate.Version, champion.Version}, aliasTo, "champion alias moved, then restored")
	rb := s.changes[len(s.changes)-1]
	s.Equal(candidate.Version, rb.Version)
	s.Equal(OutcomeRolledBack, rb.Tags[TagOutcome])
}

func (s *releaseSuite) TestRejection() {
	p := s.testPlanWith(nil)
	rejection := s.update(duringApproval, Reject, DecisionRequest{Who: "bob", Comment: "drift on segment B", Source: "slack"})
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.Equal("rejected by bob: drift on segment B", res.Reason)
	accepted, refusal := rejection()
	s.True(accepted)
	s.NoError(refusal)
	st := s.assertRolledBack(p, "rejected by bob")
	s.Equal([]int{0, 0, 10, 25, 50, -1}, s.weights())
	s.Require().NotEmpty(st.Decisions)
	d := st.Decisions[0]
	s.Equal(Reject, d.Kind)
	s.Equal("bob", d.Who)
	s.Equal("slack", d.Source)
	s.Equal("update", d.Channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Equal("bob", s.changes[len(s.changes)-1].Event.Actor)
}

func (s *releaseSuite) TestApprovalTimeoutRollsBack() {
	p := s.testPlanWith(nil)
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.assertRolledBack(p, "approval timed out after 4h0m0s with no decision")
	s.Equal([]int{0, 0, 10, 25, 50, -1}, s.weights())
	s.Require().Len(res.Status.Decisions, 1)
	s.Equal("approval_timeout", res.Status.Decisions[0].Kind)
	s.Equal(30*time.Minute+4*time.Hour, res.Status.Decisions[0].At.Sub(res.Status.StartedAt))
}

func (s *releaseSuite) TestVetoWindowTimeoutPromotes() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval = plan.Approval{Required: false, Timeout: plan.Duration(time.Hour), OnTimeout: plan.OnTimeoutPromote}
	})
	s.run(p)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal("every gate passed", res.Reason)
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1}, s.weights())
	s.Require().Len(res.Status.Decisions, 1)
	s.Equal("approval_timeout", res.Status.Decisions[0].Kind)
	s.assertTrafficRule(p, true)
}

func (s *releaseSuite) TestAbortDuringCanary() {
	for _, channel := range []string{"update", "signal"} {
		s.Run(channel, func() {
			s.SetupTest()
			p := s.testPlanWith(nil)
			req := DecisionRequest{Who: "carol", Comment: "paging storm", Source: "cli"}
			if channel == "update" {
				s.update(duringCanary, Abort, req)
			} else {
				s.env.RegisterDelayedCallback(func() { s.env.SignalWorkflow(Abort, req) }, duringCanary)
			}
			s.run(p)

			res := s.result()
			s.Equal(OutcomeRolledBack, res.Outcome)
			st := s.assertRolledBack(p, "aborted by carol: paging storm")
			s.Equal([]int{0, 0, 10, -1}, s.weights())
			s.Require().Len(st.Decisions, 1)
			s.Equal(channel, st.Decisions[0].Channel)
			s.Equal(Abort, st.Decisions[0].Kind)
			s.False(st.Decisions[0].Refused)
			// The abort cuts the bake short: no analysis after it.
			for _, r := range st.Analyses {
				s.LessOrEqual(r.At.Sub(st.StartedAt), duringCanary)
			}
		})
	}
}

func (s *releaseSuite) TestPauseHoldsTheBakeUntilResumed() {
	p := s.testPlanWith(nil)
	pause := s.update(duringCanary, Pause, DecisionRequest{Who: "dave", Source: "ui"})
	resumeAt := duringCanary + 2*time.Hour
	var paused Status
	var trafficWhilePaused []int
	s.env.RegisterDelayedCallback(func() {
		paused = s.status()
		trafficWhilePaused = s.weights()
	}, resumeAt-time.Minute)
	s.update(resumeAt, Resume, DecisionRequest{Who: "dave"})
	s.approveAt(resumeAt+time.Hour, "alice")
	s.run(p)

	accepted, refusal := pause()
	s.True(accepted)
	s.NoError(refusal)
	s.True(paused.Paused)
	s.Equal(StageCanary, paused.Stage)
	s.Equal(1, paused.Step)
	s.Equal(10, paused.CandidateWeight)
	s.Equal([]int{0, 0, 10}, trafficWhilePaused, "a paused release does not advance")
	s.Contains(paused.Markdown(), "(paused; rolls back at ")

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1}, s.weights())
	// Step 1 kept being analysed while paused; step 2 began only after the resume.
	for _, r := range s.rounds() {
		at := r.At.Sub(res.Status.StartedAt)
		if r.Step == 1 {
			s.LessOrEqual(at, resumeAt+time.Minute)
		}
		if r.Step == 2 {
			s.Greater(at, resumeAt)
		}
	}
	kinds := []string{}
	for _, d := range res.Status.Decisions {
		kinds = append(kinds, d.Kind)
	}
	s.Equal([]string{Pause, Resume, Approve}, kinds)
}

func (s *releaseSuite) TestFailingActivityRollsBackAndFailsTheWorkflow() {
	p := s.testPlanWith(nil)
	s.setTraffic = func(t deploy.Traffic) error {
		if t.CandidateWeight > 0 {
			return errors.New("gateway admin API unavailable")
		}
		return nil
	}
	s.run(p)

	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Contains(err.Error(), "gateway admin API unavailable")
	s.assertRolledBack(p, "error: ")
	s.Equal([]int{0, 0, -1}, s.weights())

	attempts := 0
	s.mu.Lock()
	for _, t := range s.traffic {
		if t.CandidateWeight == 10 {
			attempts++
		}
	}
	s.mu.Unlock()
	s.Equal(5, attempts, "the step's SetTraffic is retried per its policy, then the release rolls back")
}

func (s *releaseSuite) TestCancellationStillRollsBack() {
	p := s.testPlanWith(nil)
	s.env.RegisterDelayedCallback(s.env.CancelWorkflow, duringCanary)
	s.run(p)

	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.True(temporal.IsCanceledError(err), "want cancelled, got %v", err)
	s.assertRolledBack(p, "release cancelled")
	s.Equal([]int{0, 0, 10, -1}, s.weights())
}

func (s *releaseSuite) TestApprovalValidators() {
	p := s.testPlanWith(nil)
	early := s.approveAt(duringCanary, "alice")
	stranger := s.approveAt(duringApproval, "mallory")
	var afterStranger Status
	s.env.RegisterDelayedCallback(func() { afterStranger = s.status() }, duringApproval+time.Minute)
	noComment := s.update(duringApproval+2*time.Minute, Reject, DecisionRequest{Who: "bob"})
	s.approveAt(duringApproval+time.Hour, "bob")
	s.run(p)

	_, err := early()
	s.Require().Error(err)
	s.Contains(err.Error(), "cannot approve at stage canary")
	accepted, err := stranger()
	s.False(accepted)
	s.Require().Error(err)
	s.Contains(err.Error(), "mallory may not approve this release: allowed approvers are alice, bob")
	_, err = noComment()
	s.Require().Error(err)
	s.Contains(err.Error(), "comment is empty")

	s.Equal(StageAwaitingApproval, afterStranger.Stage)
	s.Empty(afterStranger.Decisions, "a refused update is not applied")

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal("every gate passed; approved by bob", res.Reason)
	s.Require().Len(res.Status.Decisions, 1)
	s.Equal("bob", res.Status.Decisions[0].Who)
}

func (s *releaseSuite) TestRefusedSignalIsRecordedNotApplied() {
	p := s.testPlanWith(nil)
	// Approval is refused outside the approval stage, an abort without a comment always.
	s.env.RegisterDelayedCallback(func() {
		s.env.SignalWorkflow(Approve, DecisionRequest{Who: "alice", Source: "slack"})
		s.env.SignalWorkflow(Abort, DecisionRequest{Who: "carol"})
	}, duringCanary)
	s.approveAt(duringApproval, "alice")
	s.run(p)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome, "refused signals change nothing")
	s.Require().Len(res.Status.Decisions, 3)
	approve, abort := res.Status.Decisions[0], res.Status.Decisions[1]
	s.Equal(Approve, approve.Kind)
	s.Equal("signal", approve.Channel)
	s.True(approve.Refused)
	s.Contains(approve.Reason, "cannot approve at stage canary")
	s.Equal(Abort, abort.Kind)
	s.True(abort.Refused)
	s.Contains(abort.Reason, "comment is empty")
	s.False(res.Status.Decisions[2].Refused)
	s.Equal("update", res.Status.Decisions[2].Channel)
}

func (s *releaseSuite) TestNoDataNeverPasses() {
	p := s.testPlanWith(func(p *plan.Plan) { p.Shadow.Share = 0 })
	s.value = func(int, plan.Metric) *float64 { return nil }
	s.approveAt(duringApproval, "alice")
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	st := s.assertRolledBack(p, "canary analysis at 10%: metric error-rate has no passing measurement after extending the stage 3 interval(s)")
	s.Equal([]int{0, 10, -1}, s.weights())
	// Five intervals of bake, then one extension per hold.
	s.Len(st.Analyses, 5+3)
	for _, r := range st.Analyses {
		for _, m := range r.Measurements {
			s.Equal(analysis.Hold, m.Verdict)
		}
	}
}

func (s *releaseSuite) TestNoDataFailPolicyFailsAtOnce() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Shadow.Share = 0
		p.Analysis.Metrics[0].NoData = plan.NoDataFail
	})
	s.value = func(call int, m plan.Metric) *float64 {
		if call == 2 {
			return nil
		}
		return &passing
	}
	s.run(p)

	s.assertRolledBack(p, "canary analysis at 10%: metric error-rate failed 1 time(s), limit 0: no data (policy: fail)")
	s.Equal(2, s.analyzeCalls)
}

func (s *releaseSuite) TestSkipsStagingAndShadowWhenThePlanDoes() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Staging.Dataset = ""
		p.Shadow.Share = 0
		p.Approval = plan.Approval{OnTimeout: plan.OnTimeoutPromote}
		p.PostPromotion.Watch = 0
	})
	s.run(p)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal([]int{0, 10, 25, 50, 100, -1}, s.weights())
	s.Equal(canaryRounds, s.analyzeCalls)
	s.Require().Len(res.Status.Gates, 1)
	s.Contains(res.Status.Gates[0].Message, "skipped")
}

// A plan that skipped validation (a start from the Temporal CLI, say) must still not
// promote without an approver where approval is required (rule 3).
func (s *releaseSuite) TestRequiredApprovalNeverPromotesOnTimeout() {
	p := s.testPlanWith(nil)
	p.Approval.OnTimeout = plan.OnTimeoutPromote
	s.Require().Error(p.Validate())
	s.run(p)

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.assertRolledBack(p, "approval timed out after 4h0m0s with no decision")
}

func (s *releaseSuite) TestAbortDuringWatchRestoresChampion() {
	p := s.testPlanWith(nil)
	s.approveAt(duringApproval, "alice")
	reject := s.update(duringApproval+5*time.Minute, Reject, DecisionRequest{Who: "bob", Comment: "too late"})
	s.env.RegisterDelayedCallback(func() {
		s.env.SignalWorkflow(Abort, DecisionRequest{Who: "carol", Comment: "complaints from users", Source: "slack"})
	}, duringApproval+6*time.Minute)
	s.run(p)

	_, err := reject()
	s.Require().Error(err)
	s.Contains(err.Error(), "cannot reject at stage watching")

	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.Equal("aborted by carol: complaints from users", res.Reason)
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1}, s.weights())
	last := s.appliedTraffic()[6]
	s.Equal(champion.Version, last.Champion.Version)

	s.mu.Lock()
	defer s.mu.Unlock()
	var aliasTo []string
	for _, c := range s.changes {
		if slices.Contains(c.SetAliases, registry.AliasChampion) {
			aliasTo = append(aliasTo, c.Version)
		}
	}
	s.Equal([]string{candidate.Version, champion.Version}, aliasTo)
	rb := s.changes[len(s.changes)-1]
	s.Equal("carol", rb.Event.Actor)
	s.Equal(res.Reason, rb.Tags[TagReason])
}

func (s *releaseSuite) TestCancellationWhileAwaitingApproval() {
	p := s.testPlanWith(nil)
	s.env.RegisterDelayedCallback(s.env.CancelWorkflow, duringApproval)
	s.run(p)

	s.True(temporal.IsCanceledError(s.env.GetWorkflowError()))
	s.assertRolledBack(p, "release cancelled")
	s.Equal([]int{0, 0, 10, 25, 50, -1}, s.weights())
}

func (s *releaseSuite) TestRejectedQueryFailsBeforeAnyTraffic() {
	p := s.testPlanWith(nil)
	s.checkQueries = temporal.NewNonRetryableApplicationError("metric error-rate: bad_data: parse error", activities.ErrTypeQueryRejected, nil)
	s.run(p)

	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	var app *temporal.ApplicationError
	s.Require().True(errors.As(err, &app))
	s.Equal(activities.ErrTypeQueryRejected, app.Type())
	st := s.status()
	s.Equal(StageRolledBack, st.Stage)
	s.Contains(st.Reason, "parse error")
	s.Empty(s.weights(), "no traffic moved")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Require().Len(s.changes, 1, "only the rolled-back mark")
	s.Equal(OutcomeRolledBack, s.changes[0].Tags[TagOutcome])
}

func (s *releaseSuite) TestHoldThenDataPasses() {
	p := s.testPlanWith(func(p *plan.Plan) { p.Shadow.Share = 0 })
	// Step 1 has no data until the first extension, then data arrives.
	s.value = func(call int, m plan.Metric) *float64 {
		if call <= 5 {
			return nil
		}
		return &passing
	}
	s.approveAt(duringApproval, "alice")
	s.run(p)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	steps := map[int]int{}
	for _, r := range s.rounds() {
		if r.Stage == StageCanary {
			steps[r.Step]++
		}
	}
	s.Equal(map[int]int{1: 6, 2: 5, 3: 10}, steps, "step 1 extended by one interval")
}

// An abort accepted while the old champion's route is being retired still rolls
// back: an accepted abort is never ignored (rule 5).
func (s *releaseSuite) TestAbortWhileRetiringTheOldChampion() {
	p := s.testPlanWith(nil)
	s.approveAt(duringApproval, "alice")
	// The 7th SetTraffic, retiring the old champion, starts when the watch ends at
	// 55m and takes two minutes.
	s.trafficDelay = map[int]time.Duration{7: 2 * time.Minute}
	abort := s.update(duringApproval+11*time.Minute, Abort, DecisionRequest{Who: "carol", Comment: "errors in the logs"})
	s.run(p)

	accepted, refusal := abort()
	s.Require().NoError(refusal)
	s.True(accepted)
	res := s.result()
	s.Equal(OutcomeRolledBack, res.Outcome)
	s.Equal("aborted by carol: errors in the logs", res.Reason)
	s.Equal([]int{0, 0, 10, 25, 50, 95, -1, -1}, s.weights())
	applied := s.appliedTraffic()
	s.Equal(candidate.Version, applied[6].Champion.Version, "the retirement applied")
	s.Equal(champion.Version, applied[7].Champion.Version, "then the old champion was restored")
}

// An abort taken while staging runs ends the release before the candidate gets any
// live traffic.
func (s *releaseSuite) TestAbortDuringStagingMovesNoTraffic() {
	p := s.testPlanWith(func(p *plan.Plan) { p.Shadow.Share = 0 })
	s.evaluationTakes = 10 * time.Minute
	s.env.RegisterDelayedCallback(func() {
		s.env.SignalWorkflow(Abort, DecisionRequest{Who: "carol", Comment: "wrong training data"})
	}, 5*time.Minute)
	s.run(p)

	s.Equal(OutcomeRolledBack, s.result().Outcome)
	s.assertRolledBack(p, "aborted by carol: wrong training data")
	s.Equal([]int{0, -1}, s.weights(), "no live traffic after the abort")
}

// decideAt sends a decision as an update with its own update ID (the same person
// may send two) and reports what came of it once the workflow has run.
func (s *releaseSuite) decideAt(after time.Duration, id, kind string, req DecisionRequest) func() (Decision, error) {
	var d Decision
	var refusal error
	s.env.RegisterDelayedCallback(func() {
		s.env.UpdateWorkflow(kind, id, &testsuite.TestUpdateCallback{
			OnAccept: func() {},
			OnReject: func(err error) { refusal = err },
			OnComplete: func(v any, err error) {
				if dd, ok := v.(Decision); ok {
					d = dd
				}
			},
		}, req)
	}, after)
	return func() (Decision, error) { return d, refusal }
}

func (s *releaseSuite) TestQuorumWaitsForDistinctApprovers() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Approvers = []string{"alice", "bob", "carol"}
		p.Approval.Quorum = 2
	})
	first := s.decideAt(duringApproval, "a1", Approve, DecisionRequest{Who: "alice", Source: "slack", Name: "Alice A."})
	again := s.decideAt(duringApproval+time.Minute, "a2", Approve, DecisionRequest{Who: "alice", Source: "cli"})
	var between Status
	s.env.RegisterDelayedCallback(func() { between = s.status() }, duringApproval+2*time.Minute)
	second := s.decideAt(duringApproval+3*time.Minute, "b1", Approve, DecisionRequest{Who: "bob", Source: "cli"})
	s.run(p)

	d, err := first()
	s.Require().NoError(err)
	s.Equal(1, d.Remaining, "one more approval needed after the first")
	s.Equal("Alice A.", d.Name)
	_, err = again()
	s.Require().Error(err)
	s.Contains(err.Error(), "alice has already approved: the release needs 2 approvals from different approvers")
	s.Equal(StageAwaitingApproval, between.Stage, "one approval of two does not promote")
	s.Len(between.Decisions, 1)
	s.Equal(2, between.Quorum)
	d, err = second()
	s.Require().NoError(err)
	s.Zero(d.Remaining)

	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Equal("every gate passed; approved by alice, bob", res.Reason)
	for _, c := range s.changes {
		if c.Event.Kind == "champion_moved" {
			s.Equal("alice, bob", c.Tags[TagApprover])
		}
	}
}

func (s *releaseSuite) TestFourEyesRefusesWhoeverStartedTheRelease() {
	// run starts releases as "ci".
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Approvers = []string{"ci", "U0CI", "alice"}
		p.Approval.FourEyes = true
	})
	byName := s.decideAt(duringApproval, "ci-1", Approve, DecisionRequest{Who: "ci", Source: "cli"})
	bySlackName := s.decideAt(duringApproval+time.Minute, "ci-2", Approve, DecisionRequest{Who: "U0CI", Name: "CI", Source: "slack"})
	// Four eyes is about approving: the starter may still reject, abort or pause.
	s.decideAt(duringApproval+2*time.Minute, "alice", Approve, DecisionRequest{Who: "alice", Source: "cli"})
	s.run(p)

	for _, refused := range []func() (Decision, error){byName, bySlackName} {
		_, err := refused()
		s.Require().Error(err)
		s.Contains(err.Error(), "started this release and may not approve it (four eyes)")
	}
	res := s.result()
	s.Equal("every gate passed; approved by alice", res.Reason)
	s.Require().Len(res.Status.Decisions, 1)
}

func (s *releaseSuite) TestFourEyesOffLetsTheStarterApprove() {
	p := s.testPlanWith(func(p *plan.Plan) { p.Approval.Approvers = []string{"ci"} })
	s.decideAt(duringApproval, "ci", Approve, DecisionRequest{Who: "ci", Source: "cli"})
	s.run(p)
	s.Equal("every gate passed; approved by ci", s.result().Reason)
}

func (s *releaseSuite) TestApproverGroups() {
	p := s.testPlanWith(func(p *plan.Plan) {
		p.Approval.Approvers = nil
		p.Approval.ApproverGroups = []string{"S0RELEASE"}
	})
	outsider := s.decideAt(duringApproval, "u1", Approve, DecisionRequest{Who: "U0MALLORY", Groups: []string{"S0OTHER"}, Source: "slack"})
	member := s.decideAt(duringApproval+time.Minute, "u2", Approve, DecisionRequest{Who: "U0DANA", Name: "Dana", Groups: []string{"S0OTHER", "S0RELEASE"}, Source: "slack"})
	s.run(p)

	_, err := outsider()
	s.Require().Error(err)
	s.Contains(err.Error(), "U0MALLORY may not approve this release: allowed approvers are members of S0RELEASE")
	_, err = member()
	s.Require().NoError(err)
	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	s.Require().Len(res.Status.Decisions, 1)
	d := res.Status.Decisions[0]
	s.Equal("U0DANA", d.Who)
	s.Equal("Dana", d.Name)
	s.Equal("slack", d.Source)
}

// The release opens a thread, keeps its reference in its state and threads every
// later update under it; it asks for approval with the evidence and redraws the
// request with who decided.
func (s *releaseSuite) TestThreadAndApprovalRequest() {
	p := s.testPlanWith(nil)
	s.decideAt(duringApproval, "bob", Approve, DecisionRequest{Who: "bob", Name: "Bob B.", Source: "slack"})
	s.run(p)
	s.Equal(OutcomePromoted, s.result().Outcome)

	s.Require().NotEmpty(s.notes)
	opening := s.notes[0]
	s.Equal(notify.KindRelease, opening.Kind)
	s.Equal("1", opening.Champion)
	s.Equal("2", opening.Candidate)
	s.Contains(opening.Summary, "canary 10% → 25% → 50%")
	s.Contains(opening.Summary, "approval by alice, bob")
	thread := notify.Ref{Channel: "C-releases", TS: "1700000000.000001"}

	var request, redraw *notify.Message
	for i := range s.notes[1:] {
		m := &s.notes[i+1]
		s.Require().NotNil(m.Thread, "message %q is threaded", m.Text)
		s.Equal(thread, *m.Thread)
		if m.Kind == notify.KindApproval && m.Replace == nil {
			request = m
		}
		if m.Kind == notify.KindApproval && m.Replace != nil {
			redraw = m
		}
	}
	s.Require().NotNil(request, "an approval request")
	s.Require().NotNil(request.Approval)
	s.Equal([]string{"alice", "bob"}, request.Approval.Approvers)
	s.False(request.Approval.Closed)
	s.Require().NotEmpty(request.Figures, "the request carries the latest figures")
	s.Equal("error-rate", request.Figures[0].Metric)

	s.Require().NotNil(redraw, "the request is redrawn once decided")
	s.True(redraw.Approval.Closed)
	s.Require().Len(redraw.Approval.Decisions, 1)
	s.Equal(notify.Decided{Kind: Approve, Who: "bob", Name: "Bob B.", Source: "slack", Unsigned: true}, redraw.Approval.Decisions[0],
		"the test plan takes typed names: labelled unsigned")
	s.True(redraw.Approval.Unsigned)

	last := s.notes[len(s.notes)-1]
	s.Contains(last.Text, "promoted")
}

// A notifier that is down (every Announce and Notify fails) neither blocks nor fails
// the release: it is approved and promoted, its updates unthreaded.
func (s *releaseSuite) TestNotifierDownNeverBlocksTheRelease() {
	p := s.testPlanWith(nil)
	down := errors.New("slack: connection refused")
	s.announce = func(notify.Message) (notify.Ref, error) { return notify.Ref{}, down }
	s.notifyErr = down
	approval := s.approveAt(duringApproval, "alice")
	s.run(p)

	accepted, err := approval()
	s.Require().NoError(err)
	s.True(accepted)
	res := s.result()
	s.Equal(OutcomePromoted, res.Outcome)
	for _, m := range s.notes {
		s.Nil(m.Thread)
	}
}
