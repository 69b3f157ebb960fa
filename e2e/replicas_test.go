package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/examples/demo/load"
	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/config"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/worker/host"
	"github.com/mlrelease/mlrelease/workflows"
)

// The release goes through three gateway replicas. Each replica counts its own
// requests and the plan's queries sum over them; a replica that restarts starts its
// counters again, which the judges see as a reset (no data for that round).

// Three gateway processes, the worker's deployer driving all three: one replica is
// killed (SIGKILL) during the first canary step and kept down until the move to the
// next step has failed on it; restarted, it serves at once the routes its peers moved
// to meanwhile; a label joins through any replica; the release ends promoted with all
// three serving the same routes.
func TestGatewayReplicas(t *testing.T) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	procs := &stack.Stack{LogDir: filepath.Join(dir, "logs")}
	defer procs.Stop()

	// The gateway binary, as it runs in production.
	bin := filepath.Join(dir, "gateway")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./gateway")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the gateway: %s", out)

	// Model servers for versions 1 and 2.
	ds, err := scoring.LoadCSV(filepath.Join(root, "examples/demo/data/eval.csv"))
	require.NoError(t, err)
	endpoints := map[string]string{}
	for _, v := range stack.DemoVersions[:2] {
		w, err := model.Load(filepath.Join(root, v.Weights))
		require.NoError(t, err)
		h, err := model.NewServer(model.ServerOptions{Weights: w, Version: v.Version, Seed: 7})
		require.NoError(t, err)
		endpoints[v.Version] = serve(t, h)
	}

	// Three replicas, each with its own state file.
	type replica struct {
		addr, state string
		proc        *stack.Proc
	}
	replicas := make([]*replica, 3)
	var peers string // every replica, as MLRELEASE_GATEWAY_PEERS
	start := func(i int) {
		r := replicas[i]
		p, err := procs.Start(fmt.Sprintf("gateway-%d", i), bin, nil,
			"MLRELEASE_GATEWAY_LISTEN="+r.addr, "MLRELEASE_GATEWAY_STATE_FILE="+r.state, "MLRELEASE_GATEWAY_PEERS="+peers)
		require.NoError(t, err)
		require.NoError(t, stack.WaitReady(ctx, p, "http://"+r.addr+"/readyz"))
		r.proc = p
	}
	var urls []string
	targets := map[string]string{}
	for i := range replicas {
		addr, err := stack.FreePort()
		require.NoError(t, err)
		replicas[i] = &replica{addr: addr, state: filepath.Join(dir, fmt.Sprintf("gateway-%d.json", i))}
		urls = append(urls, "http://"+addr)
		targets[fmt.Sprintf("gateway-%d", i)] = addr
	}
	peers = strings.Join(urls, ",")
	for i := range replicas {
		start(i)
	}
	gateways := deploy.NewGateway(strings.Join(urls, ","), "", nil)
	_, err = gateways.Apply(ctx, deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "1", URL: endpoints["1"]}})
	require.NoError(t, err)

	promAddr, err := stack.FreePort()
	require.NoError(t, err)
	_, err = procs.StartPrometheus(ctx, root, filepath.Join(dir, "prometheus"), promAddr, 500*time.Millisecond, targets)
	require.NoError(t, err)

	devLog, err := os.Create(filepath.Join(dir, "logs", "temporal.log"))
	require.NoError(t, err)
	dev, err := devserver.Start(ctx, devLog)
	require.NoError(t, err)
	defer func() { _ = dev.Stop() }()

	reg, err := registry.OpenSQLite(filepath.Join(dir, "registry.db"))
	require.NoError(t, err)
	defer reg.Close()
	require.NoError(t, reg.RegisterVersion(ctx, registry.Version{Model: "wine", Version: "1", Endpoint: endpoints["1"], Aliases: []string{registry.AliasChampion}}))
	require.NoError(t, reg.RegisterVersion(ctx, registry.Version{Model: "wine", Version: "2", Endpoint: endpoints["2"]}))

	// The worker, its deployer on all three replicas.
	runCtx, stopWorker := context.WithCancel(ctx)
	cfg := config.Worker{TaskQueue: "mlrelease-replicas", Registry: "sqlite", RegistryPath: filepath.Join(dir, "registry.db"),
		GatewayURL: strings.Join(urls, ","), PrometheusURL: "http://" + promAddr, Listen: "127.0.0.1:0", WebUIURL: "http://localhost:8233"}
	ready := make(chan string, 1)
	workerDone := make(chan error, 1)
	go func() {
		workerDone <- host.Run(runCtx, cfg, client.Options{HostPort: dev.FrontendHostPort(), Namespace: "default"}, slog.New(slog.DiscardHandler), ready)
	}()
	defer func() { stopWorker(); <-workerDone }()
	var workerAddr string
	select {
	case workerAddr = <-ready:
	case err := <-workerDone:
		t.Fatalf("worker stopped at start: %v", err)
	}

	// Traffic through every replica.
	for _, u := range urls {
		go func() {
			_, _ = load.Run(runCtx, load.Options{URL: u + "/models/wine/invocations", Dataset: ds, Rate: 30, Concurrency: 4, Seed: 1})
		}()
	}

	p := unattendedPlan(t, true)
	_, err = release.Start(ctx, dev.Client(), reg, release.StartOptions{Plan: p, PlanDir: root, Version: "2", StartedBy: "e2e", TaskQueue: cfg.TaskQueue})
	require.NoError(t, err)

	// Mid-canary: kill replica 1.
	wctx, reached := context.WithCancel(ctx)
	_, _ = release.Watch(wctx, dev.Client(), "wine", 100*time.Millisecond, func(s workflows.Status) {
		if s.Stage == workflows.StageCanary && s.CandidateWeight == 20 {
			reached()
		}
	})
	require.NoError(t, ctx.Err())
	replicas[1].proc.Kill()

	// Keep it down until the move to the next step has failed on it at least once: a
	// traffic change on the gateway is a local activity (workflows' local-io), whose
	// failures the worker counts in the Temporal SDK's metrics.
	for failedSetTraffic(t, workerAddr) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the traffic change never failed on the replica that is down")
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Restarted, it serves at once the routes its peers moved to while it was down
	// (its state file still has the step before), before the activity's next try.
	others, err := deploy.NewGateway(urls[0]+","+urls[2], "", nil).Current(ctx, "wine")
	require.NoError(t, err, "the replicas that stayed up agree")
	require.Equal(t, 60, others.CandidateWeight, "they took the next step")
	start(1)
	mine, err := deploy.NewGateway(urls[1], "", nil).Current(ctx, "wine")
	require.NoError(t, err)
	require.Equal(t, others.Traffic, mine.Traffic, "the restarted replica serves its peers' routes")
	require.Equal(t, others.Revision, mine.Revision)
	resp, err := http.Post(urls[1]+"/models/wine/invocations", "application/json", strings.NewReader(`{"dataframe_split":{"columns":[],"data":[]}}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.NotEqual(t, http.StatusNotFound, resp.StatusCode, "the restarted replica knows the model")

	// A label sent to another replica than the one that served the prediction joins.
	row, err := json.Marshal(scoring.Request{DataframeSplit: &scoring.DataframeSplit{Columns: ds.Columns, Data: ds.Rows[:1]}})
	require.NoError(t, err)
	resp, err = http.Post(urls[0]+"/models/wine/invocations", "application/json", bytes.NewReader(row))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	id := resp.Header.Get("X-Request-Id")
	require.NotEmpty(t, id)
	resp, err = http.Post(urls[2]+"/feedback", "application/json", strings.NewReader(fmt.Sprintf(`{"request_id":%q,"label":%q}`, id, ds.Labels[0])))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "feedback joined through another replica")

	var res workflows.Result
	require.NoError(t, dev.Client().GetWorkflow(ctx, workflows.WorkflowID("wine"), "").Get(ctx, &res))
	require.Equal(t, workflows.OutcomePromoted, res.Outcome, "reason: %s", res.Reason)

	// The worker serves the release's report, latest and by run.
	for _, path := range []string{"/releases/wine", "/releases/wine/" + res.Status.ReleaseRun} {
		resp, err := http.Get("http://" + workerAddr + path)
		require.NoError(t, err)
		page, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, page)
		require.Contains(t, string(page), `class="outcome promoted"`, path)
		require.Contains(t, string(page), "error-rate", path)
		require.Contains(t, string(page), "rollback at", path, "the rate judge's evidence path")
	}

	// All three serve the same routes: the new champion alone.
	cur, err := gateways.Current(ctx, "wine")
	require.NoError(t, err, "the replicas agree")
	require.Equal(t, "2", cur.Champion.Version)
	require.Nil(t, cur.Candidate)
}

// serve runs h on a loopback port for the test's life and returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// failedSetTraffic is how many times the worker's SetTraffic local activity failed,
// from the Temporal SDK's metrics on its /metrics.
func failedSetTraffic(t *testing.T, workerAddr string) float64 {
	resp, err := http.Get("http://" + workerAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(prommodel.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	n := 0.0
	for _, m := range families["temporal_local_activity_execution_failed_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "activity_type" && l.GetValue() == "SetTraffic" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}
