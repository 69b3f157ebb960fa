package release

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
)

// tc is the client of the dev server TestMain starts for the whole package.
var tc client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithDevServer(m))
}

func runWithDevServer(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := devserver.Start(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer func() { _ = srv.Stop() }()
	tc = srv.Client()
	return m.Run()
}

// newRegistry is a real SQLite registry with versions 1 (champion) and 2 of model,
// 2 holding the challenger alias.
func newRegistry(t *testing.T, model string) *registry.SQLite {
	t.Helper()
	reg, err := registry.OpenSQLite(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	for _, v := range []registry.Version{
		{Model: model, Version: "1", Endpoint: "http://127.0.0.1:9001", Aliases: []string{registry.AliasChampion}},
		{Model: model, Version: "2", Endpoint: "http://127.0.0.1:9002", Aliases: []string{registry.AliasChallenger}},
	} {
		if err := reg.RegisterVersion(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// fastPlan reaches the approval stage in well under a second: no staging set, no
// shadow, one short canary step, required approval by alice.
func fastPlan(t *testing.T, model string) *plan.Plan {
	t.Helper()
	p, err := plan.Parse([]byte(`
model: ` + model + `
canary:
  steps:
    - weight: 50
      bake: 200ms
analysis:
  interval: 100ms
  metrics:
    - name: error_rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.05
approval:
  required: true
  approvers: [alice]
  timeout: 1h
`))
	if err != nil {
		t.Fatal(err)
	}
	p.Approval.AllowedSigners = allowedSignersFile(t, alice)
	return p
}

// alice is the approver of fastPlan, with a key of her own.
var alice = func() *Signer {
	s, err := newTestSigner("alice")
	if err != nil {
		panic(err)
	}
	return s
}()

var models atomic.Int64

// uniqueModel names a model no earlier test run used: the tests share one server,
// also under -count.
func uniqueModel(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, models.Add(1))
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// requireNoWorkflow fails unless the model has no release at all.
func requireNoWorkflow(t *testing.T, model string) {
	t.Helper()
	_, err := tc.DescribeWorkflow(context.Background(), workflows.WorkflowID(model), "")
	var nf *serviceerror.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("a workflow %s exists (describe: %v); want none", workflows.WorkflowID(model), err)
	}
}

func TestStartRefusesInvalidPlan(t *testing.T) {
	ctx := ctxFor(t)
	reg := newRegistry(t, "wine-bad-plan")
	p := fastPlan(t, "wine-bad-plan")
	p.Canary.Steps[0].Weight = 0
	p.Analysis.Metrics = nil

	_, err := Start(ctx, tc, reg, StartOptions{Plan: p, StartedBy: "alice", TaskQueue: "no-worker"})
	if err == nil {
		t.Fatal("Start accepted an invalid plan")
	}
	for _, want := range []string{"canary.steps[0].weight", "analysis.metrics"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	requireNoWorkflow(t, "wine-bad-plan")

	// The override is validated too.
	_, err = Start(ctx, tc, reg, StartOptions{Plan: fastPlan(t, "wine-bad-plan"), Version: "2 or 3", TaskQueue: "no-worker"})
	if err == nil || !strings.Contains(err.Error(), "candidate") {
		t.Fatalf("Start with version %q: err = %v, want the candidate field named", "2 or 3", err)
	}
	requireNoWorkflow(t, "wine-bad-plan")

	if _, err := Start(ctx, tc, reg, StartOptions{TaskQueue: "no-worker"}); err == nil {
		t.Fatal("Start without a plan: no error")
	}
}

func TestStartRefusesWhatTheRegistryDoesNotHave(t *testing.T) {
	ctx := ctxFor(t)
	reg := newRegistry(t, "wine-reg")
	for _, tt := range []struct {
		name, model, version string
		want                 []string
	}{
		{"unknown version", "wine-reg", "9", []string{`version 9 of model wine-reg is not in the registry`, "mlrelease register wine-reg 9 --endpoint URL"}},
		{"candidate is the champion", "wine-reg", "1", []string{"version 1 of model wine-reg is already the champion"}},
		{"unknown model", "beer", "2", []string{"model beer has no champion", "--alias champion"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := fastPlan(t, tt.model)
			_, err := Start(ctx, tc, reg, StartOptions{Plan: p, Version: tt.version, TaskQueue: "no-worker"})
			if err == nil {
				t.Fatal("Start: no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			requireNoWorkflow(t, tt.model)
		})
	}

	t.Run("no challenger", func(t *testing.T) {
		if err := reg.DeleteAlias(ctx, "wine-reg", registry.AliasChallenger); err != nil {
			t.Fatal(err)
		}
		_, err := Start(ctx, tc, reg, StartOptions{Plan: fastPlan(t, "wine-reg"), TaskQueue: "no-worker"})
		if err == nil || !strings.Contains(err.Error(), "challenger") || !strings.Contains(err.Error(), "--version") {
			t.Fatalf("Start: err = %v, want it to name the challenger alias and --version", err)
		}
		requireNoWorkflow(t, "wine-reg")
	})
}

// No worker polls the task queue: the first release stays pending, which is all a
// second start needs to be refused.
func TestSecondStartIsAlreadyRunning(t *testing.T) {
	ctx := ctxFor(t)
	model := uniqueModel("wine-dup")
	reg := newRegistry(t, model)
	p := fastPlan(t, model)
	p.Staging.Dataset = "data/eval.csv"

	run, err := Start(ctx, tc, reg, StartOptions{Plan: p, PlanDir: "/plans", Version: "2", StartedBy: "alice", TaskQueue: "no-worker"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.TerminateWorkflow(context.Background(), run.GetID(), run.GetRunID(), "test over") })
	if run.GetID() != "release/"+model {
		t.Errorf("workflow ID %s, want release/%s", run.GetID(), model)
	}
	if p.Candidate != "" || p.Staging.Dataset != "data/eval.csv" {
		t.Errorf("Start changed the caller's plan: candidate %q, dataset %q", p.Candidate, p.Staging.Dataset)
	}

	_, err = Start(ctx, tc, reg, StartOptions{Plan: p, Version: "2", StartedBy: "bob", TaskQueue: "no-worker"})
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start: err = %v, want ErrAlreadyRunning", err)
	}
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &started) {
		t.Errorf("second Start: %v does not wrap WorkflowExecutionAlreadyStarted", err)
	}
	want := fmt.Sprintf("a release of model %[1]s is already running (workflow release/%[1]s): watch it with `mlrelease watch %[1]s`, or abort it", model)
	if err.Error() != want {
		t.Errorf("second Start:\n got %q\nwant %q", err, want)
	}

	desc, err := tc.DescribeWorkflow(ctx, run.GetID(), "")
	if err != nil {
		t.Fatal(err)
	}
	if desc.TaskQueueName != "no-worker" {
		t.Errorf("task queue %q, want no-worker", desc.TaskQueueName)
	}
	sa := desc.TypedSearchAttributes
	if v, _ := sa.GetKeyword(workflows.ModelKey); v != model {
		t.Errorf("model search attribute %q", v)
	}
	if v, _ := sa.GetKeyword(workflows.CandidateVersionKey); v != "2" {
		t.Errorf("candidate search attribute %q", v)
	}
	if v, _ := sa.GetKeyword(workflows.StageKey); v != StagePending {
		t.Errorf("stage search attribute %q", v)
	}
	if v, ok := sa.GetInt64(workflows.CanaryWeightKey); !ok || v != 0 {
		t.Errorf("weight search attribute %d (set %v)", v, ok)
	}
	if s, _ := desc.GetStaticSummary(); s != "release "+model+" 2 (champion 1)" {
		t.Errorf("static summary %q", s)
	}
	details, _ := desc.GetStaticDetails()
	for _, w := range []string{"`/plans/data/eval.csv`", "50% for 200ms", "error_rate", "required from alice"} {
		if !strings.Contains(details, w) {
			t.Errorf("static details do not say %q:\n%s", w, details)
		}
	}

	// The input the worker will see: the version pinned and the dataset absolute.
	iter := tc.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, 0)
	ev, err := iter.Next()
	if err != nil {
		t.Fatal(err)
	}
	var in workflows.ReleaseInput
	if err := converterFor().FromPayloads(ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	if in.Plan.Candidate != "2" || in.Plan.Staging.Dataset != "/plans/data/eval.csv" || in.StartedBy != "alice" {
		t.Errorf("input plan candidate %q, dataset %q, started by %q", in.Plan.Candidate, in.Plan.Staging.Dataset, in.StartedBy)
	}

	t.Run("List", func(t *testing.T) {
		// Visibility is eventually consistent: poll it, within a deadline.
		var got []Release
		deadline := time.Now().Add(10 * time.Second)
		for len(got) == 0 && time.Now().Before(deadline) {
			if got, err = List(ctx, tc, model); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 1 {
			t.Fatalf("List(%s) = %+v, want the one release", model, got)
		}
		r := got[0]
		if r.WorkflowID != run.GetID() || r.RunID != run.GetRunID() || r.Model != model || r.Status != "running" ||
			r.Stage != StagePending || r.Candidate != "2" || r.Weight != 0 || r.StartedAt.IsZero() || !r.ClosedAt.IsZero() {
			t.Errorf("List(%s) = %+v", model, r)
		}
		if _, err := List(ctx, tc, "wine' OR '1'='1"); err == nil {
			t.Error("List accepted a model name that is not a name")
		}
	})

	t.Run("status of a terminated release needs no worker", func(t *testing.T) {
		if err := tc.TerminateWorkflow(ctx, run.GetID(), run.GetRunID(), "test over"); err != nil {
			t.Fatal(err)
		}
		st, err := GetStatus(ctx, tc, model)
		if err != nil {
			t.Fatal(err)
		}
		if st.Reason != "the release workflow was terminated" || st.Candidate != "2" || st.StartedBy != "alice" ||
			!st.ApprovalRequired || len(st.Steps) != 1 {
			t.Errorf("status %+v", st)
		}
		var seen int
		if _, err := Watch(ctx, tc, model, time.Millisecond, func(workflows.Status) { seen++ }); err == nil || seen != 1 {
			t.Errorf("Watch of a terminated release: err %v after %d changes; want an error after 1", err, seen)
		}
	})
}

func TestGetStatusWithoutRelease(t *testing.T) {
	_, err := GetStatus(ctxFor(t), tc, "never-released")
	if !errors.Is(err, ErrNoRelease) || !strings.Contains(err.Error(), "release/never-released") {
		t.Fatalf("GetStatus: err = %v, want ErrNoRelease naming the workflow", err)
	}
	_, err = Decide(ctxFor(t), tc, "never-released", workflows.Approve, workflows.DecisionRequest{Who: "alice"}, false)
	if !errors.Is(err, ErrNoRelease) {
		t.Fatalf("Decide: err = %v, want ErrNoRelease", err)
	}
	_, err = Decide(ctxFor(t), tc, "never-released", "promote", workflows.DecisionRequest{Who: "alice"}, false)
	if err == nil || !strings.Contains(err.Error(), `unknown decision "promote"`) {
		t.Fatalf("Decide(promote): err = %v", err)
	}
}

// fakeDeployer and fakeMetrics stand in for the gateway and Prometheus: every query
// returns a healthy error rate.
type fakeDeployer struct{ revision atomic.Int64 }

func (d *fakeDeployer) Apply(_ context.Context, t deploy.Traffic) (deploy.Applied, error) {
	return deploy.Applied{Traffic: t, Revision: d.revision.Add(1)}, nil
}

func (d *fakeDeployer) Current(context.Context, string) (deploy.Applied, error) {
	return deploy.Applied{}, deploy.ErrNotFound
}

type fakeMetrics struct{}

func (fakeMetrics) Value(context.Context, string, time.Time) (*float64, error) {
	v := 0.01
	return &v, nil
}

// startWorker runs ReleaseWorkflow in-process with real registry activities and fake
// traffic and metrics, on a task queue of its own.
func startWorker(t *testing.T, reg registry.Registry) string {
	t.Helper()
	queue := "test-" + t.Name()
	w := worker.New(tc, queue, worker.Options{})
	w.RegisterWorkflow(workflows.ReleaseWorkflow)
	rounds := activities.StartRoundClock(tc, slog.New(slog.DiscardHandler))
	w.RegisterActivity(&activities.Activities{
		Registry: reg,
		Deployer: &fakeDeployer{},
		Metrics:  fakeMetrics{},
		Notifier: notify.Log{Logger: slog.New(slog.DiscardHandler)},
		Rounds:   rounds,
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rounds.Stop)
	t.Cleanup(w.Stop)
	return queue
}

// A release reaches approval; a non-approver is refused, alice approves, and Watch
// follows it to promotion. Its status is then read from the result.
func TestApproveAndWatchToPromotion(t *testing.T) {
	ctx := ctxFor(t)
	model := uniqueModel("wine-ok")
	reg := newRegistry(t, model)
	queue := startWorker(t, reg)
	if _, err := Start(ctx, tc, reg, StartOptions{Plan: fastPlan(t, model), StartedBy: "carol", TaskQueue: queue}); err != nil {
		t.Fatal(err)
	}

	var stages []workflows.Stage
	var refused, approveErr error
	final, err := Watch(ctx, tc, model, 50*time.Millisecond, func(st workflows.Status) {
		if len(stages) == 0 || stages[len(stages)-1] != st.Stage {
			stages = append(stages, st.Stage)
		}
		if st.Stage != workflows.StageAwaitingApproval || len(st.Decisions) > 0 {
			return
		}
		mallory := testSigner(t, "mallory")
		_, refused = Decide(ctx, tc, model, workflows.Approve, signed(ctx, t, mallory, model, workflows.Approve, workflows.DecisionRequest{Source: "test"}), false)
		_, approveErr = Decide(ctx, tc, model, workflows.Approve, signed(ctx, t, alice, model, workflows.Approve, workflows.DecisionRequest{Comment: "looks good", Source: "test"}), false)
	})
	if err != nil {
		t.Fatalf("Watch: %v (stages seen %v)", err, stages)
	}
	if !errors.Is(refused, ErrRefused) || !strings.Contains(refused.Error(), "refused: untrusted key: key SHA256:") {
		t.Errorf("approve by mallory: err = %v, want refused", refused)
	}
	if approveErr != nil {
		t.Fatalf("approve by alice: %v", approveErr)
	}
	if final.Stage != workflows.StagePromoted || final.Outcome != workflows.OutcomePromoted || final.Candidate != "2" || final.Champion != "1" {
		t.Errorf("final status: stage %s, outcome %s, candidate %s, champion %s", final.Stage, final.Outcome, final.Candidate, final.Champion)
	}
	if !containsStage(stages, workflows.StageCanary) || !containsStage(stages, workflows.StageAwaitingApproval) {
		t.Errorf("Watch reported stages %v, want canary and awaiting_approval among them", stages)
	}
	if n := len(final.Decisions); n != 1 || final.Decisions[0].Who != "alice" || final.Decisions[0].Channel != "update" {
		t.Errorf("decisions %+v, want alice's approval only", final.Decisions)
	}

	champion, err := reg.ResolveAlias(ctx, model, registry.AliasChampion)
	if err != nil || champion.Version != "2" {
		t.Errorf("champion after promotion: %v, %v; want version 2", champion.Version, err)
	}

	// Watch returns at the outcome; the workflow closes after its last notification.
	var res workflows.Result
	if err := tc.GetWorkflow(ctx, workflows.WorkflowID(model), "").Get(ctx, &res); err != nil {
		t.Fatal(err)
	}
	// Closed: the status comes from the result, and decisions are refused plainly.
	st, err := GetStatus(ctx, tc, model)
	if err != nil || st.Stage != workflows.StagePromoted {
		t.Errorf("GetStatus after the end: stage %s, err %v", st.Stage, err)
	}
	_, err = Decide(ctx, tc, model, workflows.Abort, workflows.DecisionRequest{Who: "alice", Comment: "too late"}, false)
	if err == nil || !strings.Contains(err.Error(), "the release has ended (completed)") {
		t.Errorf("abort after the end: err = %v", err)
	}
}

// A rejection sent as a signal rolls the release back; Watch reports it.
func TestRejectBySignalRollsBack(t *testing.T) {
	ctx := ctxFor(t)
	model := uniqueModel("wine-rej")
	reg := newRegistry(t, model)
	queue := startWorker(t, reg)
	if _, err := Start(ctx, tc, reg, StartOptions{Plan: fastPlan(t, model), StartedBy: "carol", TaskQueue: queue}); err != nil {
		t.Fatal(err)
	}
	var sent workflows.Decision
	var sendErr error
	final, err := Watch(ctx, tc, model, 50*time.Millisecond, func(st workflows.Status) {
		if st.Stage == workflows.StageAwaitingApproval && sent.Kind == "" && sendErr == nil {
			sent, sendErr = Decide(ctx, tc, model, workflows.Reject, signed(ctx, t, alice, model, workflows.Reject, workflows.DecisionRequest{Comment: "worse on the fraud slice", Source: "test"}), true)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if sendErr != nil || sent.Channel != "signal" || sent.Kind != workflows.Reject {
		t.Fatalf("reject by signal: %+v, %v", sent, sendErr)
	}
	if final.Stage != workflows.StageRolledBack || final.Outcome != workflows.OutcomeRolledBack ||
		final.Reason != "rejected by alice: worse on the fraud slice" {
		t.Errorf("final: stage %s, outcome %s, reason %q", final.Stage, final.Outcome, final.Reason)
	}
	champion, err := reg.ResolveAlias(ctx, model, registry.AliasChampion)
	if err != nil || champion.Version != "1" {
		t.Errorf("champion after rollback: %v, %v; want version 1", champion.Version, err)
	}
	cand, err := reg.GetVersion(ctx, model, "2")
	if err != nil || cand.Tags[workflows.TagOutcome] != workflows.OutcomeRolledBack {
		t.Errorf("candidate tags after rollback: %v, %v", cand.Tags, err)
	}
}

func containsStage(stages []workflows.Stage, s workflows.Stage) bool {
	for _, x := range stages {
		if x == s {
			return true
		}
	}
	return false
}
