package analysis_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func TestBudgetSpentAsStagesJudge(t *testing.T) {
	p, err := plan.Parse([]byte(`
model: m
shadow: {share: 50, duration: 1m}
canary: {steps: [{weight: 10, bake: 1m}]}
analysis:
  alpha: 0.04
  metrics:
    - {name: errors, judge: rate, query: e, totalQuery: t}
    - {name: latency, judge: latency, query: q}
postPromotion: {watch: 1m}
`))
	require.NoError(t, err)
	b := analysis.NewBudget(p)
	assert.Len(t, b.Judges, 4)
	assert.Equal(t, 0.0, b.Spent)

	pv := 0.3
	judged := func(metric string, n float64) analysis.Measurement {
		return analysis.Measurement{Metric: metric, Verdict: analysis.Pass, Evidence: &analysis.Evidence{CandidateN: n, PValue: &pv}}
	}
	b.Record("shadow", []analysis.Measurement{judged("errors", 10), judged("latency", 0)})
	assert.InDelta(t, 0.01, b.Spent, 1e-15, "only the judge that saw data")
	b.Record("canary", []analysis.Measurement{judged("errors", 10), judged("latency", 10)})
	b.Record("shadow", []analysis.Measurement{judged("latency", 5)})
	assert.InDelta(t, 0.04, b.Spent, 1e-15)
	// The watch goes on with the canary's tests: nothing more is spent.
	pv = 0.02
	b.Record("watching", []analysis.Measurement{judged("errors", 50)})
	assert.InDelta(t, 0.04, b.Spent, 1e-15)
	assert.Equal(t, 0.02, b.Judges[2].PValue)
	assert.Equal(t, "4% of 4% spent (4 of 4 tests judged)", b.Summary())
	assert.Empty(t, (*analysis.Budget)(nil).Summary())
}
