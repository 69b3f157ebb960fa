package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// a is only used for its method names: the compiler checks every activity we call.
var a *activities.Activities

// Registry tags a release writes on the candidate version.
const (
	TagRelease  = "mlrelease.release"
	TagStage    = "mlrelease.stage"
	TagOutcome  = "mlrelease.outcome"
	TagReason   = "mlrelease.reason"
	TagApprover = "mlrelease.approver"
)

// ReleaseWorkflow releases in.Plan's candidate version of a model: resolve, deploy
// beside the champion, staging validation, shadow soak, canary steps, approval,
// promotion with a post-promotion watch. Every other way out (a failed gate or
// analysis, a rejection, an abort, an approval timeout, an activity that keeps
// failing, a cancellation) rolls back.
//
// Business outcomes (promoted, or rolled back on a verdict or decision) complete the
// workflow with a Result; an error that forced the rollback fails it, after the
// rollback, and a cancellation ends it cancelled, after the rollback.
func ReleaseWorkflow(ctx workflow.Context, in ReleaseInput) (*Result, error) {
	r := newRelease(ctx, in)
	r.bounded = workflow.GetVersion(ctx, changeLongRelease, workflow.DefaultVersion, 1) >= 1
	r.auditDecisions = workflow.GetVersion(ctx, changeAuditDecisions, workflow.DefaultVersion, 1) >= 1
	v := workflow.GetVersion(ctx, changeLocalIO, workflow.DefaultVersion, 3)
	r.localIO, r.localTraffic, r.pushRounds = v >= 1, v >= 2, v >= 3
	if err := r.setHandlers(ctx); err != nil {
		return nil, err
	}

	err := r.run(ctx)
	// A run that hands over to the next one (continue-as-new) ends here: the release
	// goes on in the next run, with everything this one had.
	var renewed *workflow.ContinueAsNewError
	if errors.As(err, &renewed) {
		return nil, err
	}

	// Step 8, rollback: on a context that survives the workflow's cancellation.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	if r.Status.Stage != StagePromoted {
		if rbErr := r.rollback(dctx, reasonOf(err)); rbErr != nil {
			return nil, fmt.Errorf("rollback after %q failed: %w", reasonOf(err), rbErr)
		}
	}
	// The last rounds go to the audit log, however the release ended.
	if fErr := r.flushRounds(dctx, true); fErr != nil {
		workflow.GetLogger(ctx).Warn("audit the last analysis rounds", "error", fErr)
	}
	var verdict *verdictError
	if err != nil && !errors.As(err, &verdict) {
		return nil, r.failure(err)
	}
	return &Result{Outcome: r.Status.Outcome, Reason: r.Status.Reason, Status: r.Status}, nil
}

// run is the release, stage by stage. It returns nil once promoted. A run that
// continues an earlier one (continue-as-new) starts at the stage that one was in.
func (r *release) run(ctx workflow.Context) error {
	from := r.Status.Stage // empty for a new release
	if from == "" {
		// Step 1: resolve the candidate and the champion; try every query once.
		if err := r.resolve(ctx); err != nil {
			return err
		}
		// Open the release's thread (Slack): later updates go under it.
		r.openThread(ctx)
		// Step 2: deploy the candidate beside the champion at 0% traffic.
		if err := r.deploy(ctx); err != nil {
			return err
		}
		// Step 3: validate the candidate on the evaluation set.
		if err := r.staging(ctx); err != nil {
			return err
		}
	}
	// Step 4: shadow soak: mirrored traffic, users unaffected.
	if from == "" || from == StageShadow {
		if err := r.shadow(ctx); err != nil {
			return err
		}
	}
	// Step 5: canary steps, analysed at every interval.
	if from != StageAwaitingApproval && from != StageWatching {
		if err := r.canary(ctx); err != nil {
			return err
		}
	}
	// Step 6: wait for a human decision.
	if from != StageWatching {
		if err := r.approval(ctx); err != nil {
			return err
		}
	}
	// Step 7: promote, then watch with the old champion kept warm.
	return r.promote(ctx)
}

func (r *release) resolve(ctx workflow.Context) error {
	r.setStage(ctx, StageResolving)
	var res activities.Resolved
	in := activities.ResolveInput{Model: r.plan.Model, Candidate: r.plan.Candidate}
	if err := r.io(ctx, "resolve champion and candidate", a.Resolve, in).Get(ctx, &res); err != nil {
		return err
	}
	r.Champion, r.Candidate = res.Champion, res.Candidate
	r.Status.Champion, r.Status.Candidate = res.Champion.Version, res.Candidate.Version
	r.upsert(ctx, CandidateVersionKey.ValueSet(r.Candidate.Version))

	if err := r.io(ctx, "try every metric query", a.CheckQueries, r.queries()).Get(ctx, nil); err != nil {
		return err
	}
	return r.record(ctx, activities.RegistryChange{
		Version:    r.Candidate.Version,
		SetAliases: []string{registry.AliasChallenger},
		Tags:       map[string]string{TagRelease: r.Status.ReleaseID, TagStage: string(StageDeploying), TagSigning: r.signingLabel()},
		Event: registry.Event{Kind: "release_started", Actor: r.Status.StartedBy,
			Message: fmt.Sprintf("release of version %s against champion %s started", r.Candidate.Version, r.Champion.Version)},
	})
}

func (r *release) deploy(ctx workflow.Context) error {
	r.setStage(ctx, StageDeploying)
	// Marked before the call: a call that timed out may still have applied.
	r.Deployed = true
	return r.traffic(ctx, 0, 0)
}

func (r *release) staging(ctx workflow.Context) error {
	s := r.plan.Staging
	if s.Dataset == "" {
		r.Status.Gates = append(r.Status.Gates, Gate{Name: "staging", Verdict: analysis.Pass, Message: "skipped: the plan names no evaluation set"})
		return nil
	}
	r.setStage(ctx, StageStaging)
	in := activities.EvaluateInput{Dataset: s.Dataset, Champion: r.Champion.Endpoint, Candidate: r.Candidate.Endpoint}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		// The evaluation heartbeats its progress every second and resumes from it
		// when retried: a lost worker costs seconds, and a large set may take hours.
		StartToCloseTimeout: 12 * time.Hour,
		HeartbeatTimeout:    2 * heartbeatTimeout,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 5},
		Summary:             "evaluate candidate and champion on " + s.Dataset,
	})
	var out activities.EvaluateOutput
	if err := workflow.ExecuteActivity(actx, a.EvaluateStaging, in).Get(ctx, &out); err != nil {
		return err
	}
	gates := analysis.JudgeStaging(s, out.Champion, out.Candidate)
	r.Status.Gates = append(r.Status.Gates, gates...)
	r.touch(ctx)
	evidence := map[string]string{}
	failed := ""
	for _, g := range gates {
		evidence[g.Name] = string(g.Verdict) + ": " + g.Message
		if g.Verdict != analysis.Pass && failed == "" {
			failed = fmt.Sprintf("staging gate %s: %s", g.Name, g.Message)
		}
	}
	if failed != "" {
		return fail(failed)
	}
	r.notify(ctx, "staging gates passed", evidence)
	return r.record(ctx, activities.RegistryChange{Version: r.Candidate.Version,
		Tags:  map[string]string{TagStage: string(StageStaging)},
		Event: registry.Event{Kind: "staging_passed", Message: "every staging gate passed", Evidence: evidence}})
}

func (r *release) shadow(ctx workflow.Context) error {
	sh := r.plan.Shadow
	if sh.Share == 0 {
		return nil
	}
	if r.Bake.Stage != StageShadow { // else the previous run left the soak going
		r.setStage(ctx, StageShadow)
		if err := r.traffic(ctx, 0, sh.Share); err != nil {
			return err
		}
	}
	if err := r.bake(ctx, StageShadow, 0, sh.Duration.D(), r.plan.ShadowMetrics()); err != nil {
		return err
	}
	r.notify(ctx, fmt.Sprintf("shadow soak passed (%d%% mirrored for %s)", sh.Share, sh.Duration), r.lastEvidence())
	return nil
}

func (r *release) canary(ctx workflow.Context) error {
	// A canary that the previous run left goes on at its step, at its weight.
	first, resumed := 0, r.Bake.Stage == StageCanary && r.Bake.Step > 0
	if resumed {
		first = r.Bake.Step - 1
	} else {
		r.setStage(ctx, StageCanary)
	}
	for i := first; i < len(r.plan.Canary.Steps); i++ {
		step := r.plan.Canary.Steps[i]
		r.Status.Step = i + 1
		if !resumed || i != first {
			if err := r.traffic(ctx, step.Weight, 0); err != nil {
				return err
			}
		}
		if err := r.bake(ctx, StageCanary, i+1, step.Bake.D(), r.plan.Analysis.Metrics); err != nil {
			return err
		}
		text := fmt.Sprintf("canary step %d/%d at %d%% passed", i+1, len(r.plan.Canary.Steps), step.Weight)
		if r.bounded && i == len(r.plan.Canary.Steps)-1 {
			// Posted before the approval request, so the thread's status line ends
			// at "awaiting approval", not at this step.
			r.notifyWait(ctx, text)
			continue
		}
		r.notify(ctx, text, r.lastEvidence())
	}
	return nil
}

func (r *release) approval(ctx workflow.Context) error {
	ap := r.plan.Approval
	if !ap.Waits() {
		return nil
	}
	var request workflow.Future
	if r.ApprovalDeadline.IsZero() { // else the previous run asked already
		r.setStage(ctx, StageAwaitingApproval)
		request = r.requestApproval(ctx, fmt.Sprintf("awaiting approval (timeout %s, then %s)", ap.Timeout, ap.OnTimeout))
		r.ApprovalDeadline = workflow.Now(ctx).Add(ap.Timeout.D())
	}
	var decided bool
	var err error
	for {
		var left time.Duration // zero waits without a timeout, as the plan's zero does
		if ap.Timeout > 0 {
			left = max(r.ApprovalDeadline.Sub(workflow.Now(ctx)), time.Millisecond)
		}
		decided, err = workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{
			Timeout:      left,
			TimerOptions: workflow.TimerOptions{Summary: fmt.Sprintf("approval timeout (%s, then %s)", ap.Timeout, ap.OnTimeout)},
		}, func() bool {
			return r.Approved != nil || r.Interrupt != nil || r.continueAsNewDue(ctx) || len(r.UnrecordedDecisions) >= AuditBatch
		})
		if err != nil || !decided || r.Approved != nil || r.Interrupt != nil {
			break
		}
		if err = r.flushRounds(ctx, false); err != nil {
			break
		}
		// Many decisions can fill a run's history while it waits: hand over.
		r.keepApprovalRequest(ctx, request)
		if err = r.continueAsNewIfDue(ctx); err != nil {
			break
		}
	}
	var renewed *workflow.ContinueAsNewError
	if errors.As(err, &renewed) {
		return err
	}
	r.closeApproval(ctx, request)
	if err != nil {
		return err
	}
	if err := r.check(); err != nil {
		return err
	}
	if decided {
		return nil
	}
	r.addDecision(Decision{Kind: "approval_timeout", Who: "mlrelease", Channel: "timer",
		At: workflow.Now(ctx), Comment: fmt.Sprintf("no decision within %s: %s", ap.Timeout, ap.OnTimeout)})
	// Silence promotes only where approval is not required (rule 3), even if the
	// plan reached the workflow without validation.
	if ap.OnTimeout == plan.OnTimeoutPromote && !ap.Required {
		return nil
	}
	return fail(fmt.Sprintf("approval timed out after %s with no decision", ap.Timeout))
}

func (r *release) promote(ctx workflow.Context) error {
	if r.Bake.Stage != StageWatching { // else an earlier run promoted and left the watch going
		if err := r.moveChampion(ctx); err != nil {
			return err
		}
	}
	if w := r.plan.PostPromotion.Watch.D(); w > 0 {
		r.setStage(ctx, StageWatching)
		if err := r.bake(ctx, StageWatching, 0, w, r.plan.WatchMetrics()); err != nil {
			return err
		}
	}
	// The candidate is the champion now: retire the old version's route.
	final := deploy.Traffic{Target: r.plan.Target(), Model: r.plan.Model, Champion: backend(r.Candidate)}
	if err := r.setTraffic(ctx, "retire the old champion's route", true, final).Get(ctx, nil); err != nil {
		return err
	}
	// An abort accepted while the route was retired still rolls back.
	if err := r.check(); err != nil {
		return err
	}
	r.Status.CandidateWeight, r.Status.ShadowShare = 100, 0
	r.Status.Outcome, r.Status.Reason = OutcomePromoted, "every gate passed"
	if r.Approved != nil {
		r.Status.Reason += fmt.Sprintf("; approved by %s", r.approvedBy())
	}
	r.setStage(ctx, StagePromoted)
	_ = r.record(ctx, activities.RegistryChange{Version: r.Candidate.Version,
		Tags:  map[string]string{TagStage: string(StagePromoted), TagOutcome: OutcomePromoted, TagReason: r.Status.Reason},
		Event: registry.Event{Kind: "promoted", Actor: r.approverName(), Message: r.Status.Reason, Evidence: r.lastEvidence()}})
	r.notifyWait(ctx, "promoted: "+r.Status.Reason)
	return nil
}

// moveChampion sends every request to the candidate and moves the champion alias to it.
func (r *release) moveChampion(ctx workflow.Context) error {
	r.setStage(ctx, StagePromoting)
	if err := r.traffic(ctx, r.promotedWeight(ctx), 0); err != nil {
		return err
	}
	r.AliasMoved = true // before the call, as with deployed
	tags := map[string]string{TagStage: string(StagePromoting)}
	if r.Approved != nil {
		tags[TagApprover] = r.approvedBy()
		r.signingTags(tags)
	}
	return r.record(ctx, activities.RegistryChange{Version: r.Candidate.Version,
		SetAliases: []string{registry.AliasChampion}, DeleteAliases: []string{registry.AliasChallenger}, Tags: tags,
		Event: registry.Event{Kind: "champion_moved", Actor: r.approverName(),
			Message: fmt.Sprintf("champion moved from %s to %s", r.Champion.Version, r.Candidate.Version)}})
}

// changeWatchHoldout: the old champion keeps the plan's holdout of live traffic
// during the watch (postPromotion.holdout), so that the judges go on comparing both
// versions in the same intervals.
const changeWatchHoldout = "watch-holdout"

// promotedWeight is the candidate's weight at promotion: 100 less the old champion's
// holdout while a watch follows. It only rises from the last canary step
// (plan validation).
func (r *release) promotedWeight(ctx workflow.Context) int {
	if r.plan.PostPromotion.Watch <= 0 || workflow.GetVersion(ctx, changeWatchHoldout, workflow.DefaultVersion, 1) < 1 {
		return 100
	}
	return 100 - r.plan.HoldoutOrDefault()
}

// rollback restores the champion: candidate traffic 0, mirror off, the champion alias
// where it was, the candidate marked rolled back with the reason. Each step is
// idempotent and retried until it succeeds.
func (r *release) rollback(ctx workflow.Context, reason string) error {
	r.Status.Outcome, r.Status.Reason = OutcomeRolledBack, reason
	r.setStage(ctx, StageRollingBack)
	if r.Deployed {
		restore := deploy.Traffic{Target: r.plan.Target(), Model: r.plan.Model, Champion: backend(r.Champion)}
		if err := r.setTraffic(ctx, "restore the champion's traffic", true, restore).Get(ctx, nil); err != nil {
			return err
		}
		r.Status.CandidateWeight, r.Status.ShadowShare = 0, 0
		if r.bounded {
			r.upsert(ctx, CanaryWeightKey.ValueSet(0))
		}
	}
	if r.AliasMoved {
		if err := r.record(ctx, activities.RegistryChange{Version: r.Champion.Version, SetAliases: []string{registry.AliasChampion},
			Event: registry.Event{Kind: "champion_restored", Message: "champion alias restored to " + r.Champion.Version}}); err != nil {
			return err
		}
	}
	if r.Candidate.Version != "" {
		if err := r.record(ctx, activities.RegistryChange{Version: r.Candidate.Version, DeleteAliases: []string{registry.AliasChallenger},
			Tags:  map[string]string{TagStage: string(StageRolledBack), TagOutcome: OutcomeRolledBack, TagReason: reason},
			Event: registry.Event{Kind: "rolled_back", Actor: r.interruptedBy(), Message: reason, Evidence: r.lastEvidence()}}); err != nil {
			return err
		}
	}
	r.setStage(ctx, StageRolledBack)
	r.notifyWait(ctx, "rolled back: "+reason)
	return nil
}

// bake keeps the current traffic for d, measuring the metrics every analysis
// interval. Any failed analysis fails the stage at once. When d is up the stage ends
// only when every metric's latest measurement passed and the release is not paused;
// a metric without data extends the stage up to its hold limit, then fails it.
func (r *release) bake(ctx workflow.Context, stage Stage, step int, d time.Duration, metrics []plan.Metric) error {
	interval := r.plan.Analysis.Interval.D()
	// A bake that the previous run left (continue-as-new) goes on where it was.
	if b := r.Bake; b.Stage != stage || b.Step != step || b.Tally == nil {
		// Sequential judges count from the stage's start: the whole canary, across its
		// steps and their changing weights, is one test. The post-promotion watch goes
		// on with the canary's test: the old champion keeps the plan's holdout of live
		// traffic, so the test goes on comparing both versions in the same intervals.
		switch {
		case stage == StageWatching && r.Judged.Stage == StageCanary:
			r.Judged.Stage = stage
		case r.Judged.Stage != stage:
			r.Judged = judgedStage{Stage: stage, Since: workflow.Now(ctx), States: map[string]analysis.JudgeState{}}
		}
		r.Bake = bakeProgress{Stage: stage, Step: step, Tally: analysis.NewTally(metrics)}
		if r.localIO {
			r.Bake.Start = workflow.Now(ctx)
		}
	}
	if r.localIO && r.Bake.Start.IsZero() {
		// A bake begun before changeLocalIO goes on with a clock from its progress.
		r.Bake.Start = workflow.Now(ctx).Add(-r.Bake.Elapsed)
	}
	tally := r.Bake.Tally
	bindTally(tally, metrics)
	summary := fmt.Sprintf("analyse %s at %d%%", stage, r.Status.CandidateWeight)
	retry := &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 3}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second, HeartbeatTimeout: heartbeatTimeout, RetryPolicy: retry, Summary: summary})
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry, Summary: summary})
	var pushed *roundDriver
	if r.pushRounds {
		pushed = r.roundDriver(ctx, stage, d, metrics)
		defer pushed.stop()
	}
	for {
		ms, err := r.round(ctx, pushed, stage, d, interval, metrics, actx, lctx)
		if err != nil {
			return err
		}
		ms = r.Judged.keep(ms)
		if r.Status.Budget == nil {
			r.Status.Budget = analysis.NewBudget(&r.plan)
		}
		r.Status.Budget.Record(string(stage), ms)
		r.addRound(AnalysisRound{Stage: stage, Step: step, Weight: r.Status.CandidateWeight, At: workflow.Now(ctx), Measurements: ms})
		r.touch(ctx)
		if reason := tally.Add(ms); reason != "" {
			return fail(fmt.Sprintf("%s analysis at %d%%: %s", stage, r.Status.CandidateWeight, reason))
		}
		if err := r.check(); err != nil {
			return err
		}
		if err := r.flushRounds(ctx, false); err != nil {
			return err
		}
		if r.Bake.Elapsed < d || r.Status.Paused {
			if err := r.continueAsNewIfDue(ctx); err != nil {
				return err
			}
			continue
		}
		switch v, reason := tally.Conclude(); v {
		case analysis.Pass:
			r.Bake = bakeProgress{}
			return nil
		case analysis.Fail:
			return fail(fmt.Sprintf("%s analysis at %d%%: %s", stage, r.Status.CandidateWeight, reason))
		}
		if err := r.continueAsNewIfDue(ctx); err != nil {
			return err
		}
	}
}

// round waits for the bake's next analysis round and returns its measurements:
// pushed by the worker's round clock since changeLocalIO's version 3, before it on
// the workflow's own timer and an analysis (local) activity.
func (r *release) round(ctx workflow.Context, pushed *roundDriver, stage Stage, d, interval time.Duration, metrics []plan.Metric,
	actx, lctx workflow.Context) ([]analysis.Measurement, error) {
	if pushed != nil {
		return pushed.next(ctx)
	}
	if err := r.nextRound(ctx, stage, d, interval); err != nil {
		return nil, err
	}
	if err := r.pauseExpired(ctx); err != nil {
		return nil, err
	}
	var ms []analysis.Measurement
	var analyse workflow.Future
	if r.localIO {
		analyse = workflow.ExecuteLocalActivity(lctx, a.Analyze, r.analyzeInput(metrics))
	} else {
		analyse = workflow.ExecuteActivity(actx, a.Analyze, r.analyzeInput(metrics))
	}
	if err := analyse.Get(ctx, &ms); err != nil {
		return nil, err
	}
	return ms, nil
}

// nextRound waits for the bake's next analysis round and moves its clock there.
// Since changeLocalIO round k is due at the bake's start plus k intervals, so a
// bake lasts what the plan says however long each round takes; a release that fell
// behind (its worker was down) takes the latest round due at once and skips the ones
// it missed: the sequential judges' counts since the stage began lose nothing, and a
// window is never judged twice.
func (r *release) nextRound(ctx workflow.Context, stage Stage, d, interval time.Duration) error {
	if !r.localIO {
		if err := r.wait(ctx, r.nextWait(ctx, interval), r.bakeSummary(stage, d)); err != nil {
			return err
		}
		r.Bake.Elapsed += interval
		return nil
	}
	due := r.Bake.Elapsed + interval
	for {
		left := r.Bake.Start.Add(due).Sub(workflow.Now(ctx))
		if left <= 0 {
			break
		}
		// The wait is cut short by the pause limit, which then rolls back.
		if err := r.wait(ctx, r.nextWait(ctx, left), r.bakeSummary(stage, d)); err != nil {
			return err
		}
		if err := r.pauseExpired(ctx); err != nil {
			return err
		}
	}
	if err := r.check(); err != nil {
		return err
	}
	if behind := workflow.Now(ctx).Sub(r.Bake.Start.Add(due)); behind >= interval {
		due += behind / interval * interval
	}
	r.Bake.Elapsed = due
	return nil
}

// bakeSummary names the timer to the next analysis for the Web UI.
func (r *release) bakeSummary(stage Stage, d time.Duration) string {
	if r.Status.Paused && !r.Status.PausedUntil.IsZero() {
		return fmt.Sprintf("%s paused: rolls back at %s unless resumed (pause limit %s)",
			stage, r.Status.PausedUntil.UTC().Format(time.RFC3339), r.plan.Pause.LimitOrDefault())
	}
	return fmt.Sprintf("%s bake: next analysis (%s of %s elapsed)", stage, r.Bake.Elapsed, d)
}

// nextWait is the time to the next analysis, cut short by the pause limit so that an
// expired pause rolls back on time.
func (r *release) nextWait(ctx workflow.Context, interval time.Duration) time.Duration {
	if r.Status.Paused && !r.Status.PausedUntil.IsZero() {
		if left := r.Status.PausedUntil.Sub(workflow.Now(ctx)); left < interval {
			return max(left, time.Millisecond)
		}
	}
	return interval
}

// pauseExpired fails a release paused for longer than its plan's pause limit.
func (r *release) pauseExpired(ctx workflow.Context) error {
	if !r.Status.Paused || r.Status.PausedUntil.IsZero() || workflow.Now(ctx).Before(r.Status.PausedUntil) {
		return nil
	}
	r.addDecision(Decision{Kind: "pause_expired", Who: "mlrelease", Channel: "timer",
		At: workflow.Now(ctx), Comment: fmt.Sprintf("paused for longer than the pause limit of %s", r.plan.Pause.LimitOrDefault())})
	return fail(fmt.Sprintf("paused for longer than the pause limit of %s without a resume", r.plan.Pause.LimitOrDefault()))
}

// traffic ensures the candidate's live weight and shadow share.
func (r *release) traffic(ctx workflow.Context, weight, shadow int) error {
	// A rejection or abort taken during a long stage (staging) moves no more traffic.
	if err := r.check(); err != nil {
		return err
	}
	cand := backend(r.Candidate)
	t := deploy.Traffic{Target: r.plan.Target(), Model: r.plan.Model, Champion: backend(r.Champion), Candidate: &cand, CandidateWeight: weight, ShadowShare: shadow}
	summary := fmt.Sprintf("set candidate traffic to %d%%, shadow %d%%", weight, shadow)
	if err := r.setTraffic(ctx, summary, false, t).Get(ctx, nil); err != nil {
		return err
	}
	r.Status.CandidateWeight, r.Status.ShadowShare = weight, shadow
	r.upsert(ctx, CanaryWeightKey.ValueSet(int64(weight)))
	r.touch(ctx)
	return r.check()
}

// record writes to the registry; it is retried until it succeeds, since a decision
// must not be lost.
func (r *release) record(ctx workflow.Context, c activities.RegistryChange) error {
	c.Model = r.plan.Model
	summary := "registry: " + c.Event.Kind
	if c.Event.Kind == "" {
		summary = "registry: tag " + c.Version
	}
	return r.mustIO(ctx, summary, a.ChangeRegistry, c).Get(ctx, nil)
}

// notify sends a best-effort update without waiting for it.
func (r *release) notify(ctx workflow.Context, text string, evidence map[string]string) {
	workflow.ExecuteActivity(r.notifyCtx(ctx), a.Notify, r.message(text, evidence))
}

// notifyWait sends the final update and waits, so it is not cut off by the workflow's
// end; its failure is ignored.
func (r *release) notifyWait(ctx workflow.Context, text string) {
	_ = workflow.ExecuteActivity(r.notifyCtx(ctx), a.Notify, r.message(text, r.lastEvidence())).Get(ctx, nil)
}

func (r *release) notifyCtx(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		HeartbeatTimeout:    heartbeatTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
		Summary:             "notify",
	})
}

func (r *release) message(text string, evidence map[string]string) notify.Message {
	return notify.Message{ReleaseID: r.Status.ReleaseID, Model: r.plan.Model, Champion: r.Champion.Version,
		Candidate: r.Candidate.Version, Stage: string(r.Status.Stage), Text: text, Evidence: evidence,
		Thread: r.Thread, Summary: r.summary(), Figures: r.figures()}
}

// Workflow changes guarded by workflow.GetVersion, so that releases that began
// before them replay unchanged.
const (
	// changeThread: the release opens a thread (Announce) after resolving, and
	// asks for approval with an Announce whose message it redraws once decided.
	changeThread = "notify-thread"
)

// openThread posts the release's opening message and keeps its reference in the
// workflow's state. Best-effort: bounded retries, and a failure leaves the release
// unthreaded, never blocked.
func (r *release) openThread(ctx workflow.Context) {
	if workflow.GetVersion(ctx, changeThread, workflow.DefaultVersion, 1) < 1 {
		return
	}
	m := r.message(fmt.Sprintf("release started by %s", r.Status.StartedBy), nil)
	m.Kind = notify.KindRelease
	var ref notify.Ref
	if err := workflow.ExecuteActivity(r.announceCtx(ctx, "notify: open the release's thread"), a.Announce, m).Get(ctx, &ref); err != nil {
		workflow.GetLogger(ctx).Warn("open the release's thread", "error", err)
		return
	}
	if ref.TS != "" {
		r.Thread = &ref
	}
}

// requestApproval posts the approval request: a message with the evidence that
// people can approve or reject from (Slack). Nil for releases from before it.
func (r *release) requestApproval(ctx workflow.Context, text string) workflow.Future {
	if workflow.GetVersion(ctx, changeThread, workflow.DefaultVersion, 1) < 1 {
		r.notify(ctx, text, r.lastEvidence())
		return nil
	}
	r.ApprovalText = text
	return workflow.ExecuteActivity(r.announceCtx(ctx, "notify: request approval"), a.Announce, r.approvalMessage(false))
}

// closeApproval redraws the approval request with the decisions taken and no
// buttons, whichever client decided. It does not wait.
func (r *release) closeApproval(ctx workflow.Context, request workflow.Future) {
	ref := r.ApprovalRequest // posted by an earlier run
	if request != nil && request.IsReady() {
		var got notify.Ref
		if err := request.Get(ctx, &got); err == nil && got.TS != "" {
			ref = &got
		}
	}
	if ref == nil || ref.TS == "" {
		return
	}
	m := r.approvalMessage(true)
	m.Replace = ref
	workflow.ExecuteActivity(r.notifyCtx(ctx), a.Notify, m)
}

// keepApprovalRequest keeps the posted approval request in the state, for the next
// run to redraw it. It waits for the post (bounded by its activity timeouts).
func (r *release) keepApprovalRequest(ctx workflow.Context, request workflow.Future) {
	if request == nil {
		return
	}
	var ref notify.Ref
	if err := request.Get(ctx, &ref); err == nil && ref.TS != "" {
		r.ApprovalRequest = &ref
	}
}

func (r *release) approvalMessage(closed bool) notify.Message {
	ap := r.plan.Approval
	m := r.message(r.ApprovalText, r.lastEvidence())
	m.Kind = notify.KindApproval
	info := &notify.Approval{Approvers: ap.Approvers, Groups: ap.ApproverGroups, Quorum: ap.Needed(), FourEyes: ap.FourEyes,
		StartedBy: r.Status.StartedBy, Timeout: ap.Timeout.String(), OnTimeout: ap.OnTimeout, Closed: closed,
		Unsigned: r.Status.SigningStatus.Unsigned()}
	for _, d := range r.Status.Decisions {
		if (d.Kind == Approve || d.Kind == Reject || d.Kind == Abort) && !d.Refused {
			info.Decisions = append(info.Decisions, notify.Decided{Kind: d.Kind, Who: d.Who, Name: d.Name, Source: d.Source, Comment: d.Comment,
				Key: d.Key, Unsigned: d.Unsigned})
		}
	}
	m.Approval = info
	return m
}

func (r *release) announceCtx(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    10 * time.Second,
		ScheduleToCloseTimeout: 30 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 3},
		Summary:                summary,
	})
}

// summary is the plan in a line, for the release's opening message.
func (r *release) summary() string {
	p := r.plan
	var parts []string
	if p.Staging.Dataset != "" {
		parts = append(parts, "staging on "+p.Staging.Dataset)
	}
	if p.Shadow.Share > 0 {
		parts = append(parts, fmt.Sprintf("shadow %d%% for %s", p.Shadow.Share, p.Shadow.Duration))
	}
	if n := len(p.Canary.Steps); n > 0 {
		ws := make([]string, n)
		for i, st := range p.Canary.Steps {
			ws[i] = fmt.Sprintf("%d%%", st.Weight)
		}
		parts = append(parts, "canary "+strings.Join(ws, " → "))
	}
	if ap := p.Approval; ap.Waits() {
		who := approvers(ap)
		s := "approval by " + who
		if ap.Needed() > 1 {
			s += fmt.Sprintf(" (%d needed)", ap.Needed())
		}
		if ap.FourEyes {
			s += ", four eyes"
		}
		parts = append(parts, s)
	}
	if w := p.PostPromotion.Watch; w > 0 {
		parts = append(parts, "watch "+w.String())
	}
	return strings.Join(parts, "; ")
}

// figures are the latest round's measurements, candidate against champion.
func (r *release) figures() []notify.Figure {
	n := len(r.Status.Analyses)
	if n == 0 {
		return nil
	}
	ms := r.Status.Analyses[n-1].Measurements
	out := make([]notify.Figure, 0, len(ms))
	for _, m := range ms {
		out = append(out, notify.Figure{Metric: m.Metric, Verdict: string(m.Verdict), Candidate: m.Value, Champion: m.Baseline, Note: m.Message})
	}
	return out
}

// approvedBy names the approvers whose approvals met the quorum.
func (r *release) approvedBy() string {
	if len(r.Approvals) <= 1 && r.Approved != nil {
		return r.Approved.Who
	}
	who := make([]string, len(r.Approvals))
	for i, d := range r.Approvals {
		who[i] = d.Who
	}
	return strings.Join(who, ", ")
}

// act is the default activity options with a summary for the Web UI.
func (r *release) act(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    heartbeatTimeout, // a lost activity is retried in seconds
		RetryPolicy:         actRetry,
		Summary:             summary,
	})
}

// io runs a short, idempotent I/O activity with act's options: since changeLocalIO
// as a local activity.
func (r *release) io(ctx workflow.Context, summary string, fn any, args ...any) workflow.Future {
	if !r.localIO {
		return workflow.ExecuteActivity(r.act(ctx, summary), fn, args...)
	}
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: time.Minute, RetryPolicy: actRetry, Summary: summary}), fn, args...)
}

// mustIO is io for steps that must happen (compensating's options): retried without
// limit.
func (r *release) mustIO(ctx workflow.Context, summary string, fn any, args ...any) workflow.Future {
	if !r.localIO {
		return workflow.ExecuteActivity(r.compensating(ctx, summary), fn, args...)
	}
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: time.Minute, RetryPolicy: mustRetry, Summary: summary}), fn, args...)
}

// setTraffic runs a traffic change, retried without limit when must is set. On the
// gateway (its admin API answers in milliseconds) it is short I/O (io, mustIO); a
// Kubernetes deployer waits, up to the plan's deploy.wait, for the object's status
// to report the change, so there it stays an activity that heartbeats, retried
// within seconds of its worker's loss.
func (r *release) setTraffic(ctx workflow.Context, summary string, must bool, t deploy.Traffic) workflow.Future {
	switch {
	case r.localTraffic && r.plan.Deploy.IsGateway() && must:
		return r.mustIO(ctx, summary, a.SetTraffic, t)
	case r.localTraffic && r.plan.Deploy.IsGateway():
		return r.io(ctx, summary, a.SetTraffic, t)
	case must:
		return workflow.ExecuteActivity(r.compensating(ctx, summary), a.SetTraffic, t)
	}
	return workflow.ExecuteActivity(r.act(ctx, summary), a.SetTraffic, t)
}

// actRetry and mustRetry are the retry policies of act and compensating.
var (
	actRetry = &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    30 * time.Second,
		MaximumAttempts:    5,
	}
	mustRetry = &temporal.RetryPolicy{
		InitialInterval:    time.Second,
		BackoffCoefficient: 2,
		MaximumInterval:    time.Minute,
	}
)

// compensating is for steps that must happen: retried without limit.
func (r *release) compensating(ctx workflow.Context, summary string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    heartbeatTimeout,
		RetryPolicy:         mustRetry,
		Summary:             summary,
	})
}

// wait sleeps for d unless the release is rejected or aborted first.
func (r *release) wait(ctx workflow.Context, d time.Duration, summary string) error {
	if _, err := workflow.AwaitWithOptions(ctx, workflow.AwaitOptions{Timeout: d, TimerOptions: workflow.TimerOptions{Summary: summary}},
		func() bool { return r.Interrupt != nil }); err != nil {
		return err
	}
	return r.check()
}

// queries renders every metric query of the plan once, for the up-front check.
func (r *release) queries() []activities.NamedQuery {
	var out []activities.NamedQuery
	seen := map[string]bool{}
	window := plan.PromDuration(r.plan.Analysis.Interval.D())
	for _, set := range [][]plan.Metric{r.plan.ShadowMetrics(), r.plan.Analysis.Metrics, r.plan.WatchMetrics()} {
		for _, m := range set {
			for _, tmpl := range m.Queries() {
				q, err := plan.Render(tmpl, plan.QueryVars{Model: r.plan.Model, Variant: deploy.Candidate, Version: r.Candidate.Version, Interval: window})
				if err != nil {
					q = tmpl // the activity reports it; the plan was validated before start
				}
				if !seen[q] {
					seen[q] = true
					out = append(out, activities.NamedQuery{Metric: m.Name, Query: q,
						Buckets: m.Judge == plan.JudgeLatency || m.Judge == plan.JudgeDrift})
				}
			}
		}
	}
	return out
}

func (r *release) lastEvidence() map[string]string {
	ev := map[string]string{}
	if n := len(r.Status.Analyses); n > 0 {
		for _, m := range r.Status.Analyses[n-1].Measurements {
			ev[m.Metric] = string(m.Verdict) + ": " + m.Message
		}
	}
	return ev
}

func (r *release) approverName() string {
	if r.Approved != nil {
		return r.Approved.Who
	}
	return r.Status.StartedBy
}

func (r *release) interruptedBy() string {
	if r.Interrupt != nil {
		return r.Interrupt.Who
	}
	return "mlrelease"
}

func backend(v registry.Version) deploy.Backend {
	return deploy.Backend{Version: v.Version, URL: v.Endpoint}
}

// verdictError ends a release by a verdict or a decision, not by a fault.
type verdictError struct{ reason string }

func (e *verdictError) Error() string { return e.reason }

func fail(reason string) error { return &verdictError{reason: reason} }

// ErrTypeReleaseFailed is the type of the error a release fails with after the
// rollback a fault without a type of its own forced. Whatever its type, that error's
// details hold the final Status.
const ErrTypeReleaseFailed = "ReleaseFailed"

// failure is the error a release ends with when a fault (not a verdict) forced its
// rollback, or a cancellation: it carries the final status as details, so that the
// status of every ended release tells the truth without a result.
func (r *release) failure(err error) error {
	if temporal.IsCanceledError(err) {
		return temporal.NewCanceledError(r.Status)
	}
	// The fault's own type stays (QueryRejected, say) where it had one.
	errType := ErrTypeReleaseFailed
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.Type() != "" {
		errType = app.Type()
	}
	return temporal.NewApplicationErrorWithOptions(reasonOf(err), errType,
		temporal.ApplicationErrorOptions{NonRetryable: true, Cause: err, Details: []any{r.Status}})
}

// reasonOf says, for the record, why a release that was not promoted rolled back.
func reasonOf(err error) string {
	var verdict *verdictError
	var app *temporal.ApplicationError
	switch {
	case err == nil:
		return "ended without promotion"
	case errors.As(err, &verdict):
		return verdict.reason
	case temporal.IsCanceledError(err):
		return "release cancelled"
	case errors.As(err, &app):
		return "error: " + app.Error()
	}
	return "error: " + err.Error()
}
