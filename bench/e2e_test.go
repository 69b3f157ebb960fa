// Package bench measures mlrelease against its performance targets. Figures and the
// commands that produced them are in bench/README.md.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/internal/stack"
	"github.com/mlrelease/mlrelease/workflows"
)

// benchPlan is a canary of two short steps analysed every second; %s is its
// error-rate metric.
const benchPlan = `
model: wine
canary:
  steps:
    - {weight: 20, bake: 4s}
    - {weight: 50, bake: 4s}
analysis:
  interval: 1s
  metrics:
    - name: error-rate
%s`

// thresholdMetric is an Argo-style threshold on the error rate over a 3s window.
const thresholdMetric = `      query: |
        (sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}",code=~"5.."}[3s])) or vector(0))
        / sum(rate(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"}[3s]))
      max: 0.05
      maxHolds: 10
`

// rateMetric is the sequential rate judge on the same counters: an e-value against
// the champion instead of a fixed threshold.
const rateMetric = `      judge: rate
      query: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}",code=~"5.."})
      totalQuery: sum(mlrelease_gateway_requests_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"})
      tolerance: 0.1
      minSamples: 20
      maxHolds: 10
`

var local *stack.Local

func TestMain(m *testing.M) {
	code := m.Run()
	if local != nil {
		local.Close()
	}
	os.Exit(code)
}

// setup starts the stack once for all benchmarks and parses the plan with metric.
func setup(b *testing.B, metric string) (*stack.Local, *plan.Plan) {
	b.Helper()
	if local == nil {
		root, err := filepath.Abs("..")
		if err != nil {
			b.Fatal(err)
		}
		dir, err := os.MkdirTemp("", "mlrelease-bench-")
		if err != nil {
			b.Fatal(err)
		}
		if local, err = stack.StartLocal(context.Background(), stack.LocalOptions{Root: root, Dir: dir, ScrapeInterval: 500 * time.Millisecond, LoadRate: 80}); err != nil {
			b.Fatal(err)
		}
	}
	p, err := plan.Parse([]byte(fmt.Sprintf(benchPlan, metric)))
	if err != nil {
		b.Fatal(err)
	}
	return local, p
}

// runRelease resets the champion to 1, releases version and returns its history.
func runRelease(b *testing.B, l *stack.Local, p *plan.Plan, version string) (workflows.Result, []*historypb.HistoryEvent) {
	ctx := context.Background()
	if err := l.Registry.SetAlias(ctx, stack.DemoModel, registry.AliasChampion, "1"); err != nil {
		b.Fatal(err)
	}
	if _, err := l.Gateway.Apply(ctx, deploy.Traffic{Model: stack.DemoModel, Champion: deploy.Backend{Version: "1", URL: l.Endpoints["1"]}}); err != nil {
		b.Fatal(err)
	}
	run, err := release.Start(ctx, l.Temporal, l.Registry, release.StartOptions{Plan: p, Version: version, StartedBy: "bench", TaskQueue: l.TaskQueue})
	if err != nil {
		b.Fatal(err)
	}
	var res workflows.Result
	if err := run.Get(ctx, &res); err != nil {
		b.Fatal(err)
	}
	return res, history(b, l.Temporal, run.GetID(), run.GetRunID())
}

func history(b *testing.B, c client.Client, id, runID string) []*historypb.HistoryEvent {
	it := c.GetWorkflowHistory(context.Background(), id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		events = append(events, e)
	}
	return events
}

// trafficApplied lists, in order, each SetTraffic the release completed: the traffic
// and when the gateway had applied it (the activity's completion, or the local
// activity's marker), with the event before its scheduling (what the step's decision
// followed).
type applied struct {
	traffic  deploy.Traffic
	at       time.Time
	decided  time.Time
	decision string
}

func trafficApplied(b *testing.B, events []*historypb.HistoryEvent) []applied {
	byID := map[int64]*historypb.HistoryEvent{}
	var out []applied
	for i, e := range events {
		byID[e.GetEventId()] = e
		// A traffic change on the gateway is a local activity (workflows' local-io):
		// its marker holds the applied traffic and comes with the workflow task that
		// ran it; before, an activity scheduled by one task and completed later.
		var t deploy.Traffic
		scheduled := e.GetEventId()
		if done := e.GetActivityTaskCompletedEventAttributes(); done != nil {
			sched := byID[done.GetScheduledEventId()].GetActivityTaskScheduledEventAttributes()
			if sched.GetActivityType().GetName() != "SetTraffic" {
				continue
			}
			if err := json.Unmarshal(sched.GetInput().GetPayloads()[0].GetData(), &t); err != nil {
				b.Fatal(err)
			}
			scheduled = done.GetScheduledEventId()
		} else if m := e.GetMarkerRecordedEventAttributes(); m.GetMarkerName() == "LocalActivity" {
			var data struct{ ActivityType string }
			if err := json.Unmarshal(m.GetDetails()["data"].GetPayloads()[0].GetData(), &data); err != nil {
				b.Fatal(err)
			}
			if data.ActivityType != "SetTraffic" {
				continue
			}
			var a deploy.Applied
			if err := json.Unmarshal(m.GetDetails()["result"].GetPayloads()[0].GetData(), &a); err != nil {
				b.Fatal(err)
			}
			t = a.Traffic
		} else {
			continue
		}
		// The decision followed the last activity or timer that completed before the
		// workflow task that scheduled this SetTraffic.
		var decided time.Time
		var decision string
		for j := i - 1; j >= 0; j-- {
			ej := events[j]
			if ej.GetEventId() >= scheduled {
				continue
			}
			if ej.GetEventType() == enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED || ej.GetEventType() == enums.EVENT_TYPE_TIMER_FIRED {
				decided, decision = ej.GetEventTime().AsTime(), ej.GetEventType().String()
				break
			}
		}
		out = append(out, applied{traffic: t, at: e.GetEventTime().AsTime(), decided: decided, decision: decision})
	}
	return out
}

// BenchmarkBadCanaryToZero is the time from a bad candidate's first live traffic (its
// first errors) to its traffic back at 0, analysis every 1s, Prometheus scraping
// every 0.5s: with a threshold on a 3s rate window, and with the sequential rate judge.
func BenchmarkBadCanaryToZero(b *testing.B) {
	for _, c := range []struct{ name, metric string }{{"threshold", thresholdMetric}, {"rate", rateMetric}} {
		b.Run(c.name, func(b *testing.B) {
			l, p := setup(b, c.metric)
			var total time.Duration
			for b.Loop() {
				res, events := runRelease(b, l, p, "3")
				if res.Outcome != workflows.OutcomeRolledBack {
					b.Fatalf("bad candidate was %s: %s", res.Outcome, res.Reason)
				}
				var first, zero time.Time
				for _, a := range trafficApplied(b, events) {
					if a.traffic.CandidateWeight > 0 && first.IsZero() {
						first = a.at
					}
					if !first.IsZero() && a.traffic.Candidate == nil {
						zero = a.at
					}
				}
				if first.IsZero() || zero.IsZero() {
					b.Fatalf("no canary traffic or no rollback in the history (reason %s)", res.Reason)
				}
				total += zero.Sub(first)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s_to_zero")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkStepOverhead is the orchestration overhead of a canary step: from the event
// the step's decision followed (the last analysis of the previous bake) to the
// gateway having applied the new weight.
func BenchmarkStepOverhead(b *testing.B) {
	l, p := setup(b, thresholdMetric)
	var total time.Duration
	steps := 0
	for b.Loop() {
		res, events := runRelease(b, l, p, "2")
		if res.Outcome != workflows.OutcomePromoted {
			b.Fatalf("good candidate was %s: %s", res.Outcome, res.Reason)
		}
		for _, a := range trafficApplied(b, events) {
			if a.traffic.CandidateWeight > 0 && a.traffic.CandidateWeight < 100 && !a.decided.IsZero() {
				total += a.at.Sub(a.decided)
				steps++
			}
		}
	}
	if steps == 0 {
		b.Fatal("no canary steps in the histories")
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(steps), "ms/step")
	b.ReportMetric(0, "ns/op")
	fmt.Fprintf(os.Stderr, "measured %d canary steps\n", steps)
}
