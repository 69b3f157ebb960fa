package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/examples/demo/load"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/worker/host"
	"github.com/mlrelease/mlrelease/workflows"
)

// mlflowPlan releases the scikit-learn wine classifier in seconds, with no human
// approval: the staging gates and the live analysis decide.
const mlflowPlan = `
model: wine
staging:
  dataset: %s
  minAccuracy: 0.85
  maxAccuracyDrop: 0.05
shadow:
  share: 100
  duration: 4s
canary:
  steps:
    - {weight: 30, bake: 4s}
    - {weight: 70, bake: 4s}
analysis:
  interval: 2s
  metrics:
    - name: error-rate
      query: |
        (sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}",code=~"5.."}[4s])) or vector(0))
        / sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"}[4s]))
      max: 0.05
      maxHolds: 5
postPromotion:
  watch: 2s
`

// mlflowStack is the real MLflow server with the scikit-learn example's versions
// served by MLflow's scoring server, our gateway in front of them, Prometheus, the
// Temporal dev server and a worker on the MLflow registry with the watcher on.
type mlflowStack struct {
	procs    stack.Stack
	uri      string
	reg      *registry.MLflow
	temporal client.Client
	gw       *deploy.Gateway
	plans    string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	dev      *testsuite.DevServer
	servers  []*http.Server
}

func startMLflowStack(t *testing.T, ctx context.Context, root string) *mlflowStack {
	t.Helper()
	dir := t.TempDir()
	s := &mlflowStack{procs: stack.Stack{LogDir: filepath.Join(dir, "logs")}}
	t.Cleanup(s.close)

	// MLflow, and the example's versions trained and registered in it.
	phase := time.Now()
	var err error
	s.uri, err = stack.StartMLflowServer(ctx, &s.procs, filepath.Join(dir, "mlflow"))
	require.NoError(t, err, "start the MLflow server")
	t.Logf("MLflow server up in %s", time.Since(phase).Round(100*time.Millisecond))
	phase = time.Now()
	trained, err := stack.TrainMLflowExample(ctx, root, s.uri, "wine")
	require.NoError(t, err)
	require.Equal(t, "bad", trained["3"].Quality)
	t.Logf("trained in %s: %+v", time.Since(phase).Round(100*time.Millisecond), trained)
	phase = time.Now()
	s.reg, err = registry.NewMLflow(registry.MLflowOptions{TrackingURI: s.uri})
	require.NoError(t, err)

	// Each version behind MLflow's scoring server, its endpoint recorded on it.
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := map[string]error{}
	for _, v := range []string{"1", "2", "3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url, err := stack.ServeMLflowModel(ctx, &s.procs, s.uri, "wine", v)
			if err == nil {
				err = s.reg.SetTags(ctx, "wine", v, map[string]string{registry.TagEndpoint: url})
			}
			mu.Lock()
			errs[v] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for v, err := range errs {
		require.NoError(t, err, "serve version %s", v)
	}
	t.Logf("scoring servers up in %s", time.Since(phase).Round(100*time.Millisecond))
	champ, err := s.reg.ResolveAlias(ctx, "wine", registry.AliasChampion)
	require.NoError(t, err)
	require.Equal(t, "1", champ.Version)

	// The gateway, with the champion alone, and Prometheus scraping it.
	metrics := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Options{Registerer: metrics, Gatherer: metrics, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	go func() { _ = srv.Serve(ln) }()
	gatewayURL := "http://" + ln.Addr().String()
	s.gw = deploy.NewGateway(gatewayURL, "", nil)
	_, err = s.gw.Apply(ctx, deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "1", URL: champ.Endpoint}})
	require.NoError(t, err)

	promAddr, err := stack.FreePort()
	require.NoError(t, err)
	_, err = s.procs.StartPrometheus(ctx, root, filepath.Join(dir, "prometheus"), promAddr, time.Second,
		map[string]string{"gateway": ln.Addr().String()})
	require.NoError(t, err)

	// The Temporal dev server.
	devLog, err := os.Create(filepath.Join(dir, "logs", "temporal.log"))
	require.NoError(t, err)
	s.dev, err = devserver.Start(ctx, devLog)
	require.NoError(t, err)
	s.temporal = s.dev.Client()

	// One plan per model in the watcher's plans folder.
	s.plans = filepath.Join(dir, "plans")
	require.NoError(t, os.MkdirAll(s.plans, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(s.plans, "wine.yaml"),
		[]byte(fmt.Sprintf(mlflowPlan, filepath.Join(root, "examples/demo/data/eval.csv"))), 0o644))

	// The worker on the MLflow registry, configured as a user would: MLflow's own
	// variable and MLRELEASE_REGISTRY=mlflow.
	t.Setenv("MLFLOW_TRACKING_URI", s.uri)
	cfg := config.Worker{TaskQueue: "mlrelease-mlflow", Registry: registry.KindMLflow, GatewayURL: gatewayURL,
		PrometheusURL: "http://" + promAddr, Listen: "127.0.0.1:0", WebUIURL: "http://localhost:8233",
		Watch: config.Watch{PlansDir: s.plans, Alias: registry.AliasChallenger, Interval: time.Second}}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan string, 1)
	var workerErr error
	workerDone := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(workerDone)
		workerErr = host.Run(runCtx, cfg, client.Options{HostPort: s.dev.FrontendHostPort(), Namespace: "default"}, slog.New(slog.DiscardHandler), ready)
	}()
	select {
	case <-ready:
	case <-workerDone:
		t.Fatalf("worker stopped at start: %v", workerErr)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}

	// Live traffic through the gateway to MLflow's scoring servers.
	ds, err := scoring.LoadCSV(filepath.Join(root, "examples/demo/data/eval.csv"))
	require.NoError(t, err)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, _ = load.Run(runCtx, load.Options{URL: gatewayURL + "/models/wine/invocations", Dataset: ds, Rate: 20, Concurrency: 4, Seed: 1})
	}()
	return s
}

func (s *mlflowStack) close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	for _, srv := range s.servers {
		_ = srv.Close()
	}
	if s.dev != nil {
		_ = s.dev.Stop()
	}
	s.procs.Stop()
}

// watcher returns the watcher's status.
func (s *mlflowStack) watcher(ctx context.Context, t *testing.T) workflows.WatcherStatus {
	t.Helper()
	v, err := s.temporal.QueryWorkflow(ctx, workflows.WatcherWorkflowID, "", workflows.QueryWatcher)
	require.NoError(t, err)
	var st workflows.WatcherStatus
	require.NoError(t, v.Get(&st))
	return st
}

// waitPolls waits until the watcher has polled n more times.
func (s *mlflowStack) waitPolls(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	start := s.watcher(ctx, t).Polls
	for s.watcher(ctx, t).Polls < start+n {
		select {
		case <-ctx.Done():
			t.Fatalf("the watcher did not poll %d times: %v", n, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// releaseRuns counts the runs of the model's release workflow.
func (s *mlflowStack) releaseRuns(ctx context.Context, t *testing.T) int {
	t.Helper()
	resp, err := s.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: fmt.Sprintf("WorkflowId = %q", workflows.WorkflowID("wine"))})
	require.NoError(t, err)
	return len(resp.GetExecutions())
}

// result waits for the model's latest release to end.
func (s *mlflowStack) result(ctx context.Context, t *testing.T) workflows.Result {
	t.Helper()
	var res workflows.Result
	require.NoError(t, s.temporal.GetWorkflow(ctx, workflows.WorkflowID("wine"), "").Get(ctx, &res))
	return res
}

// TestMlflowRelease releases real scikit-learn models registered in a real MLflow:
// the watcher starts the good version's release when it gets the challenger alias
// and it is promoted; a second identical mark starts nothing; a version with no
// plan is tagged with why; the clearly worse version is rolled back.
func TestMlflowRelease(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	began := time.Now()
	s := startMLflowStack(t, ctx, root)
	t.Logf("stack up in %s", time.Since(began).Round(time.Second))

	t.Run("the watcher releases a version marked challenger and it is promoted", func(t *testing.T) {
		require.NoError(t, s.reg.SetAlias(ctx, "wine", registry.AliasChallenger, "2"))
		// Wait for the watcher's release to exist, then for its end.
		for s.watcher(ctx, t).Started < 1 {
			select {
			case <-ctx.Done():
				t.Fatalf("the watcher started no release: %+v", s.watcher(ctx, t))
			case <-time.After(200 * time.Millisecond):
			}
		}
		res := s.result(ctx, t)
		require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)
		require.Equal(t, workflows.WatcherActor, res.Status.StartedBy)

		champ, err := s.reg.ResolveAlias(ctx, "wine", registry.AliasChampion)
		require.NoError(t, err)
		require.Equal(t, "2", champ.Version, "champion moved")
		_, err = s.reg.ResolveAlias(ctx, "wine", registry.AliasChallenger)
		require.ErrorIs(t, err, registry.ErrNotFound, "challenger cleared")
		require.Equal(t, workflows.OutcomePromoted, champ.Tags[workflows.TagOutcome])
		require.Equal(t, string(workflows.StagePromoted), champ.Tags[workflows.TagStage])
		require.Equal(t, workflows.WorkflowID("wine"), champ.Tags[workflows.TagRelease])
		require.NotEmpty(t, champ.Tags[workflows.TagReason])
		require.Equal(t, "promoted", champ.Tags[registry.TagEvent])
		require.Contains(t, champ.Tags[registry.TagEvidence], "error-rate")
		require.True(t, strings.HasPrefix(champ.Tags[activities.TagWatched], "started "))
		routes, err := s.gw.Current(ctx, "wine")
		require.NoError(t, err)
		require.Equal(t, "2", routes.Champion.Version, "the gateway serves the new champion alone")
		require.Nil(t, routes.Candidate)
		require.Equal(t, 1, s.releaseRuns(ctx, t))
	})

	t.Run("a second identical mark starts no release", func(t *testing.T) {
		require.NoError(t, s.reg.SetAlias(ctx, "wine", registry.AliasChallenger, "2"))
		s.waitPolls(ctx, t, 3)
		require.Equal(t, 1, s.releaseRuns(ctx, t))
		require.Equal(t, 1, s.watcher(ctx, t).Started)
		require.NoError(t, s.reg.DeleteAlias(ctx, "wine", registry.AliasChallenger))
	})

	t.Run("a version without a plan is tagged with the reason", func(t *testing.T) {
		require.NoError(t, s.reg.SetTags(ctx, "wine", "3", map[string]string{activities.TagPlan: "canary-only"}))
		require.NoError(t, s.reg.SetAlias(ctx, "wine", registry.AliasChallenger, "3"))
		for s.watcher(ctx, t).Refused < 1 {
			select {
			case <-ctx.Done():
				t.Fatalf("the watcher refused nothing: %+v", s.watcher(ctx, t))
			case <-time.After(200 * time.Millisecond):
			}
		}
		v3, err := s.reg.GetVersion(ctx, "wine", "3")
		require.NoError(t, err)
		require.Equal(t, workflows.OutcomeNotStarted, v3.Tags[workflows.TagOutcome])
		require.Contains(t, v3.Tags[workflows.TagReason], "no plan canary-only for model wine")
		require.Equal(t, "refused", v3.Tags[activities.TagWatched])
		require.Equal(t, 1, s.releaseRuns(ctx, t), "no release started")
		require.NoError(t, s.reg.DeleteAlias(ctx, "wine", registry.AliasChallenger))
	})

	t.Run("the worse version is rolled back", func(t *testing.T) {
		p, err := plan.Load(filepath.Join(s.plans, "wine.yaml"))
		require.NoError(t, err)
		// Started as the CLI does, on the MLflow registry.
		_, err = release.Start(ctx, s.temporal, s.reg, release.StartOptions{Plan: p, PlanDir: s.plans, Version: "3",
			StartedBy: "e2e", TaskQueue: "mlrelease-mlflow"})
		require.NoError(t, err)
		res := s.result(ctx, t)
		require.Equal(t, workflows.OutcomeRolledBack, res.Outcome)
		require.Contains(t, res.Reason, "staging gate")

		champ, err := s.reg.ResolveAlias(ctx, "wine", registry.AliasChampion)
		require.NoError(t, err)
		require.Equal(t, "2", champ.Version, "champion unchanged")
		v3, err := s.reg.GetVersion(ctx, "wine", "3")
		require.NoError(t, err)
		require.Equal(t, workflows.OutcomeRolledBack, v3.Tags[workflows.TagOutcome])
		require.Equal(t, string(workflows.StageRolledBack), v3.Tags[workflows.TagStage])
		require.Contains(t, v3.Tags[workflows.TagReason], "staging gate")
		require.Equal(t, "rolled_back", v3.Tags[registry.TagEvent])
		_, err = s.reg.ResolveAlias(ctx, "wine", registry.AliasChallenger)
		require.True(t, errors.Is(err, registry.ErrNotFound), "challenger cleared: %v", err)
		routes, err := s.gw.Current(ctx, "wine")
		require.NoError(t, err)
		require.Equal(t, "2", routes.Champion.Version)
		require.Nil(t, routes.Candidate, "candidate traffic 0")
	})
	t.Logf("MLflow end-to-end in %s", time.Since(began).Round(time.Second))
}
