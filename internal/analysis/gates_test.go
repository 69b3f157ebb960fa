package analysis_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func report(n, correct, errors int, p99 time.Duration) analysis.StagingReport {
	r := analysis.StagingReport{Requests: n + errors, N: n, Correct: correct, Errors: errors, P99: p99}
	if n > 0 {
		r.Accuracy = float64(correct) / float64(n)
	}
	return r
}

func staging(change func(*plan.Staging)) plan.Staging {
	drop := 0.02
	s := plan.Staging{Dataset: "eval.csv", MinAccuracy: 0.9, MaxAccuracyDrop: &drop, MaxP99Latency: plan.Duration(100 * time.Millisecond)}
	if change != nil {
		change(&s)
	}
	return s
}

func verdicts(gates []analysis.Gate) map[string]analysis.Verdict {
	out := map[string]analysis.Verdict{}
	for _, g := range gates {
		out[g.Name] = g.Verdict
	}
	return out
}

func TestJudgeStagingAllPass(t *testing.T) {
	gates := analysis.JudgeStaging(staging(nil), report(100, 94, 0, 30*time.Millisecond), report(100, 95, 0, 40*time.Millisecond))
	assert.Equal(t, map[string]analysis.Verdict{
		"errors": analysis.Pass, "accuracy": analysis.Pass, "accuracy_vs_champion": analysis.Pass, "p99_latency": analysis.Pass,
	}, verdicts(gates))
	require.Len(t, gates, 4)
	acc := gates[1]
	assert.Equal(t, "accuracy", acc.Name)
	assert.InDelta(t, 0.95, acc.Value, 1e-9)
	assert.Equal(t, 0.9, acc.Limit)
	assert.Contains(t, acc.Message, "candidate n=100, champion n=100", "evidence names the sample sizes")
	lat := gates[3]
	assert.InDelta(t, 0.04, lat.Value, 1e-9)
	assert.InDelta(t, 0.1, lat.Limit, 1e-9)
}

func TestJudgeStagingFailures(t *testing.T) {
	champion := report(100, 95, 0, 30*time.Millisecond)
	for _, tc := range []struct {
		name      string
		s         plan.Staging
		candidate analysis.StagingReport
		failed    []string
		message   string
	}{
		{"accuracy below min", staging(nil), report(100, 85, 0, 30*time.Millisecond),
			[]string{"accuracy", "accuracy_vs_champion"}, "candidate accuracy 0.8500, min 0.9000"},
		{"drop against champion", staging(nil), report(100, 92, 0, 30*time.Millisecond),
			[]string{"accuracy_vs_champion"}, "change -0.0300, allowed drop 0.0200"},
		{"errors", staging(nil), report(100, 95, 1, 30*time.Millisecond),
			[]string{"errors"}, "candidate error rate 0.0099 (1 of 101 requests), max 0.0000"},
		{"latency", staging(nil), report(100, 95, 0, 150*time.Millisecond),
			[]string{"p99_latency"}, "candidate p99 latency 150ms (champion 30ms), max 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gates := analysis.JudgeStaging(tc.s, champion, tc.candidate)
			var failed []string
			var messages []string
			for _, g := range gates {
				if g.Verdict != analysis.Pass {
					failed = append(failed, g.Name)
					messages = append(messages, g.Message)
				}
			}
			assert.Equal(t, tc.failed, failed)
			require.NotEmpty(t, messages)
			assert.Contains(t, messages[0], tc.message)
		})
	}
}

func TestJudgeStagingNoLatencyGateWhenUnset(t *testing.T) {
	gates := analysis.JudgeStaging(staging(func(s *plan.Staging) { s.MaxP99Latency = 0 }),
		report(10, 10, 0, time.Second), report(10, 10, 0, time.Hour))
	assert.NotContains(t, verdicts(gates), "p99_latency")
	for _, g := range gates {
		assert.Equal(t, analysis.Pass, g.Verdict, g.Name)
	}
}

func TestJudgeStagingDefaultDrop(t *testing.T) {
	s := staging(func(s *plan.Staging) { s.MaxAccuracyDrop = nil; s.MinAccuracy = 0 })
	assert.Equal(t, analysis.Pass, verdicts(analysis.JudgeStaging(s, report(100, 95, 0, 0), report(100, 93, 0, 0)))["accuracy_vs_champion"])
	assert.Equal(t, analysis.Fail, verdicts(analysis.JudgeStaging(s, report(100, 95, 0, 0), report(100, 92, 0, 0)))["accuracy_vs_champion"])
}

func TestJudgeStagingNoAnswersIsNeverAPass(t *testing.T) {
	for name, tc := range map[string]struct{ champion, candidate analysis.StagingReport }{
		"candidate answered nothing": {report(100, 95, 0, 0), report(0, 0, 100, 0)},
		"champion answered nothing":  {report(0, 0, 100, 0), report(100, 95, 0, 0)},
		"empty evaluation":           {report(0, 0, 0, 0), report(0, 0, 0, 0)},
	} {
		t.Run(name, func(t *testing.T) {
			s := staging(func(s *plan.Staging) { s.MinAccuracy = 0 })
			gates := analysis.JudgeStaging(s, tc.champion, tc.candidate)
			require.Len(t, gates, 1)
			assert.Equal(t, "accuracy", gates[0].Name)
			assert.Equal(t, analysis.Fail, gates[0].Verdict)
			assert.Contains(t, gates[0].Message, "no answered evaluation rows")
		})
	}
}

func TestJudgeStagingPerClassAndRelativeLatency(t *testing.T) {
	drop := 0.05
	s := plan.Staging{MinAccuracy: 0.5, MaxAccuracyDrop: &drop, MaxClassAccuracyDrop: &drop, MaxP99LatencyIncrease: 0.2}
	champion := analysis.StagingReport{Requests: 200, N: 200, Correct: 180, Accuracy: 0.9, P99: 100 * time.Millisecond,
		PerClass: map[string]analysis.ClassAccuracy{"a": {N: 100, Correct: 95}, "b": {N: 100, Correct: 85}}}
	candidate := analysis.StagingReport{Requests: 200, N: 200, Correct: 180, Accuracy: 0.9, P99: 130 * time.Millisecond,
		PerClass: map[string]analysis.ClassAccuracy{"a": {N: 100, Correct: 99}, "b": {N: 100, Correct: 81}}}
	byName := map[string]analysis.Gate{}
	for _, g := range analysis.JudgeStaging(s, champion, candidate) {
		byName[g.Name] = g
	}
	assert.Equal(t, analysis.Pass, byName["accuracy_vs_champion"].Verdict, "overall accuracy is the same")
	assert.Equal(t, analysis.Pass, byName["class_accuracy_vs_champion:a"].Verdict)
	assert.Equal(t, analysis.Pass, byName["class_accuracy_vs_champion:b"].Verdict, "0.81 vs 0.85: within 0.05")
	assert.Equal(t, analysis.Fail, byName["p99_latency_vs_champion"].Verdict, "30% slower, 20% allowed")
	assert.InDelta(t, 0.3, byName["p99_latency_vs_champion"].Value, 1e-9)

	candidate.PerClass["b"] = analysis.ClassAccuracy{N: 100, Correct: 70}
	for _, g := range analysis.JudgeStaging(s, champion, candidate) {
		if g.Name == "class_accuracy_vs_champion:b" {
			assert.Equal(t, analysis.Fail, g.Verdict, g.Message)
			assert.Contains(t, g.Message, "class b: candidate accuracy 0.7000 (n=100) vs champion 0.8500")
		}
	}
}
