package plan_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/plan"
)

const budgetPlan = `
model: m
shadow: {share: 100, duration: 1m}
canary:
  steps: [{weight: 10, bake: 1m}, {weight: 50, bake: 1m}]
analysis:
  alpha: ALPHA
  metrics:
    - {name: errors, judge: rate, query: e, totalQuery: t, tolerance: 0.1}
    - {name: latency, judge: latency, query: q, tolerance: 0.1EXTRA}
    - {name: p99, query: x, max: 1}
postPromotion:
  watch: 10mWATCH
`

func parseBudget(t *testing.T, alpha, extra, watch string) (*plan.Plan, error) {
	t.Helper()
	r := strings.NewReplacer("ALPHA", alpha, "EXTRA", extra, "WATCH", watch)
	return plan.Parse([]byte(r.Replace(budgetPlan)))
}

// One budget per release: the statistical judges of shadow and canary (which the
// watch goes on with) share analysis.alpha equally; a watch metric of its own is a
// test of its own; the threshold judge spends nothing.
func TestBudgetSharedOverStages(t *testing.T) {
	p, err := parseBudget(t, "0.04", "", "")
	require.NoError(t, err)
	assert.Equal(t, []plan.BudgetShare{
		{Stage: "shadow", Metric: "errors", Alpha: 0.01}, {Stage: "shadow", Metric: "latency", Alpha: 0.01},
		{Stage: "canary", Metric: "errors", Alpha: 0.01}, {Stage: "canary", Metric: "latency", Alpha: 0.01},
	}, p.Budget())
	assert.Equal(t, 5, *p.PostPromotion.Holdout, "the watch keeps 5% on the old champion by default")

	// Defaulting twice changes nothing.
	again := *p
	again.Default()
	require.NoError(t, again.Validate())
	assert.Equal(t, p.Budget(), again.Budget())

	// A watch metric the canary does not judge gets its own share.
	p, err = parseBudget(t, "0.05", "", "\n  metrics:\n    - {name: errors, judge: rate, query: e, totalQuery: t}\n    - {name: drift, judge: drift, query: d}")
	require.NoError(t, err)
	assert.Len(t, p.Budget(), 5)
	assert.Equal(t, plan.BudgetShare{Stage: "watching", Metric: "drift", Alpha: 0.01}, p.Budget()[4])

	// Default budget 5%.
	p, err = parseBudget(t, "0", "", "")
	require.NoError(t, err)
	assert.InDelta(t, 0.0125, p.Budget()[0].Alpha, 1e-15)
}

func TestBudgetExplicitShares(t *testing.T) {
	// The latency judge asks for 1% in each stage; the rate judge shares the rest.
	p, err := parseBudget(t, "0.05", ", alpha: 0.01", "")
	require.NoError(t, err)
	for _, s := range p.Budget() {
		want := map[string]float64{"latency": 0.01, "errors": 0.015}[s.Metric]
		assert.InDelta(t, want, s.Alpha, 1e-15, "%+v", s)
	}
	// Shares that add up to more than the budget are refused, each named.
	_, err = parseBudget(t, "0.05", ", alpha: 0.03", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "analysis.alpha: the statistical judges' alphas (shadow errors unset, shadow latency 0.03, canary errors unset, canary latency 0.03) add up to more than the release's error budget 0.05")
	_, err = parseBudget(t, "1.5", "", "")
	assert.ErrorContains(t, err, "analysis.alpha: 1.5 is outside (0, 1)")
}

func TestWatchHoldout(t *testing.T) {
	_, err := parseBudget(t, "0.05", "", "\n  holdout: 0")
	assert.ErrorContains(t, err, "postPromotion.holdout: 0 leaves no champion to compare with during the watch")
	_, err = parseBudget(t, "0.05", "", "\n  holdout: 60")
	assert.ErrorContains(t, err, "postPromotion.holdout: 60 is more than the 50% the last canary step (weight 50) leaves the champion")
	p, err := parseBudget(t, "0.05", "", "\n  holdout: 20")
	require.NoError(t, err)
	assert.Equal(t, 20, p.HoldoutOrDefault())
}

// A tolerance finer than the histogram's buckets is refused, naming both: the
// gateway's classic buckets are 2.5x apart, its native ones 9%.
func TestLatencyToleranceNeedsBuckets(t *testing.T) {
	src := func(query, extra string) string {
		return "model: m\nanalysis:\n  metrics:\n    - {name: latency, judge: latency, query: '" + query + "', tolerance: 0.1" + extra + "}\n"
	}
	_, err := plan.Parse([]byte(src(`sum by (le) (d_bucket{v="{{.Variant}}"})`, "")))
	assert.ErrorContains(t, err, "analysis.metrics[0].tolerance: 0.1 is finer than the histogram's buckets can resolve (bucketGrowth 2.5: neighbouring bounds up to 150% apart); use a tolerance of at least 1.5, or a finer histogram")
	_, err = plan.Parse([]byte(src(`sum(d{v="{{.Variant}}"})`, "")))
	assert.NoError(t, err, "native buckets are 9% apart")
	_, err = plan.Parse([]byte(src(`sum by (le) (d_bucket{v="{{.Variant}}"})`, ", bucketGrowth: 1.05")))
	assert.NoError(t, err, "fine classic buckets, declared")
	_, err = plan.Parse([]byte(src(`sum(d{v="{{.Variant}}"})`, ", bucketGrowth: 1.2")))
	assert.ErrorContains(t, err, "tolerance: 0.1 is finer than the histogram's buckets can resolve (bucketGrowth 1.2")
}

func TestSampleQueryOnlyForThresholds(t *testing.T) {
	p, err := plan.Parse([]byte("model: m\nanalysis:\n  metrics:\n    - {name: p99, query: q, max: 1, sampleQuery: 'sum(increase(n[{{.Interval}}]))', minSamples: 200}\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"q", "sum(increase(n[{{.Interval}}]))"}, p.Analysis.Metrics[0].Queries())
	_, err = plan.Parse([]byte("model: m\nanalysis:\n  metrics:\n    - {name: e, judge: rate, query: q, totalQuery: t, sampleQuery: n}\n"))
	assert.ErrorContains(t, err, "analysis.metrics[0].sampleQuery: is only for the threshold judge")
}
