package analysis_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

func evalSet(t *testing.T) *scoring.Dataset {
	t.Helper()
	ds, err := scoring.LoadCSV("../../examples/demo/data/eval.csv")
	require.NoError(t, err)
	return ds
}

func weights(t *testing.T, version string) *model.Weights {
	t.Helper()
	w, err := model.Load("../../examples/demo/models/" + version + ".json")
	require.NoError(t, err)
	return w
}

// modelServer runs a demo model server in-process and returns its base URL.
func modelServer(t *testing.T, opts model.ServerOptions) string {
	t.Helper()
	h, err := model.NewServer(opts)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// expected computes, offline, what an evaluation of w on ds must report.
func expected(t *testing.T, w *model.Weights, ds *scoring.Dataset) (int, map[string]analysis.ClassAccuracy) {
	correct := 0
	per := map[string]analysis.ClassAccuracy{}
	for i, row := range ds.Rows {
		pc := per[ds.Labels[i]]
		pc.N++
		if w.Predict(row) == ds.Labels[i] {
			pc.Correct++
			correct++
		}
		per[ds.Labels[i]] = pc
	}
	return correct, per
}

// The staging evaluation (internal/scoring's) against the demo model server: the
// champion's tally is exactly what its weights predict, and a degraded candidate's
// is clearly worse. What the report's fields mean is checked against real answers.
func TestStagingEvaluationOfTheDemoModel(t *testing.T) {
	ds := evalSet(t)
	v1 := weights(t, "v1")
	champion := modelServer(t, model.ServerOptions{Weights: v1})
	candidate := modelServer(t, model.ServerOptions{Weights: v1, Degrade: 0.5, Seed: 1})
	c := &scoring.Client{}
	tally := func(url string) scoring.Tally {
		p, err := scoring.Evaluate(context.Background(), c, url, ds, scoring.Progress{}, scoring.EvaluateOptions{Concurrency: 2})
		require.NoError(t, err)
		return p.Tally
	}
	perClass := func(tl scoring.Tally) map[string]analysis.ClassAccuracy {
		out := map[string]analysis.ClassAccuracy{}
		for k, v := range tl.PerClass {
			out[k] = analysis.ClassAccuracy{N: v[0], Correct: v[1]}
		}
		return out
	}

	good := tally(champion)
	correct, per := expected(t, v1, ds)
	assert.Equal(t, len(ds.Rows), good.Requests)
	assert.Equal(t, len(ds.Rows), good.N)
	assert.Equal(t, correct, good.Correct)
	assert.Zero(t, good.Errors)
	assert.Equal(t, per, perClass(good))
	assert.Positive(t, good.Latency.Quantile(0.5))

	bad := tally(candidate)
	correct, per = expected(t, v1.Degrade(0.5, 1), ds)
	assert.Equal(t, correct, bad.Correct)
	assert.Equal(t, per, perClass(bad))
	assert.LessOrEqual(t, float64(bad.Correct)/float64(bad.N), float64(good.Correct)/float64(good.N)-0.2, "the degraded candidate is clearly worse")
}

func TestStagingReportJSON(t *testing.T) {
	r := analysis.StagingReport{
		Requests: 3, N: 2, Correct: 1, Accuracy: 0.5, Errors: 1,
		ErrorsByStatus: map[string]int{"503": 1}, P50: time.Millisecond, P99: 2 * time.Millisecond,
		PerClass: map[string]analysis.ClassAccuracy{"0": {N: 2, Correct: 1}},
	}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	assert.JSONEq(t, `{"requests":3,"n":2,"correct":1,"accuracy":0.5,"errors":1,"errorsByStatus":{"503":1},
		"p50LatencyNs":1000000,"p99LatencyNs":2000000,"perClass":{"0":{"n":2,"correct":1}}}`, string(b))
	var back analysis.StagingReport
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, r, back)
}
