package plan_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/plan"
)

const fullPlan = `
model: iris
candidate: "2"
staging:
  dataset: data/eval.csv
  minAccuracy: 0.9
  maxP99Latency: 250ms
shadow:
  share: 50
  duration: 10m
canary:
  steps:
    - weight: 10
      bake: 5m
    - weight: 50
      bake: 10m
analysis:
  interval: 30s
  metrics:
    - name: error-rate
      query: sum(rate(errors_total{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"}[{{.Interval}}]))
      max: 0.05
    - name: accuracy
      query: online_accuracy{model="{{.Model}}"}
      min: 0.8
      noData: fail
      failureLimit: 2
      maxHolds: 5
approval:
  required: true
  approvers: [alice, bob]
postPromotion:
  watch: 15m
`

func TestParseFullPlanAppliesDefaults(t *testing.T) {
	p, err := plan.Parse([]byte(fullPlan))
	require.NoError(t, err)

	assert.Equal(t, "iris", p.Model)
	assert.Equal(t, "2", p.Candidate)
	assert.Equal(t, 0.9, p.Staging.MinAccuracy)
	require.NotNil(t, p.Staging.MaxAccuracyDrop)
	assert.Equal(t, 0.02, *p.Staging.MaxAccuracyDrop)
	assert.Equal(t, 250*time.Millisecond, p.Staging.MaxP99Latency.D())
	assert.Equal(t, 50, p.Shadow.Share)
	assert.Equal(t, 10*time.Minute, p.Shadow.Duration.D())
	assert.Equal(t, []plan.Step{{Weight: 10, Bake: plan.Duration(5 * time.Minute)}, {Weight: 50, Bake: plan.Duration(10 * time.Minute)}}, p.Canary.Steps)
	assert.Equal(t, 30*time.Second, p.Analysis.Interval.D())

	require.Len(t, p.Analysis.Metrics, 2)
	er := p.Analysis.Metrics[0]
	assert.Equal(t, plan.JudgeThreshold, er.Judge)
	assert.Equal(t, plan.NoDataHold, er.NoData)
	assert.Equal(t, 3, *er.MaxHolds)
	assert.Equal(t, 4, *er.ConsecutiveErrorLimit)
	assert.Zero(t, er.FailureLimit)
	assert.Nil(t, er.Min)
	require.NotNil(t, er.Max)
	assert.Equal(t, 0.05, *er.Max)
	acc := p.Analysis.Metrics[1]
	assert.Equal(t, plan.NoDataFail, acc.NoData, "an explicit policy is kept")
	assert.Equal(t, 5, *acc.MaxHolds)
	assert.Equal(t, 2, acc.FailureLimit)

	assert.Equal(t, p.Analysis.Metrics, p.ShadowMetrics(), "shadow defaults to the analysis metrics")
	assert.Equal(t, p.Analysis.Metrics, p.WatchMetrics(), "the watch defaults to the analysis metrics")
	assert.Equal(t, 15*time.Minute, p.PostPromotion.Watch.D())

	assert.True(t, p.Approval.Required)
	assert.Equal(t, 24*time.Hour, p.Approval.Timeout.D(), "a required approval waits a day")
	assert.Equal(t, plan.OnTimeoutRollback, p.Approval.OnTimeout)
	assert.True(t, p.Approval.Waits())
	assert.True(t, p.Approval.Allows("alice"))
	assert.False(t, p.Approval.Allows("mallory"))
	assert.False(t, p.Approval.Allows(""))
}

func TestParseMinimalPlanDefaults(t *testing.T) {
	p, err := plan.Parse([]byte(`
model: iris
analysis:
  metrics:
    - {name: errors, query: 'errors{model="{{.Model}}"}', max: 0.1}
`))
	require.NoError(t, err)
	assert.Equal(t, time.Minute, p.Analysis.Interval.D())
	assert.Equal(t, []plan.Step{{Weight: 10, Bake: plan.Duration(5 * time.Minute)}, {Weight: 50, Bake: plan.Duration(5 * time.Minute)}}, p.Canary.Steps)
	assert.Zero(t, p.Shadow.Share, "no shadow soak unless asked")
	assert.False(t, p.Approval.Required)
	assert.Zero(t, p.Approval.Timeout)
	assert.Equal(t, plan.OnTimeoutPromote, p.Approval.OnTimeout, "an optional approval is a veto window")
	assert.False(t, p.Approval.Waits())
	assert.True(t, p.Approval.Allows("anyone"), "no approvers listed and none required: anyone")
	assert.False(t, p.Approval.Allows(""))
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		// edit is applied to fullPlan: old -> new.
		old, new string
		// want are substrings of the error: the field and the value.
		want []string
	}{
		{"weights not rising", "weight: 50", "weight: 10",
			[]string{"canary.steps[1].weight", "10 does not rise above the previous step's 10"}},
		{"weight 0", "weight: 10", "weight: 0",
			[]string{"canary.steps[0].weight", "0 is outside 1..100"}},
		{"weight 101", "weight: 50", "weight: 101",
			[]string{"canary.steps[1].weight", "101 is outside 1..100"}},
		{"zero bake", "bake: 5m", "bake: 0s",
			[]string{"canary.steps[0].bake", "0s must be positive"}},
		{"negative bake", "bake: 10m", "bake: -1m",
			[]string{"canary.steps[1].bake", "-1m0s must be positive"}},
		{"unknown judge", "      max: 0.05", "      max: 0.05\n      judge: kayenta",
			[]string{"analysis.metrics[0].judge", `"kayenta" is not a known judge`}},
		{"threshold without bounds", "      max: 0.05\n", "\n",
			[]string{"analysis.metrics[0].max", "a threshold judge needs min, max or both"}},
		{"min above max", "      max: 0.05", "      max: 0.05\n      min: 0.5",
			[]string{"analysis.metrics[0].min", "0.5 is above max 0.05"}},
		{"approvers missing when required", "  approvers: [alice, bob]\n", "",
			[]string{"approval.approvers", "approval.required is true"}},
		{"required with onTimeout promote", "  approvers: [alice, bob]", "  approvers: [alice, bob]\n  onTimeout: promote",
			[]string{"approval.onTimeout", `"promote" is not allowed when approval.required is true`}},
		{"unknown onTimeout", "  approvers: [alice, bob]", "  approvers: [alice, bob]\n  onTimeout: wait",
			[]string{"approval.onTimeout", `"wait"`}},
		{"unknown field", "  share: 50", "  share: 50\n  sahre: 10",
			[]string{`unknown field "sahre" in shadow`}},
		{"bad duration", "duration: 10m", "duration: ten minutes",
			[]string{`"ten minutes"`, "want a duration"}},
		{"bad query field", "{{.Interval}}", "{{.Window}}",
			[]string{"analysis.metrics[0].query", "Window"}},
		{"bad query syntax", "{{.Interval}}", "{{.Interval",
			[]string{"analysis.metrics[0].query", "template"}},
		{"unknown no-data policy", "noData: fail", "noData: skip",
			[]string{"analysis.metrics[1].noData", `"skip" is not one of`}},
		{"no-data pass without its flag", "noData: fail", "noData: pass",
			[]string{"analysis.metrics[1].noData", `"pass" needs allowNoDataPass: true`}},
		{"no-data flag without pass", "noData: fail", "noData: fail\n      allowNoDataPass: true",
			[]string{"analysis.metrics[1].allowNoDataPass", `only confirms noData "pass"`}},
		{"rate judge without total", "      max: 0.05\n", "      judge: rate\n",
			[]string{"analysis.metrics[0].totalQuery", "a rate judge needs the count of trials"}},
		{"rate judge with bounds", "      max: 0.05\n", "      max: 0.05\n      judge: rate\n      totalQuery: sum(x)\n",
			[]string{"analysis.metrics[0].max", "min and max are for the threshold judge"}},
		{"latency quantile 1", "      max: 0.05\n", "      judge: latency\n      quantiles: [0.5, 1]\n",
			[]string{"analysis.metrics[0].quantiles[1]", "1 is outside (0, 1)"}},
		{"drift JS above 1", "      max: 0.05\n", "      judge: drift\n      maxJS: 2\n",
			[]string{"analysis.metrics[0].maxJS", "2 is outside (0, 1]"}},
		{"alpha 1", "      max: 0.05\n", "      judge: rate\n      totalQuery: sum(x)\n      alpha: 1\n",
			[]string{"analysis.metrics[0].alpha", "1 is outside (0, 1)"}},
		{"negative tolerance", "      max: 0.05\n", "      judge: rate\n      totalQuery: sum(x)\n      tolerance: -0.1\n",
			[]string{"analysis.metrics[0].tolerance", "-0.1 must not be negative"}},
		{"negative min samples", "      max: 0.05\n", "      judge: rate\n      totalQuery: sum(x)\n      minSamples: -1\n",
			[]string{"analysis.metrics[0].minSamples", "-1 must not be negative"}},
		{"negative inconclusive limit", "      max: 0.05\n", "      max: 0.05\n      inconclusiveLimit: -2\n",
			[]string{"analysis.metrics[0].inconclusiveLimit", "-2 must not be negative"}},
		{"duplicate metric", "name: accuracy", "name: error-rate",
			[]string{"analysis.metrics[1].name", `"error-rate" is used twice`}},
		{"bad model name", "model: iris", "model: iris flowers",
			[]string{"model", `"iris flowers"`}},
		{"shadow share", "share: 50", "share: 150",
			[]string{"shadow.share", "150 is outside 0..100"}},
		{"shadow without duration", "  duration: 10m\n", "",
			[]string{"shadow.duration", "must be positive when shadow.share is 50"}},
		{"accuracy outside 0..1", "minAccuracy: 0.9", "minAccuracy: 90",
			[]string{"staging.minAccuracy", "90 is outside 0..1"}},
		{"negative failure limit", "failureLimit: 2", "failureLimit: -1",
			[]string{"analysis.metrics[1].failureLimit", "-1 must not be negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(fullPlan, tc.old, tc.new, 1)
			require.NotEqual(t, fullPlan, src, "the edit must apply")
			_, err := plan.Parse([]byte(src))
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	p, err := plan.Parse([]byte(fullPlan))
	require.NoError(t, err)
	p.Canary.Steps[0].Weight = 0
	p.Canary.Steps[1].Bake = 0
	p.Approval.Approvers = nil
	err = p.Validate()
	require.Error(t, err)
	for _, w := range []string{"canary.steps[0].weight", "canary.steps[1].bake", "approval.approvers"} {
		assert.Contains(t, err.Error(), w)
	}
}

func TestParseRejectsMetriclessPlan(t *testing.T) {
	_, err := plan.Parse([]byte("model: iris\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "analysis.metrics")
}

func TestRender(t *testing.T) {
	q, err := plan.Render(`rate(x{model="{{.Model}}",variant="{{.Variant}}",version="{{.Version}}"}[{{.Interval}}])`,
		plan.QueryVars{Model: "iris", Variant: "candidate", Version: "2", Interval: "90s"})
	require.NoError(t, err)
	assert.Equal(t, `rate(x{model="iris",variant="candidate",version="2"}[90s])`, q)

	_, err = plan.Render("{{.Nope}}", plan.QueryVars{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Nope")

	_, err = plan.Render("{{", plan.QueryVars{})
	require.Error(t, err)
}

func TestPromDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour:               "1h",
		3 * time.Hour:           "3h",
		5 * time.Minute:         "5m",
		90 * time.Minute:        "90m",
		90 * time.Second:        "90s",
		30 * time.Second:        "30s",
		1500 * time.Millisecond: "1500ms",
	} {
		assert.Equal(t, want, plan.PromDuration(d), "%s", d)
	}
}

func TestDurationJSONRoundTrip(t *testing.T) {
	d := plan.Duration(90 * time.Second)
	b, err := d.MarshalJSON()
	require.NoError(t, err)
	assert.JSONEq(t, `"1m30s"`, string(b))
	var back plan.Duration
	require.NoError(t, back.UnmarshalJSON(b))
	assert.Equal(t, d, back)
	require.Error(t, back.UnmarshalJSON([]byte(`90`)))
}

func TestExplicitZeroLimitsStayZero(t *testing.T) {
	p, err := plan.Parse([]byte(`
model: m
analysis:
  metrics:
    - name: errors
      query: up
      max: 1
      maxHolds: 0
      consecutiveErrorLimit: 0
`))
	require.NoError(t, err)
	m := p.Analysis.Metrics[0]
	assert.Equal(t, 0, m.HoldLimit(), "maxHolds: 0 never extends a stage")
	assert.Equal(t, 0, m.ErrorLimit(), "consecutiveErrorLimit: 0 fails at the first provider error")
}

func TestDemoPlanSelectsJudgesPerMetric(t *testing.T) {
	p, err := plan.Load("../../examples/plans/demo.yaml")
	require.NoError(t, err)
	judges := map[string]string{}
	for _, m := range p.Analysis.Metrics {
		judges[m.Name] = m.Judge
	}
	assert.Equal(t, plan.JudgeRate, judges["error-rate"])
	assert.Equal(t, plan.JudgeLatency, judges["latency"], "against the champion, not a fixed p99 bound")
	assert.Equal(t, plan.JudgeDrift, judges["prediction-drift"])
	// Three statistical judges in the shadow soak and three in the canary, which
	// the watch goes on with: six shares of the 5% budget.
	var sum float64
	for _, s := range p.Budget() {
		assert.InDelta(t, 0.05/6, s.Alpha, 1e-12, "%+v", s)
		sum += s.Alpha
	}
	assert.Len(t, p.Budget(), 6)
	assert.InDelta(t, 0.05, sum, 1e-12)
	assert.Equal(t, 5, *p.PostPromotion.Holdout)
}

func TestParseCountingJudges(t *testing.T) {
	p, err := plan.Parse([]byte(`
model: iris
analysis:
  metrics:
    - name: errors
      judge: rate
      query: sum(mlrelease_gateway_requests_total{variant="{{.Variant}}",code=~"5.."})
      totalQuery: sum(mlrelease_gateway_requests_total{variant="{{.Variant}}"})
      tolerance: 0.1
    - name: latency
      judge: latency
      query: sum by (le) (mlrelease_gateway_request_duration_seconds_bucket{variant="{{.Variant}}"})
      tolerance: 1.5
    - name: drift
      judge: drift
      query: sum by (le) (mlrelease_gateway_prediction_score_bucket{variant="{{.Variant}}"})
      maxPSI: 0.1
    - name: accuracy
      judge: rate
      query: sum(mlrelease_gateway_feedback_total{variant="{{.Variant}}",outcome="incorrect"})
      totalQuery: sum(mlrelease_gateway_feedback_total{variant="{{.Variant}}"})
      noData: pass
      allowNoDataPass: true
      minSamples: 1000
`))
	require.NoError(t, err)
	ms := p.Analysis.Metrics
	assert.True(t, ms[0].Sequential())
	assert.Equal(t, 0.05/4, ms[0].AlphaOrDefault(), "four statistical judges in the canary (default steps) share the 5% budget")
	assert.Equal(t, 100, ms[0].MinSampleSize())
	assert.Len(t, ms[0].Queries(), 2)
	assert.Equal(t, []float64{0.5, 0.99}, ms[1].QuantilesOrDefault())
	assert.Equal(t, 0.1, ms[2].PSILimit())
	assert.Equal(t, 0.1, ms[2].JSLimit())
	assert.Equal(t, plan.NoDataPass, ms[3].NoData)
	assert.Equal(t, 1000, ms[3].MinSampleSize())
}
