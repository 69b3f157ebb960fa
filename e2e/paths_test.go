package e2e

// Releases on the real Temporal dev server with an in-process worker whose registry
// is real (SQLite) and whose data plane, metrics and model servers are fakes the
// test steers: every path a release can take, a release of thousands of analysis
// rounds through continue-as-new, and the histories that workflows/replay_test.go
// replays (MLRELEASE_RECORD_HISTORY=dir writes them).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/notify"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/report"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
)

// steered is the fake data plane and metrics: a model's metric fails while its
// traffic is in the stage the test names (shadow, canary or watching).
type steered struct {
	mu      sync.Mutex
	traffic map[string]deploy.Traffic
	failIn  map[string]string // model -> stage whose analysis fails
	applied atomic.Int64
}

func (s *steered) Apply(_ context.Context, t deploy.Traffic) (deploy.Applied, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traffic[t.Model] = t
	return deploy.Applied{Traffic: t, Revision: s.applied.Add(1)}, nil
}

func (s *steered) Current(_ context.Context, model string) (deploy.Applied, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.traffic[model]
	if !ok {
		return deploy.Applied{}, deploy.ErrNotFound
	}
	return deploy.Applied{Traffic: t}, nil
}

// Value answers a query naming model="<m>": 0.001, or 1 while m's traffic is in the
// stage its analysis should fail in.
func (s *steered) Value(_ context.Context, query string, _ time.Time) (*float64, error) {
	v := 0.001
	s.mu.Lock()
	defer s.mu.Unlock()
	for model, stage := range s.failIn {
		if !strings.Contains(query, `model="`+model+`"`) {
			continue
		}
		t := s.traffic[model]
		now := ""
		switch {
		case t.Candidate == nil:
		case t.CandidateWeight > 50: // above the test plan's last step: promoted
			now = "watching"
		case t.CandidateWeight > 0:
			now = "canary"
		case t.ShadowShare > 0:
			now = "shadow"
		}
		if now == stage {
			v = 1
		}
	}
	return &v, nil
}

// pathsEnv is one dev server and worker for many releases.
type pathsEnv struct {
	c     client.Client
	reg   *registry.SQLite
	steer *steered
	queue string
	// good, bad and slow are model servers: good answers every row right, bad every
	// row wrong, slow right but 40 ms a row.
	good, bad, slow string
	dataset         string
}

func newPathsEnv(t *testing.T, ctx context.Context) *pathsEnv {
	dev, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = dev.Stop() })
	c := dev.Client()
	reg, err := registry.OpenSQLite(filepath.Join(t.TempDir(), "registry.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })

	answer := func(right bool, delay time.Duration) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req scoring.Request
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.DataframeSplit == nil {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			time.Sleep(delay)
			label := int(req.DataframeSplit.Data[0][0]) % 3
			if !right {
				label = (label + 1) % 3
			}
			fmt.Fprintf(w, `{"predictions": [%d]}`, label)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	var b strings.Builder
	b.WriteString("x,label\n")
	for i := range 60 {
		fmt.Fprintf(&b, "%d,%d\n", i, i%3)
	}
	dataset := filepath.Join(t.TempDir(), "eval.csv")
	require.NoError(t, os.WriteFile(dataset, []byte(b.String()), 0o600))

	e := &pathsEnv{c: c, reg: reg, steer: &steered{traffic: map[string]deploy.Traffic{}, failIn: map[string]string{}},
		queue: "paths", good: answer(true, 0), bad: answer(false, 0), slow: answer(true, 40*time.Millisecond), dataset: dataset}
	w := worker.New(c, e.queue, worker.Options{MaxHeartbeatThrottleInterval: time.Second})
	w.RegisterWorkflowWithOptions(workflows.ReleaseWorkflow, workflow.RegisterOptions{Name: workflows.WorkflowName})
	rounds := activities.StartRoundClock(c, slog.New(slog.DiscardHandler))
	w.RegisterActivity(&activities.Activities{Registry: reg, Deployer: e.steer, Metrics: e.steer,
		Scoring: &scoring.Client{}, Notifier: notify.Log{Logger: slog.New(slog.DiscardHandler)}, Rounds: rounds})
	require.NoError(t, w.Start())
	t.Cleanup(rounds.Stop)
	t.Cleanup(w.Stop)
	return e
}

// model registers a model whose champion is good and whose candidate is served at
// cand.
func (e *pathsEnv) model(t *testing.T, name, cand string) {
	for _, v := range []registry.Version{
		{Model: name, Version: "1", Endpoint: e.good, Aliases: []string{registry.AliasChampion}},
		{Model: name, Version: "2", Endpoint: cand, Aliases: []string{registry.AliasChallenger}},
	} {
		require.NoError(t, e.reg.RegisterVersion(context.Background(), v))
	}
}

// pathPlan is a plan of a second or two: staging on the fake set, a shadow soak, two
// canary steps, an approval by alice, bob or carol, a watch.
func (e *pathsEnv) plan(t *testing.T, model string, change func(p *plan.Plan)) plan.Plan {
	p, err := plan.Parse([]byte(`
model: ` + model + `
candidate: "2"
staging:
  dataset: ` + e.dataset + `
  minAccuracy: 0.9
shadow:
  share: 50
  duration: 300ms
canary:
  steps:
    - {weight: 20, bake: 300ms}
    - {weight: 50, bake: 300ms}
analysis:
  interval: 100ms
  metrics:
    - name: error-rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.01
approval:
  required: true
  approvers: [alice, bob, carol]
  timeout: 1h
  unsigned: true
postPromotion:
  watch: 300ms
`))
	require.NoError(t, err)
	if change != nil {
		change(p)
		require.NoError(t, p.Validate())
	}
	return *p
}

func (e *pathsEnv) start(t *testing.T, ctx context.Context, p plan.Plan, limits workflows.RunLimits) client.WorkflowRun {
	run, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.WorkflowID(p.Model), TaskQueue: e.queue},
		workflows.WorkflowName, workflows.ReleaseInput{Plan: p, StartedBy: "ci", Limits: limits})
	require.NoError(t, err)
	return run
}

// status queries the release's current run.
func (e *pathsEnv) status(ctx context.Context, model string) (workflows.Status, error) {
	var st workflows.Status
	v, err := e.c.QueryWorkflow(ctx, workflows.WorkflowID(model), "", workflows.QueryStatus)
	if err == nil {
		err = v.Get(&st)
	}
	return st, err
}

// await polls the release until cond holds.
func (e *pathsEnv) await(t *testing.T, ctx context.Context, model string, cond func(workflows.Status) bool) workflows.Status {
	last := time.Now()
	for {
		st, err := e.status(ctx, model)
		if err == nil && cond(st) {
			return st
		}
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			events := int64(0)
			if d, err := e.c.DescribeWorkflowExecution(ctx, workflows.WorkflowID(model), ""); err == nil {
				events = d.GetWorkflowExecutionInfo().GetHistoryLength()
			}
			t.Logf("%s: stage %s, round %d, run %d (%d events so far), paused %v (err %v)", model, st.Stage, st.Rounds, st.Runs, events, st.Paused, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("release of %s: condition not met: last status %+v, err %v", model, st, err)
		case <-time.After(200 * time.Millisecond):
			// Not faster: every query is a task on the worker, which would then
			// answer queries instead of running the release.
		}
	}
}

func (e *pathsEnv) decide(ctx context.Context, model, kind, who string, signal bool) error {
	req := workflows.DecisionRequest{Who: who, Comment: kind + " by the paths test", Source: "test"}
	if signal {
		return e.c.SignalWorkflow(ctx, workflows.WorkflowID(model), "", kind, req)
	}
	h, err := e.c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: workflows.WorkflowID(model), UpdateName: kind,
		Args: []any{req}, WaitForStage: client.WorkflowUpdateStageCompleted})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	return err
}

// final waits for the release to end and returns its status, from the result or,
// for a failed or cancelled release, from the error's details.
func (e *pathsEnv) final(t *testing.T, ctx context.Context, model string) (workflows.Status, error) {
	var res workflows.Result
	err := e.c.GetWorkflow(ctx, workflows.WorkflowID(model), "").Get(ctx, &res)
	if err == nil {
		return res.Status, nil
	}
	var st workflows.Status
	type detailed interface{ Details(...any) error }
	var d detailed
	for u := err; u != nil; u = errors.Unwrap(u) {
		if x, ok := u.(detailed); ok {
			d = x
			break
		}
	}
	require.NotNilf(t, d, "release of %s failed without a status: %v", model, err)
	require.NoError(t, d.Details(&st))
	return st, err
}

// histories returns every run of the release, first run first, with their events.
func (e *pathsEnv) histories(t *testing.T, ctx context.Context, model string) []*historypb.History {
	var runs []*historypb.History
	runID := ""
	// Walk back from the latest run through each run's continued-from link.
	for {
		it := e.c.GetWorkflowHistory(ctx, workflows.WorkflowID(model), runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		h := &historypb.History{}
		for it.HasNext() {
			ev, err := it.Next()
			require.NoError(t, err)
			h.Events = append(h.Events, ev)
		}
		runs = append([]*historypb.History{h}, runs...)
		prev := h.Events[0].GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
		if prev == "" {
			return runs
		}
		runID = prev
	}
}

// record writes the release's histories to MLRELEASE_RECORD_HISTORY, when set, as
// the Temporal CLI's `workflow show --output json` does; each run of a release that
// continued as new in a file of its own.
func (e *pathsEnv) record(t *testing.T, ctx context.Context, model, name string) {
	dir := os.Getenv("MLRELEASE_RECORD_HISTORY")
	if dir == "" {
		return
	}
	runs := e.histories(t, ctx, model)
	for i, h := range runs {
		// Of many runs, the first two and the last: a start, a resumed run, an end.
		if i >= 2 && i < len(runs)-1 {
			continue
		}
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
		require.NoError(t, err)
		file := name + ".json"
		if len(runs) > 1 {
			file = fmt.Sprintf("%s_run%d.json", name, i+1)
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), b, 0o644))
	}
}

// TestReleasePaths takes every path a release can end by, on the real dev server.
func TestReleasePaths(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newPathsEnv(t, ctx)

	type path struct {
		name      string
		candidate string // the candidate's model server; good when empty
		failIn    string // stage whose analysis fails
		change    func(p *plan.Plan)
		drive     func(t *testing.T, model string) // decisions while it runs
		outcome   string
		reason    string
		cancelled bool
	}
	approveAt := func(who ...string) func(t *testing.T, model string) {
		return func(t *testing.T, model string) {
			e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == workflows.StageAwaitingApproval })
			for _, w := range who {
				require.NoError(t, e.decide(ctx, model, workflows.Approve, w, false))
			}
		}
	}
	decideIn := func(stage workflows.Stage, kind string, signal bool) func(t *testing.T, model string) {
		return func(t *testing.T, model string) {
			e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == stage })
			require.NoError(t, e.decide(ctx, model, kind, "alice", signal))
		}
	}
	paths := []path{
		{name: "promoted_by_update", drive: approveAt("alice"), outcome: workflows.OutcomePromoted},
		{name: "promoted_by_signal", drive: func(t *testing.T, model string) {
			e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == workflows.StageAwaitingApproval })
			require.NoError(t, e.decide(ctx, model, workflows.Approve, "bob", true))
		}, outcome: workflows.OutcomePromoted},
		{name: "promoted_by_quorum", change: func(p *plan.Plan) { p.Approval.Quorum = 2 }, drive: approveAt("alice", "carol"), outcome: workflows.OutcomePromoted},
		{name: "rolled_back_staging", candidate: e.bad, outcome: workflows.OutcomeRolledBack, reason: "staging gate"},
		{name: "rolled_back_shadow", failIn: "shadow", outcome: workflows.OutcomeRolledBack, reason: "shadow analysis"},
		{name: "rolled_back_canary", failIn: "canary", outcome: workflows.OutcomeRolledBack, reason: "canary analysis"},
		{name: "rolled_back_watch", failIn: "watching", drive: approveAt("alice"), outcome: workflows.OutcomeRolledBack, reason: "watching analysis"},
		{name: "rejected", drive: decideIn(workflows.StageAwaitingApproval, workflows.Reject, false), outcome: workflows.OutcomeRolledBack, reason: "rejected by alice"},
		{name: "aborted_staging", candidate: e.slow, drive: decideIn(workflows.StageStaging, workflows.Abort, false), outcome: workflows.OutcomeRolledBack, reason: "aborted by alice"},
		{name: "aborted_shadow", drive: decideIn(workflows.StageShadow, workflows.Abort, false), outcome: workflows.OutcomeRolledBack, reason: "aborted by alice"},
		{name: "aborted_canary", drive: decideIn(workflows.StageCanary, workflows.Abort, true), outcome: workflows.OutcomeRolledBack, reason: "aborted by alice"},
		{name: "aborted_approval", drive: decideIn(workflows.StageAwaitingApproval, workflows.Abort, false), outcome: workflows.OutcomeRolledBack, reason: "aborted by alice"},
		{name: "aborted_watch", change: func(p *plan.Plan) { p.PostPromotion.Watch = plan.Duration(2 * time.Second) }, drive: func(t *testing.T, model string) {
			approveAt("alice")(t, model)
			decideIn(workflows.StageWatching, workflows.Abort, false)(t, model)
		}, outcome: workflows.OutcomeRolledBack, reason: "aborted by alice"},
		{name: "paused_resumed", drive: func(t *testing.T, model string) {
			decideIn(workflows.StageCanary, workflows.Pause, false)(t, model)
			time.Sleep(500 * time.Millisecond) // past the step's bake: the pause holds it
			st, err := e.status(ctx, model)
			require.NoError(t, err)
			require.True(t, st.Paused)
			require.Equal(t, workflows.StageCanary, st.Stage)
			require.NoError(t, e.decide(ctx, model, workflows.Resume, "alice", false))
			approveAt("alice")(t, model)
		}, outcome: workflows.OutcomePromoted},
		{name: "approval_timeout_rollback", change: func(p *plan.Plan) { p.Approval.Timeout = plan.Duration(300 * time.Millisecond) },
			outcome: workflows.OutcomeRolledBack, reason: "approval timed out"},
		{name: "approval_timeout_promote", change: func(p *plan.Plan) {
			p.Approval.Required, p.Approval.Timeout, p.Approval.OnTimeout = false, plan.Duration(300*time.Millisecond), plan.OnTimeoutPromote
		}, outcome: workflows.OutcomePromoted},
		{name: "cancelled", drive: func(t *testing.T, model string) {
			e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == workflows.StageCanary })
			require.NoError(t, e.c.CancelWorkflow(ctx, workflows.WorkflowID(model), ""))
		}, outcome: workflows.OutcomeRolledBack, reason: "release cancelled", cancelled: true},
	}
	for _, pt := range paths {
		t.Run(pt.name, func(t *testing.T) {
			model := "paths-" + strings.ReplaceAll(pt.name, "_", "-")
			cand := pt.candidate
			if cand == "" {
				cand = e.good
			}
			e.model(t, model, cand)
			if pt.failIn != "" {
				e.steer.mu.Lock()
				e.steer.failIn[model] = pt.failIn
				e.steer.mu.Unlock()
			}
			e.start(t, ctx, e.plan(t, model, pt.change), workflows.RunLimits{})
			if pt.drive != nil {
				pt.drive(t, model)
			}
			st, err := e.final(t, ctx, model)
			if pt.cancelled {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, pt.outcome, st.Outcome, st.Reason)
			require.Contains(t, st.Reason, pt.reason)
			require.Equal(t, "1", st.Champion)
			if pt.outcome == workflows.OutcomeRolledBack {
				require.Equal(t, 0, st.CandidateWeight)
				require.Equal(t, workflows.StageRolledBack, st.Stage)
				// The Web UI's weight filter does not find a rolled-back release.
				desc, err := e.c.DescribeWorkflow(ctx, workflows.WorkflowID(model), "")
				require.NoError(t, err)
				if w, ok := desc.TypedSearchAttributes.GetInt64(workflows.CanaryWeightKey); ok {
					require.Zero(t, w, "MlreleaseCanaryWeight after the rollback")
				}
			} else {
				require.Equal(t, 100, st.CandidateWeight)
			}
			e.record(t, ctx, model, "path_"+pt.name)
		})
	}
}

// longBake is each of the long release's two canary steps, analysed every second
// (the dev server fires a timer up to about a second late, and rounds are due on the
// bake's clock, so a round that falls a whole interval behind skips to the next one
// due). By default 60 s a step, with runs of 20 rounds; MLRELEASE_LONG_BAKE=1500s gives
// the 3,000 rounds of bench/README.md (about 50 minutes), with the default limits.
var longBake, longLimits = func() (time.Duration, workflows.RunLimits) {
	if d, err := time.ParseDuration(os.Getenv("MLRELEASE_LONG_BAKE")); err == nil && d > 0 {
		return d, workflows.RunLimits{}
	}
	return 60 * time.Second, workflows.RunLimits{RoundsPerRun: 20}
}()

// longInterval is the long release's analysis interval.
const longInterval = time.Second

// TestLongReleaseThroughContinueAsNew: many analysis rounds at a short interval (3,000
// with MLRELEASE_LONG_BAKE=1500s and the default limits of 500 rounds a run): the
// release continues as new several times, every run's history and payload within bounds, and decisions sent
// all along, through the switches, are each honoured once; the approval is sent as
// the release continues as new at the approval stage.
func TestLongReleaseThroughContinueAsNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	e := newPathsEnv(t, ctx)
	const model = "long"
	e.model(t, model, e.good)
	p := e.plan(t, model, func(p *plan.Plan) {
		p.Staging.Dataset, p.Shadow.Share = "", 0
		p.Analysis.Interval = plan.Duration(longInterval)
		bake := plan.Duration(longBake)
		p.Canary.Steps = []plan.Step{{Weight: 20, Bake: bake}, {Weight: 50, Bake: bake}}
		p.PostPromotion.Watch = 0
	})
	started := time.Now()
	e.start(t, ctx, p, longLimits)

	// Pause and resume all through the canary, as updates and as signals: every
	// accepted one must be in the final record, in whichever run it arrived.
	var accepted, refused, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		kinds := []string{workflows.Pause, workflows.Resume}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Second):
			}
			err := e.decide(ctx, model, kinds[i%2], "bob", false)
			switch {
			case err == nil:
				accepted.Add(1)
			case strings.Contains(err.Error(), "already paused") || strings.Contains(err.Error(), "not paused") ||
				strings.Contains(err.Error(), "cannot pause"):
				refused.Add(1)
			default:
				failed.Add(1)
				t.Logf("update %s: %v", kinds[i%2], err)
			}
		}
	})
	// The approval: sent as soon as the release awaits it, as an update; by then the
	// run has taken many rounds, and history may hand over right then.
	e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == workflows.StageAwaitingApproval })
	close(stop)
	wg.Wait()
	require.NoError(t, e.decide(ctx, model, workflows.Approve, "alice", false))
	st, err := e.final(t, ctx, model)
	require.NoError(t, err)
	require.Equal(t, workflows.OutcomePromoted, st.Outcome, st.Reason)
	// Two bakes of longBake, a round due every longInterval on each bake's clock: a
	// round that fell a whole interval behind is skipped, never run twice. A bake
	// whose time is up while it is paused (the pauses above last 3 s) goes on with
	// its rounds until resumed: at most three more each here.
	require.LessOrEqual(t, st.Rounds, int(2*longBake/longInterval)+2*3)
	require.GreaterOrEqual(t, st.Rounds, int(longBake/longInterval), "at most every other round skipped")
	runs := e.histories(t, ctx, model)
	require.GreaterOrEqual(t, len(runs), 3, "at least two continue-as-new")
	require.Equal(t, len(runs), st.Runs)
	e.record(t, ctx, model, "long")

	// Every accepted decision is in the audit log once (the status keeps the latest).
	audit, err := e.reg.Events(ctx, model)
	require.NoError(t, err)
	var taken int64
	for _, ev := range audit {
		if ev.Kind == workflows.EventDecision && ev.Actor == "bob" && !strings.HasPrefix(ev.Message, "refused") {
			taken++
		}
	}
	require.Equal(t, accepted.Load(), taken, "accepted %d, refused %d, failed %d", accepted.Load(), refused.Load(), failed.Load())
	require.LessOrEqual(t, len(st.Decisions), workflows.RecentDecisions)
	require.Zero(t, failed.Load(), "no decision lost to a switch")

	// Bounds: events per run and the largest payload.
	largest, largestIn, mostEvents := 0, "", 0
	for i, h := range runs {
		mostEvents = max(mostEvents, len(h.Events))
		require.Less(t, len(h.Events), 10_000, "run %d", i+1)
		for _, ev := range h.Events {
			if n := proto.Size(ev); n > largest {
				largest, largestIn = n, ev.GetEventType().String()
			}
		}
	}
	require.Less(t, largest, workflows.PayloadBudget)
	t.Logf("%d rounds in %s over %d runs; most events in a run %d; largest event %d bytes (%s); decisions accepted %d, refused %d",
		st.Rounds, time.Since(started).Round(time.Second), len(runs), mostEvents, largest, largestIn, accepted.Load(), refused.Load())

	// Every round is in the registry's audit log.
	events, err := e.reg.Events(ctx, model)
	require.NoError(t, err)
	audited := 0
	for _, ev := range events {
		if ev.Kind == workflows.EventAnalysis {
			audited++
		}
	}
	require.Equal(t, st.Rounds, audited)

	// Its report, drawn from the release and every round in its audit log, stays
	// within 2 MB.
	rep, err := report.Load(ctx, e.c, e.reg, model, nil)
	require.NoError(t, err)
	require.Len(t, rep.Rounds, st.Rounds)
	var page bytes.Buffer
	require.NoError(t, report.Write(&page, rep))
	require.Less(t, page.Len(), 2<<20, "the report of %d rounds", st.Rounds)
	require.Contains(t, page.String(), `class="outcome promoted"`)
	t.Logf("report of %d rounds over %d runs: %d bytes", st.Rounds, st.Runs, page.Len())
}

// TestApprovalDuringContinueAsNew: a release whose every run hands over at once
// (history limit 3: each run continues as new in its first workflow task) awaits
// approval through a storm of switches; approvals sent then, as an update and as a
// signal, are honoured, each once.
func TestApprovalDuringContinueAsNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newPathsEnv(t, ctx)
	for _, viaSignal := range []bool{false, true} {
		model := fmt.Sprintf("storm-%v", viaSignal)
		e.model(t, model, e.good)
		p := e.plan(t, model, func(p *plan.Plan) {
			p.Staging.Dataset, p.Shadow.Share, p.PostPromotion.Watch = "", 0, 0
			p.Canary.Steps = []plan.Step{{Weight: 20, Bake: plan.Duration(100 * time.Millisecond)}}
			p.Approval.Quorum = 2
		})
		e.start(t, ctx, p, workflows.RunLimits{HistoryLimit: 3})
		e.await(t, ctx, model, func(st workflows.Status) bool { return st.Stage == workflows.StageAwaitingApproval && st.Runs > 5 })
		before, err := e.status(ctx, model)
		require.NoError(t, err)
		require.NoError(t, e.decide(ctx, model, workflows.Approve, "alice", viaSignal))
		// The storm goes on between the two approvals.
		e.await(t, ctx, model, func(st workflows.Status) bool { return st.Runs > before.Runs+5 })
		require.NoError(t, e.decide(ctx, model, workflows.Approve, "carol", viaSignal))
		st, err := e.final(t, ctx, model)
		require.NoError(t, err)
		require.Equal(t, workflows.OutcomePromoted, st.Outcome, st.Reason)
		require.Contains(t, st.Reason, "approved by alice, carol")
		approvals := 0
		for _, d := range st.Decisions {
			if d.Kind == workflows.Approve && !d.Refused {
				approvals++
			}
		}
		require.Equal(t, 2, approvals)
		t.Logf("signal %v: promoted after %d runs, approvals taken during the switches", viaSignal, st.Runs)
		// list shows the release once, however many runs it took; status follows it.
		var listed []release.Release
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if listed, err = release.List(ctx, e.c, model); err == nil && len(listed) == 1 && listed[0].Status == "completed" {
				break
			}
		}
		require.NoError(t, err)
		require.Len(t, listed, 1, "one release, not one line a run")
		require.Equal(t, workflows.StagePromoted, listed[0].Stage)
		got, err := release.GetStatus(ctx, e.c, model)
		require.NoError(t, err)
		require.Equal(t, st.Runs, got.Runs)
		if !viaSignal {
			e.record(t, ctx, model, "storm_approval")
		}
	}
}
