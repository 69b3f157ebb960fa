package e2e

// The worker binary killed with kill -9 while a release works: mid-evaluation (the
// retry resumes from the heartbeat and sends no scored row again), while a traffic
// change is in flight (retried within seconds, when the lost workflow task times out)
// and mid-bake (its rounds go on from another worker). Real dev server, real worker process,
// real SQLite registry; the gateway's admin API, Prometheus and the model servers are
// fakes the test watches.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/mlrelease/mlrelease/activities"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/scoring"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
)

// demoModel answers each row of the demo evaluation set with its true label, after
// delay, and counts the requests for each row.
type demoModel struct {
	*httptest.Server
	mu    sync.Mutex
	asked map[string]int
}

func newDemoModel(t *testing.T, ds *scoring.Dataset, delay time.Duration) *demoModel {
	labels := map[string]string{}
	for i, row := range ds.Rows {
		labels[fmt.Sprint(row)] = ds.Labels[i]
	}
	m := &demoModel{asked: map[string]int{}}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req scoring.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.DataframeSplit == nil || len(req.DataframeSplit.Data) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		key := fmt.Sprint(req.DataframeSplit.Data[0])
		m.mu.Lock()
		m.asked[key]++
		m.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, `{"predictions": [%q]}`, labels[key])
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *demoModel) counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.asked {
		out[k] = v
	}
	return out
}

// fakeGateway is the gateway's admin API; hang, when set, holds a PUT of that
// candidate weight until the request is cut off.
type fakeGateway struct {
	*httptest.Server
	mu   sync.Mutex
	puts []time.Time
	hang int
	seen map[int]int
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{seen: map[int]int{}}
	rev := int64(0)
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		var tr deploy.Traffic
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, `{"error":"bad"}`, http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.puts = append(g.puts, time.Now())
		g.seen[tr.CandidateWeight]++
		hang := g.hang != 0 && tr.CandidateWeight == g.hang && g.seen[tr.CandidateWeight] == 1
		rev++
		a := deploy.Applied{Traffic: tr, Revision: rev}
		g.mu.Unlock()
		if hang {
			<-r.Context().Done() // the worker that sent it is killed
			return
		}
		_ = json.NewEncoder(w).Encode(a)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *fakeGateway) putsAfter(at time.Time) []time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []time.Time
	for _, p := range g.puts {
		if p.After(at) {
			out = append(out, p)
		}
	}
	return out
}

// fakePrometheus answers every instant query with 0.001.
func fakePrometheus(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[%d,"0.001"]}]}}`, time.Now().Unix())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// workerProc runs the worker binary until killed.
type workerProc struct {
	t   *testing.T
	bin string
	env []string
	cmd *exec.Cmd
}

func (w *workerProc) start() {
	cmd := exec.Command(w.bin)
	cmd.Env = append(os.Environ(), w.env...)
	log, err := os.OpenFile(filepath.Join(w.t.TempDir(), "worker.log"), os.O_CREATE|os.O_WRONLY, 0o600)
	require.NoError(w.t, err)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(w.t, cmd.Start())
	w.cmd = cmd
	w.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// kill9 kills the worker as a crash would and returns when.
func (w *workerProc) kill9() time.Time {
	require.NoError(w.t, w.cmd.Process.Kill())
	at := time.Now()
	_ = w.cmd.Wait()
	return at
}

func TestWorkerKilled(t *testing.T) {
	root, err := devserver.Root()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./worker")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	dev, err := devserver.Start(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = dev.Stop() }()
	c := dev.Client()

	dataset := filepath.Join(root, "examples/demo/data/eval.csv")
	ds, err := scoring.LoadCSV(dataset)
	require.NoError(t, err)
	champion := newDemoModel(t, ds, 0)
	candidate := newDemoModel(t, ds, 4*time.Second) // 4 s a row
	gw := newFakeGateway(t)
	gw.hang = 20 // the first canary step's change is in flight when the worker dies

	regPath := filepath.Join(t.TempDir(), "registry.db")
	reg, err := registry.OpenSQLite(regPath)
	require.NoError(t, err)
	for _, v := range []registry.Version{
		{Model: "crash", Version: "1", Endpoint: champion.URL, Aliases: []string{registry.AliasChampion}},
		{Model: "crash", Version: "2", Endpoint: candidate.URL},
	} {
		require.NoError(t, reg.RegisterVersion(ctx, v))
	}
	require.NoError(t, reg.Close())

	w := &workerProc{t: t, bin: bin, env: []string{
		"TEMPORAL_ADDRESS=" + dev.FrontendHostPort(), "TEMPORAL_NAMESPACE=default",
		"MLRELEASE_TASK_QUEUE=crash", "MLRELEASE_REGISTRY_PATH=" + regPath,
		"MLRELEASE_GATEWAY_URL=" + gw.URL, "MLRELEASE_PROMETHEUS_URL=" + fakePrometheus(t),
		"MLRELEASE_WORKER_LISTEN=127.0.0.1:0",
	}}
	w.start()

	p, err := plan.Parse([]byte(`
model: crash
candidate: "2"
staging:
  dataset: ` + dataset + `
  minAccuracy: 0.9
canary:
  steps:
    - {weight: 20, bake: 1s}
    - {weight: 50, bake: 40s}
analysis:
  interval: 500ms
  metrics:
    - name: error-rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}"}[{{.Interval}}]))
      max: 0.01
approval:
  unsigned: true
`))
	require.NoError(t, err)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.WorkflowID("crash"), TaskQueue: "crash"},
		workflows.WorkflowName, workflows.ReleaseInput{Plan: *p, StartedBy: "ci"})
	require.NoError(t, err)

	// 1. Mid-evaluation: once the heartbeat says 20 candidate rows are scored, kill -9.
	var beat activities.StagingProgress
	for beat.Candidate.Scored() < 20 {
		select {
		case <-ctx.Done():
			t.Fatal("the evaluation never heartbeated 20 scored rows")
		case <-time.After(200 * time.Millisecond):
		}
		desc, err := c.DescribeWorkflowExecution(ctx, run.GetID(), "")
		require.NoError(t, err)
		for _, pa := range desc.GetPendingActivities() {
			if pa.GetActivityType().GetName() == "EvaluateStaging" && pa.GetHeartbeatDetails() != nil {
				require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &beat))
			}
		}
	}
	killedEval := w.kill9()
	w.start()
	t.Logf("worker killed mid-evaluation after %d of %d candidate rows (heartbeat)", beat.Candidate.Scored(), beat.Rows)

	// 2. The traffic change to 20% hangs: kill -9 when it is in flight, start a new
	// worker, and time the retry.
	deadline := time.Now().Add(5 * time.Minute)
	for gw.seen20() == 0 {
		require.True(t, time.Now().Before(deadline), "the canary's traffic change never came")
		time.Sleep(50 * time.Millisecond)
	}
	killedTraffic := w.kill9()
	w.start()
	var retried time.Duration
	for retried == 0 {
		require.True(t, time.Now().Before(killedTraffic.Add(time.Minute)), "the traffic change was never retried")
		if puts := gw.putsAfter(killedTraffic); len(puts) > 0 {
			retried = puts[0].Sub(killedTraffic)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// 3. Mid-bake: the 50% step's rounds run on the worker's round clock. Once it has
	// taken a few, kill -9; the bake goes on from the restarted worker when the
	// hand-over's heartbeat timeout (2 × 500 ms + 30 s) has passed, from the round
	// the release took last.
	var st workflows.Status
	for st.CandidateWeight != 50 || st.Rounds < 8 {
		require.True(t, time.Now().Before(deadline), "the 50%% step never took its rounds (status %+v)", st)
		time.Sleep(100 * time.Millisecond)
		v, err := c.QueryWorkflow(ctx, run.GetID(), "", workflows.QueryStatus)
		require.NoError(t, err)
		require.NoError(t, v.Get(&st))
	}
	killedBake := w.kill9()
	w.start()

	var res workflows.Result
	require.NoError(t, run.Get(ctx, &res))
	require.Equal(t, workflows.OutcomePromoted, res.Outcome, res.Reason)

	// In the history: the lost hand-over timed out, a new one went on from the last
	// round taken, and its first round came within the timeout and a few seconds.
	var lost, resumed bool
	var firstAfter time.Time
	hist := c.GetWorkflowHistory(ctx, run.GetID(), "", false, 0)
	var lastIndex int
	for hist.HasNext() {
		ev, err := hist.Next()
		require.NoError(t, err)
		switch {
		case ev.GetActivityTaskTimedOutEventAttributes() != nil:
			lost = lost || ev.GetEventTime().AsTime().After(killedBake)
		case ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "AnalyzeRounds" && lost && !resumed:
			var in activities.RoundsInput
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(ev.GetActivityTaskScheduledEventAttributes().GetInput(), &in))
			require.Equal(t, lastIndex, in.From, "handed over again from the last round taken")
			resumed = true
		case ev.GetWorkflowExecutionSignaledEventAttributes().GetSignalName() == activities.RoundSignal:
			var rd activities.Round
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(ev.GetWorkflowExecutionSignaledEventAttributes().GetInput(), &rd))
			if resumed && firstAfter.IsZero() {
				firstAfter = ev.GetEventTime().AsTime()
			}
			if !lost {
				lastIndex = rd.Index
			}
		}
	}
	require.True(t, lost, "the hand-over lost with the worker timed out")
	require.True(t, resumed, "the bake's rounds were handed over again")
	require.False(t, firstAfter.IsZero(), "rounds came again after the kill")
	t.Logf("worker killed mid-bake after round %d: rounds again after %s", lastIndex, firstAfter.Sub(killedBake).Round(100*time.Millisecond))
	require.Less(t, firstAfter.Sub(killedBake), 31*time.Second+10*time.Second)
	for _, g := range res.Status.Gates {
		require.Equal(t, "pass", string(g.Verdict), "%s: %s", g.Name, g.Message)
	}

	// No row the heartbeat counted as scored was sent again.
	scored := map[int]bool{}
	for i := range beat.Candidate.Done {
		scored[i] = true
	}
	for _, i := range beat.Candidate.Extra {
		scored[i] = true
	}
	asked := candidate.counts()
	rowsOf := map[string]int{} // rows with the same features count together
	for _, row := range ds.Rows {
		rowsOf[fmt.Sprint(row)]++
	}
	total, again := 0, 0
	for _, n := range asked {
		total += n
	}
	for i, row := range ds.Rows {
		n := asked[fmt.Sprint(row)]
		require.Positivef(t, n, "row %d never sent", i)
		if rowsOf[fmt.Sprint(row)] > 1 {
			continue
		}
		if scored[i] {
			require.Equalf(t, 1, n, "row %d was scored before the crash and sent again", i)
		}
		if n > 1 {
			again++
		}
	}
	t.Logf("staging at 4 s a row: %d rows, %d requests to the candidate (%d rows in flight at the kill sent again); evaluation resumed after kill at %s",
		len(ds.Rows), total, again, killedEval.Format(time.TimeOnly))
	t.Logf("traffic change in flight at kill -9: retried after %s", retried.Round(10*time.Millisecond))
	// A traffic change on the gateway is a local activity (workflows' local-io): it is
	// retried once the lost worker's workflow task times out (10 s), by the next one.
	require.Less(t, retried, 15*time.Second)
}

func (g *fakeGateway) seen20() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[20]
}
