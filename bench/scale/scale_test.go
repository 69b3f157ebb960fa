// Package scale measures many concurrent releases on one Temporal server (issue 13):
// N releases of N models started at once, each a canary of two steps analysed every
// interval by a rate judge and a p99 threshold, through the real gateway, the real
// Prometheus, one or more real worker processes and either the Temporal dev server
// (on disk) or the Temporal cluster (the server on PostgreSQL). Every tenth model's
// candidate is broken (every answer a 500) and must be rolled back; the others must be
// promoted. Figures and commands are in bench/README.md.
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 0 ./bench/scale/
//
// Settings (environment):
//
//	MLRELEASE_SCALE_N         releases, a comma list (default 10,100)
//	MLRELEASE_SCALE_SERVER    dev or cluster (default dev)
//	MLRELEASE_SCALE_INTERVAL  analysis interval (default 10s)
//	MLRELEASE_SCALE_STEP      each canary step's bake (default 30s)
//	MLRELEASE_SCALE_WORKERS   worker processes (default 1)
//	MLRELEASE_SCALE_KILL      kill -9 the first worker this long after the starts,
//	                          and start it again 10 s later (default: no kill)
//	MLRELEASE_SCALE_RATE      requests per second per model (default 1)
//	MLRELEASE_SCALE_PRAGMAS   the dev server's SQLite pragmas, a comma list
//	                          (default none: the CLI's defaults)
//	MLRELEASE_SCALE_TIMELINE  a file for the first release's history, event by event
package scale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/internal/stack/cluster"
	"github.com/mlrelease/mlrelease/internal/stack/devserver"
	"github.com/mlrelease/mlrelease/workflows"
	"github.com/mlrelease/mlrelease/workflows/roundtest"
)

const taskQueue = "mlrelease-scale"

// scalePlan: two canary steps (25% and 50%), a rate judge against the champion and a
// p99 threshold; no staging, shadow, approval or watch, so a release's duration is
// its two bakes.
const scalePlan = `
model: %s
canary:
  steps:
    - {weight: 25, bake: %s}
    - {weight: 50, bake: %s}
analysis:
  interval: %s
  metrics:
    - name: error-rate
      judge: rate
      query: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}",code=~"5.."})
      totalQuery: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"})
      tolerance: 0.1
      minSamples: 5
    - name: p99-latency-seconds
      query: histogram_quantile(0.99, sum(rate(mlrelease_gateway_request_duration_seconds{model="{{.Model}}",variant="{{.Variant}}",mode="primary"}[1m])))
      max: 0.5
approval:
  required: false
  unsigned: true
  onTimeout: rollback
`

type settings struct {
	ns             []int
	server         string
	interval, step time.Duration
	workers        int
	kill           time.Duration
	rate           float64
	pragmas        []string
}

func fromEnv(b *testing.B) settings {
	s := settings{ns: []int{10, 100}, server: "dev", interval: 10 * time.Second, step: 30 * time.Second, workers: 1, rate: 1}
	if v := os.Getenv("MLRELEASE_SCALE_N"); v != "" {
		s.ns = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("MLRELEASE_SCALE_N: %q is not a list of positive numbers", v)
			}
			s.ns = append(s.ns, n)
		}
	}
	if v := os.Getenv("MLRELEASE_SCALE_SERVER"); v != "" {
		if v != "dev" && v != "cluster" {
			b.Fatalf("MLRELEASE_SCALE_SERVER: %q is neither dev nor cluster", v)
		}
		s.server = v
	}
	dur := func(name string, into *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				b.Fatalf("%s: %q is not a positive duration", name, v)
			}
			*into = d
		}
	}
	dur("MLRELEASE_SCALE_INTERVAL", &s.interval)
	dur("MLRELEASE_SCALE_STEP", &s.step)
	dur("MLRELEASE_SCALE_KILL", &s.kill)
	if v := os.Getenv("MLRELEASE_SCALE_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("MLRELEASE_SCALE_WORKERS: %q is not a positive number", v)
		}
		s.workers = n
	}
	if v := os.Getenv("MLRELEASE_SCALE_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			b.Fatalf("MLRELEASE_SCALE_RATE: %q is not a positive number", v)
		}
		s.rate = r
	}
	if v := os.Getenv("MLRELEASE_SCALE_PRAGMAS"); v != "" {
		s.pragmas = strings.Split(v, ",")
	}
	return s
}

func BenchmarkScale(b *testing.B) {
	s := fromEnv(b)
	root, err := stack.Root()
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "worker")
	build := exec.Command("go", "build", "-o", bin, "./worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the worker: %v\n%s", err, out)
	}
	for _, n := range s.ns {
		b.Run(fmt.Sprintf("%s/N=%d", s.server, n), func(b *testing.B) {
			for range b.N {
				r := run(b, s, root, bin, n)
				r.report(b, s)
			}
		})
	}
}

// outcome is one release's end.
type outcome struct {
	model       string
	bad         bool
	outcome     string
	reason      string
	last        string // the last round's verdicts
	err         error
	started     time.Time // WorkflowExecutionStarted
	firstTask   time.Duration
	closed      time.Time
	events      int
	transitions int64
	rounds      int
}

type result struct {
	n          int
	nominal    time.Duration // the plan's bakes
	startCalls time.Duration // to start all N
	releases   []outcome
	usage      map[string]usage
	span       time.Duration // first start to last close
	killedAt   time.Duration
	notStarted int // without a workflow task 30 s after their start
	unfinished int
	// roundEvents is the history events an analysis round costs, over every
	// hand-over; roundEventsMax the costliest hand-over's.
	roundEvents, roundEventsMax float64
}

func run(b *testing.B, s settings, root, workerBin string, n int) result {
	nominal := 2 * s.step
	deadline := 3*nominal + time.Duration(n)*200*time.Millisecond + 10*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	dir := b.TempDir()
	procs := &stack.Stack{LogDir: filepath.Join(dir, "logs")}
	defer procs.Stop()
	smp := newSampler()
	res := result{n: n, nominal: nominal}
	defer func() {
		if res.usage == nil {
			smp.result()
		}
	}()

	// Temporal.
	var hostport string
	switch s.server {
	case "dev":
		cli, err := devserver.Find(root, "temporal")
		if err != nil {
			b.Fatalf("%v: run `make temporal`", err)
		}
		port, uiPort := freePort(b), freePort(b)
		args := stack.TemporalArgs(filepath.Join(dir, "temporal.db"), port, uiPort)
		for _, p := range s.pragmas {
			args = append(args, "--sqlite-pragma", p)
		}
		p, err := procs.Start("temporal", cli, args)
		if err != nil {
			b.Fatal(err)
		}
		smp.watch("server", p.PID())
		hostport = fmt.Sprintf("127.0.0.1:%d", port)
	case "cluster":
		c, err := cluster.Start(ctx, filepath.Join(dir, "cluster"))
		if err != nil {
			b.Fatalf("start the Temporal cluster: %v", err)
		}
		defer c.Stop()
		for name, pid := range c.PIDs() {
			smp.watch(name, pid)
		}
		hostport = c.HostPort
	}
	tc := dial(b, ctx, hostport)
	defer tc.Close()

	// Model servers: a good one, and a broken one (every answer a 500). The bench
	// measures scale; bench/analysis measures what the judges detect.
	good, bad := serve(b, stub(0)), serve(b, stub(1))

	// The gateway, its routes and Prometheus scraping it.
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Options{Registerer: reg, Gatherer: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	gwURL := serve(b, gw.Handler())
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	if _, err := procs.StartPrometheus(ctx, root, filepath.Join(dir, "prometheus"), promAddr, 5*time.Second,
		map[string]string{"gateway": strings.TrimPrefix(gwURL, "http://")}); err != nil {
		b.Fatal(err)
	}

	// The models: champion 1 on the good server; candidate 2 on the bad one for
	// every tenth model.
	models := make([]string, n)
	regPath := filepath.Join(dir, "registry.db")
	rg, err := registry.OpenSQLite(regPath)
	if err != nil {
		b.Fatal(err)
	}
	defer rg.Close()
	gwc := deploy.NewGateway(gwURL, "", nil)
	for i := range models {
		models[i] = fmt.Sprintf("m%04d", i)
		cand := good
		if isBad(i) {
			cand = bad
		}
		for _, v := range []registry.Version{{Model: models[i], Version: "1", Endpoint: good}, {Model: models[i], Version: "2", Endpoint: cand}} {
			if err := rg.RegisterVersion(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
		if err := rg.SetAlias(ctx, models[i], registry.AliasChampion, "1"); err != nil {
			b.Fatal(err)
		}
		if _, err := gwc.Apply(ctx, deploy.Traffic{Model: models[i], Champion: deploy.Backend{Version: "1", URL: good}}); err != nil {
			b.Fatal(err)
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loadWG sync.WaitGroup
	loadWG.Go(func() { drive(loadCtx, gwURL, models, s.rate*float64(n)) })
	defer func() { stopLoad(); loadWG.Wait() }()

	// The workers.
	env := []string{"MLRELEASE_TASK_QUEUE=" + taskQueue, "MLRELEASE_REGISTRY_PATH=" + regPath, "MLRELEASE_GATEWAY_URL=" + gwURL,
		"MLRELEASE_PROMETHEUS_URL=http://" + promAddr, "TEMPORAL_ADDRESS=" + hostport, "TEMPORAL_NAMESPACE=default"}
	// startWorker starts a worker process and waits until it serves /metrics: by
	// then it has registered the search attributes releases set.
	startWorker := func(name string) (*stack.Proc, error) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
		p, err := procs.Start(name, workerBin, nil, append(slices.Clone(env), "MLRELEASE_WORKER_LISTEN="+addr)...)
		if err != nil {
			return nil, err
		}
		smp.watch(name, p.PID())
		return p, stack.WaitReady(ctx, p, "http://"+addr+"/metrics")
	}
	workers := make([]*stack.Proc, s.workers)
	for i := range workers {
		if workers[i], err = startWorker(fmt.Sprintf("worker%d", i+1)); err != nil {
			b.Fatal(err)
		}
	}

	// The releases, all at once (16 starts in flight).
	var ps []*plan.Plan
	for _, m := range models {
		p, err := plan.Parse(fmt.Appendf(nil, scalePlan, m, s.step, s.step, s.interval))
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, p)
	}
	began := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var startErr atomic.Pointer[error]
	for _, p := range ps {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for attempt := 1; ; attempt++ {
				_, err := release.Start(ctx, tc, rg, release.StartOptions{Plan: p, Version: "2", StartedBy: "bench", TaskQueue: taskQueue})
				// A cluster's frontends learn of new search attributes within seconds.
				if err != nil && strings.Contains(err.Error(), "no mapping defined for search attribute") && attempt < 60 {
					time.Sleep(time.Second)
					continue
				}
				if err != nil {
					startErr.Store(&err)
				}
				break
			}
		})
	}
	wg.Wait()
	if e := startErr.Load(); e != nil {
		b.Fatalf("start: %v", *e)
	}
	res.startCalls = time.Since(began)

	// A worker killed mid-run, started again 10 s later.
	if s.kill > 0 {
		wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.kill - time.Since(began)):
			}
			workers[0].Kill()
			res.killedAt = time.Since(began)
			b.Logf("killed worker1 (kill -9) at %s", res.killedAt.Round(time.Second))
			time.Sleep(10 * time.Second)
			if _, err := startWorker("worker1"); err != nil {
				b.Error(err)
			}
		})
	}

	// Every release's end.
	res.releases = make([]outcome, n)
	for i, m := range models {
		wg.Go(func() {
			o := &res.releases[i]
			o.model, o.bad = m, isBad(i)
			var r workflows.Result
			o.err = tc.GetWorkflow(ctx, workflows.WorkflowID(m), "").Get(ctx, &r)
			o.outcome, o.reason = r.Outcome, r.Reason
			if rs := r.Status.Analyses; len(rs) > 0 {
				for _, ms := range rs[len(rs)-1].Measurements {
					o.last += fmt.Sprintf("%s %s %s; ", ms.Metric, ms.Verdict, ms.Message)
				}
			}
			if i == 0 && os.Getenv("MLRELEASE_SCALE_TIMELINE") != "" {
				timeline(b, ctx, tc, m)
			}
		})
	}
	wg.Wait()
	res.usage = smp.result()

	// Their histories: the start, the first workflow task, the close, events and
	// state transitions over every run.
	hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer hcancel()
	var first, last time.Time
	costs := &roundCosts{}
	for i := range res.releases {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			measure(hctx, tc, &res.releases[i], costs)
		})
	}
	wg.Wait()
	for _, o := range res.releases {
		if o.closed.IsZero() {
			res.unfinished++
			continue
		}
		if first.IsZero() || o.started.Before(first) {
			first = o.started
		}
		if o.closed.After(last) {
			last = o.closed
		}
		if o.firstTask > 30*time.Second {
			res.notStarted++
		}
	}
	res.span = last.Sub(first)
	res.roundEvents, res.roundEventsMax = costs.mean(), costs.worst
	return res
}

// measure reads a release's runs: its start, first workflow task, close, events,
// state transitions, and what its analysis rounds cost (roundtest.Costs).
func measure(ctx context.Context, c client.Client, o *outcome, costs *roundCosts) {
	runID := ""
	for {
		d, err := c.DescribeWorkflowExecution(ctx, workflows.WorkflowID(o.model), runID)
		if err != nil {
			o.err = errors.Join(o.err, err)
			return
		}
		info := d.GetWorkflowExecutionInfo()
		o.transitions += info.GetStateTransitionCount()
		if runID == "" && info.GetCloseTime() != nil {
			o.closed = info.GetCloseTime().AsTime()
		}
		it := c.GetWorkflowHistory(ctx, workflows.WorkflowID(o.model), info.GetExecution().GetRunId(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		var events []*historypb.HistoryEvent
		continued := ""
		var started time.Time
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				o.err = errors.Join(o.err, err)
				return
			}
			events = append(events, ev)
			switch ev.GetEventType() {
			case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
				started = ev.GetEventTime().AsTime()
				continued = ev.GetWorkflowExecutionStartedEventAttributes().GetContinuedExecutionRunId()
				if continued == "" {
					o.started = started
				}
			case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
				if o.firstTask == 0 && continued == "" {
					o.firstTask = ev.GetEventTime().AsTime().Sub(started)
				}
			}
		}
		for _, hc := range roundtest.Costs(events) {
			o.rounds += hc.Rounds
			costs.add(hc)
		}
		o.events += len(events)
		if continued == "" {
			return
		}
		runID = continued
	}
}

// timeline writes a release's history to the file MLRELEASE_SCALE_TIMELINE names:
// each event's time from the start, its type and, for an activity, its name.
func timeline(b *testing.B, ctx context.Context, c client.Client, model string) {
	it := c.GetWorkflowHistory(ctx, workflows.WorkflowID(model), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var start time.Time
	var out strings.Builder
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return
		}
		if start.IsZero() {
			start = ev.GetEventTime().AsTime()
		}
		name := ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		fmt.Fprintf(&out, "%8.3f %s %s\n", ev.GetEventTime().AsTime().Sub(start).Seconds(), strings.TrimPrefix(ev.GetEventType().String(), "EVENT_TYPE_"), name)
	}
	path := os.Getenv("MLRELEASE_SCALE_TIMELINE")
	if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
		b.Errorf("timeline: %v", err)
	}
}

func (r result) report(b *testing.B, s settings) {
	right, wrong := 0, 0
	var walls []time.Duration
	over := 0
	var events, transitions int64
	var firstTasks []time.Duration
	for _, o := range r.releases {
		want := workflows.OutcomePromoted
		if o.bad {
			want = workflows.OutcomeRolledBack
		}
		if o.outcome == want {
			right++
		} else {
			wrong++
			b.Errorf("%s: outcome %q, want %q (%s; last round: %s; err %v)", o.model, o.outcome, want, o.reason, o.last, o.err)
		}
		events += int64(o.events)
		transitions += o.transitions
		firstTasks = append(firstTasks, o.firstTask)
		if !o.bad && !o.closed.IsZero() {
			w := o.closed.Sub(o.started)
			walls = append(walls, w)
			if w > r.nominal+r.nominal/10 {
				over++
			}
		}
	}
	slices.Sort(walls)
	slices.Sort(firstTasks)
	q := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		return ds[min(len(ds)-1, int(math.Ceil(p*float64(len(ds))))-1)]
	}
	mean := func(ds []time.Duration) time.Duration {
		var t time.Duration
		for _, d := range ds {
			t += d
		}
		return t / time.Duration(max(1, len(ds)))
	}
	n := float64(len(r.releases))
	tps := float64(transitions) / r.span.Seconds()
	b.ReportMetric(float64(right)/n, "right/release")
	b.ReportMetric(mean(walls).Seconds(), "wall-s")
	b.ReportMetric(tps, "transitions/s")
	b.ReportMetric(float64(events)/n, "events/release")
	b.ReportMetric(float64(transitions)/n, "transitions/release")
	b.ReportMetric(r.roundEvents, "events/round")
	b.ReportMetric(q(firstTasks, 1).Seconds(), "max-first-task-s")
	var lines bytes.Buffer
	fmt.Fprintf(&lines, "\n%s N=%d, plan %s (interval %s), %d worker(s), rate %.0f req/s\n", s.server, r.n, r.nominal, s.interval, s.workers, s.rate*n)
	fmt.Fprintf(&lines, "  outcomes right %d/%d, unfinished %d; %d starts took %s\n", right, len(r.releases), r.unfinished, r.n, r.startCalls.Round(time.Millisecond))
	fmt.Fprintf(&lines, "  wall of promoted: mean %s, p50 %s, p95 %s, max %s (plan %s); over plan+10%%: %d of %d\n",
		mean(walls).Round(100*time.Millisecond), q(walls, .5).Round(100*time.Millisecond), q(walls, .95).Round(100*time.Millisecond),
		q(walls, 1).Round(100*time.Millisecond), r.nominal, over, len(walls))
	fmt.Fprintf(&lines, "  first workflow task after start: p50 %s, p99 %s, max %s; over 30 s: %d\n",
		q(firstTasks, .5).Round(time.Millisecond), q(firstTasks, .99).Round(time.Millisecond), q(firstTasks, 1).Round(time.Millisecond), r.notStarted)
	fmt.Fprintf(&lines, "  per release: %.0f events, %.0f state transitions; per analysis round %.2f events (costliest hand-over %.2f); %.1f transitions/s over %s\n",
		float64(events)/n, float64(transitions)/n, r.roundEvents, r.roundEventsMax, tps, r.span.Round(time.Second))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.usage {
			if !yield(k) {
				return
			}
		}
	}) {
		u := r.usage[name]
		fmt.Fprintf(&lines, "  %s: CPU %s (%.0f%% of a core over the span), peak RSS %d MiB\n", name, u.CPU.Round(100*time.Millisecond),
			100*u.CPU.Seconds()/r.span.Seconds(), u.RSS>>20)
	}
	if r.killedAt > 0 {
		fmt.Fprintf(&lines, "  worker1 killed (kill -9) at %s, started again 10 s later\n", r.killedAt.Round(time.Second))
	}
	b.Log(lines.String())
	fmt.Print(lines.String())
	if r.unfinished > 0 {
		b.Errorf("%d releases unfinished", r.unfinished)
	}
}

// roundCosts adds up what analysis rounds cost: history events and rounds over every
// hand-over, and the costliest hand-over's events a round.
type roundCosts struct {
	mu             sync.Mutex
	events, rounds int
	worst          float64
}

func (r *roundCosts) add(c roundtest.Cost) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events, r.rounds = r.events+c.Events, r.rounds+c.Rounds
	if c.Rounds > 0 {
		r.worst = max(r.worst, float64(c.Events)/float64(c.Rounds))
	}
}

func (r *roundCosts) mean() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rounds == 0 {
		return 0
	}
	return float64(r.events) / float64(r.rounds)
}

func isBad(i int) bool { return i%10 == 9 }

// stub is a model server answering at once; every failEvery-th answer is a 500 (0:
// never).
func stub(failEvery int) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if failEvery > 0 && n.Add(1)%int64(failEvery) == 0 {
			http.Error(w, `{"error":"injected"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"predictions":[1]}`))
	})
}

// drive sends rate requests a second in all, round robin over the models, each on
// its due time (an open loop: a slow answer does not slow the rest).
func drive(ctx context.Context, base string, models []string, rate float64) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	body := []byte(`{"inputs":[[7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4]]}`)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/models/"+models[i%int64(len(models))]+"/invocations", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
}

func serve(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func freePort(b *testing.B) int {
	addr, err := stack.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return port
}

// dial connects to the Temporal frontend once it answers.
func dial(b *testing.B, ctx context.Context, hostport string) client.Client {
	for {
		c, err := client.DialContext(ctx, client.Options{HostPort: hostport, Namespace: "default",
			Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
		if err == nil {
			if _, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: "default"}); err == nil {
				return c
			}
			c.Close()
		}
		select {
		case <-ctx.Done():
			b.Fatalf("Temporal at %s did not answer: %v", hostport, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
