package analysis_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func f(v float64) *float64 { return &v }

// metric is a threshold metric with the plan's defaults applied.
func metric(name string, min, max *float64, change func(*plan.Metric)) plan.Metric {
	m := plan.Metric{Name: name, Judge: plan.JudgeThreshold, Min: min, Max: max,
		ConsecutiveErrorLimit: intp(4), NoData: plan.NoDataHold, MaxHolds: intp(3)}
	if change != nil {
		change(&m)
	}
	return m
}

func TestJudgeThreshold(t *testing.T) {
	bounded := metric("accuracy", f(0.8), f(0.99), nil)
	maxOnly := metric("errors", nil, f(0.05), nil)
	minOnly := metric("accuracy", f(0.8), nil, nil)
	failNoData := metric("errors", nil, f(0.05), func(m *plan.Metric) { m.NoData = plan.NoDataFail })
	for _, tc := range []struct {
		name    string
		m       plan.Metric
		v       *float64
		verdict analysis.Verdict
		message string
	}{
		{"inside", bounded, f(0.9), analysis.Pass, "0.9 is within [0.8, 0.99]"},
		{"at min", bounded, f(0.8), analysis.Pass, "0.8 is within [0.8, 0.99]"},
		{"at max", bounded, f(0.99), analysis.Pass, "0.99 is within [0.8, 0.99]"},
		{"below min", bounded, f(0.79), analysis.Fail, "0.79 is below min 0.8"},
		{"above max", bounded, f(0.995), analysis.Fail, "0.995 is above max 0.99"},
		{"max only", maxOnly, f(0), analysis.Pass, "0 is within [-inf, 0.05]"},
		{"max only above", maxOnly, f(0.2), analysis.Fail, "0.2 is above max 0.05"},
		{"min only", minOnly, f(5), analysis.Pass, "5 is within [0.8, +inf]"},
		{"+Inf is an analysis error", maxOnly, f(math.Inf(1)), analysis.Error, "the query returned +Inf, not a finite number"},
		{"-Inf is an analysis error", minOnly, f(math.Inf(-1)), analysis.Error, "the query returned -Inf, not a finite number"},
		{"nil is no data: hold", maxOnly, nil, analysis.Hold, "no data (policy: hold)"},
		{"NaN is no data: hold", maxOnly, f(math.NaN()), analysis.Hold, "no data (policy: hold)"},
		{"nil is no data: fail", failNoData, nil, analysis.Fail, "no data (policy: fail)"},
		{"NaN is no data: fail", failNoData, f(math.NaN()), analysis.Fail, "no data (policy: fail)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, msg := analysis.JudgeThreshold(tc.m, tc.v)
			assert.Equal(t, tc.verdict, v)
			assert.Equal(t, tc.message, msg)
		})
	}
}

func round(verdicts map[string]analysis.Verdict) []analysis.Measurement {
	var out []analysis.Measurement
	for name, v := range verdicts {
		out = append(out, analysis.Measurement{Metric: name, Verdict: v, Message: string(v) + " message"})
	}
	return out
}

func TestTallyFailureLimit(t *testing.T) {
	tally := analysis.NewTally([]plan.Metric{metric("errors", nil, f(0.05), func(m *plan.Metric) { m.FailureLimit = 2 })})
	assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Fail})))
	assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Pass})))
	assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Fail})), "failures need not be consecutive; 2 are tolerated")
	reason := tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Fail}))
	assert.Equal(t, "metric errors failed 3 time(s), limit 2: fail message", reason)
	assert.Equal(t, 3, tally.Metrics[0].Failures)
	assert.Equal(t, 4, tally.Metrics[0].Measurements)
}

func TestTallyFailsAtFirstFailureByDefault(t *testing.T) {
	tally := analysis.NewTally([]plan.Metric{metric("errors", nil, f(0.05), nil), metric("latency", nil, f(0.5), nil)})
	reason := tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Pass, "latency": analysis.Fail}))
	assert.Equal(t, "metric latency failed 1 time(s), limit 0: fail message", reason)
}

func TestTallyConsecutiveErrorLimit(t *testing.T) {
	tally := analysis.NewTally([]plan.Metric{metric("errors", nil, f(0.05), func(m *plan.Metric) { m.ConsecutiveErrorLimit = intp(2) })})
	e := map[string]analysis.Verdict{"errors": analysis.Error}
	assert.Empty(t, tally.Add(round(e)))
	assert.Empty(t, tally.Add(round(e)))
	assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"errors": analysis.Hold})), "any measurement resets the run of errors")
	assert.Empty(t, tally.Add(round(e)))
	assert.Empty(t, tally.Add(round(e)))
	assert.Zero(t, tally.Metrics[0].Failures, "provider errors are not metric failures")
	reason := tally.Add(round(e))
	assert.Equal(t, "metric errors: 3 provider errors in a row, limit 2: error message", reason)
}

func TestTallyIgnoresUnknownMetrics(t *testing.T) {
	tally := analysis.NewTally([]plan.Metric{metric("errors", nil, f(0.05), nil)})
	assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"other": analysis.Fail, "errors": analysis.Pass})))
	v, _ := tally.Conclude()
	assert.Equal(t, analysis.Pass, v)
}

func TestTallyConclude(t *testing.T) {
	t.Run("pass when every latest measurement passed", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), nil), metric("b", nil, f(1), nil)})
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Hold, "b": analysis.Error}))
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Pass, "b": analysis.Pass}))
		v, reason := tally.Conclude()
		assert.Equal(t, analysis.Pass, v)
		assert.Equal(t, "every metric passed its latest measurement", reason)
	})

	t.Run("a metric never measured is not a pass", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), nil), metric("b", nil, f(1), func(m *plan.Metric) { m.MaxHolds = intp(1) })})
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Pass}))
		v, reason := tally.Conclude()
		assert.Equal(t, analysis.Hold, v)
		assert.Contains(t, reason, "metric b has no passing measurement yet (last: none)")
		v, reason = tally.Conclude()
		assert.Equal(t, analysis.Fail, v)
		assert.Contains(t, reason, "metric b has no passing measurement after extending the stage 1 interval(s) (last: none)")
	})

	t.Run("hold up to MaxHolds, then fail", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), nil)})
		hold := map[string]analysis.Verdict{"a": analysis.Hold}
		tally.Add(round(hold))
		for i := 1; i <= 3; i++ {
			v, reason := tally.Conclude()
			require.Equal(t, analysis.Hold, v, "extension %d", i)
			assert.Contains(t, reason, "(last: hold); extending")
			assert.Equal(t, i, tally.Metrics[0].Holds)
			assert.Empty(t, tally.Add(round(hold)), "holds are never failures in Add")
		}
		v, reason := tally.Conclude()
		assert.Equal(t, analysis.Fail, v, "no data is never a pass")
		assert.Equal(t, "metric a has no passing measurement after extending the stage 3 interval(s) (last: hold)", reason)
	})

	t.Run("data arriving during an extension passes", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), nil)})
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Hold}))
		v, _ := tally.Conclude()
		require.Equal(t, analysis.Hold, v)
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Pass}))
		v, _ = tally.Conclude()
		assert.Equal(t, analysis.Pass, v)
	})

	t.Run("a tolerated failure as the latest measurement is not a pass", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), func(m *plan.Metric) { m.FailureLimit = 5; m.MaxHolds = intp(1) })})
		assert.Empty(t, tally.Add(round(map[string]analysis.Verdict{"a": analysis.Fail})))
		v, _ := tally.Conclude()
		assert.Equal(t, analysis.Hold, v)
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Fail}))
		v, reason := tally.Conclude()
		assert.Equal(t, analysis.Fail, v)
		assert.Contains(t, reason, "(last: fail)")
	})

	t.Run("only metrics without a pass use up holds", func(t *testing.T) {
		tally := analysis.NewTally([]plan.Metric{metric("a", nil, f(1), nil), metric("b", nil, f(1), nil)})
		tally.Add(round(map[string]analysis.Verdict{"a": analysis.Pass, "b": analysis.Error}))
		v, _ := tally.Conclude()
		require.Equal(t, analysis.Hold, v)
		assert.Zero(t, tally.Metrics[0].Holds)
		assert.Equal(t, 1, tally.Metrics[1].Holds)
	})
}

func intp(i int) *int { return &i }

// A threshold judge with a sample query: a window below the minimum sample is no
// data, whatever its value (one slow request among fifteen is the p99).
func TestJudgeThresholdSample(t *testing.T) {
	m := metric("p99", nil, f(0.25), func(m *plan.Metric) { m.SampleQuery = "n"; m.MinSamples = intp(100) })
	v, msg := analysis.JudgeThresholdSample(m, f(0.45), f(15))
	assert.Equal(t, analysis.Hold, v)
	assert.Equal(t, "no data: 15 of the 100 samples the window needs (policy: hold)", msg)
	v, msg = analysis.JudgeThresholdSample(m, f(0.45), f(150))
	assert.Equal(t, analysis.Fail, v)
	assert.Equal(t, "0.45 is above max 0.25 (150 samples)", msg)
	v, _ = analysis.JudgeThresholdSample(m, f(0.2), f(150))
	assert.Equal(t, analysis.Pass, v)
	v, _ = analysis.JudgeThresholdSample(m, f(0.2), nil)
	assert.Equal(t, analysis.Hold, v, "no sample is no data")
	v, _ = analysis.JudgeThresholdSample(m, f(0.2), f(math.Inf(1)))
	assert.Equal(t, analysis.Error, v)
}
