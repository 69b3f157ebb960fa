package analysis_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
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

func TestEvaluateStagingChampionAndCandidate(t *testing.T) {
	ds := evalSet(t)
	v1 := weights(t, "v1")
	champion := modelServer(t, model.ServerOptions{Weights: v1})
	candidate := modelServer(t, model.ServerOptions{Weights: v1, Degrade: 0.5, Seed: 1})
	c := &scoring.Client{}

	good, err := analysis.EvaluateStaging(context.Background(), c, champion, ds, analysis.StagingOptions{})
	require.NoError(t, err)
	correct, per := expected(t, v1, ds)
	assert.Equal(t, len(ds.Rows), good.Requests)
	assert.Equal(t, len(ds.Rows), good.N)
	assert.Equal(t, correct, good.Correct)
	assert.InDelta(t, float64(correct)/float64(len(ds.Rows)), good.Accuracy, 1e-12)
	assert.GreaterOrEqual(t, good.Accuracy, 0.95)
	assert.Zero(t, good.Errors)
	assert.Equal(t, per, good.PerClass)
	assert.Positive(t, good.P50)
	assert.GreaterOrEqual(t, good.P99, good.P50)

	bad, err := analysis.EvaluateStaging(context.Background(), c, candidate, ds, analysis.StagingOptions{Concurrency: 2})
	require.NoError(t, err)
	correct, per = expected(t, v1.Degrade(0.5, 1), ds)
	assert.Equal(t, correct, bad.Correct)
	assert.Equal(t, per, bad.PerClass)
	assert.LessOrEqual(t, bad.Accuracy, good.Accuracy-0.2, "the degraded candidate is clearly worse")
}

func TestEvaluateStagingCountsErrorsApart(t *testing.T) {
	ds := evalSet(t)
	v2 := weights(t, "v2")
	url := modelServer(t, model.ServerOptions{Weights: v2, ErrorRate: 0.3, Seed: 3})
	r, err := analysis.EvaluateStaging(context.Background(), &scoring.Client{}, url, ds, analysis.StagingOptions{})
	require.NoError(t, err)
	assert.Equal(t, len(ds.Rows), r.Requests)
	assert.Positive(t, r.Errors)
	assert.Equal(t, r.Requests, r.N+r.Errors)
	assert.Equal(t, map[string]int{"503": r.Errors}, r.ErrorsByStatus)
	assert.InDelta(t, float64(r.Errors)/float64(r.Requests), r.ErrorRate(), 1e-12)
	// failed rows are not wrong answers: accuracy on the answered rows stays high
	assert.GreaterOrEqual(t, r.Accuracy, 0.95)
	n := 0
	for _, pc := range r.PerClass {
		n += pc.N
	}
	assert.Equal(t, r.N, n)
}

func TestEvaluateStagingFailsWhenEveryRequestFails(t *testing.T) {
	url := modelServer(t, model.ServerOptions{Weights: weights(t, "v1"), ErrorRate: 1})
	r, err := analysis.EvaluateStaging(context.Background(), &scoring.Client{}, url, evalSet(t), analysis.StagingOptions{})
	require.ErrorIs(t, err, analysis.ErrAllRequestsFailed)
	assert.Equal(t, 71, r.Errors)
	assert.Zero(t, r.N)

	// nothing listening: transport errors
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL
	srv.Close()
	r, err = analysis.EvaluateStaging(context.Background(), &scoring.Client{}, dead, evalSet(t), analysis.StagingOptions{})
	require.ErrorIs(t, err, analysis.ErrAllRequestsFailed)
	assert.Equal(t, map[string]int{"transport": 71}, r.ErrorsByStatus)
}

func TestEvaluateStagingLatencyAndConcurrency(t *testing.T) {
	const latency = 5 * time.Millisecond
	h, err := model.NewServer(model.ServerOptions{Weights: weights(t, "v1"), Latency: latency})
	require.NoError(t, err)
	var mu sync.Mutex
	inFlight, most := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		h.ServeHTTP(w, r)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer srv.Close()
	var calls []int
	r, err := analysis.EvaluateStaging(context.Background(), &scoring.Client{}, srv.URL, evalSet(t), analysis.StagingOptions{
		Concurrency: 3,
		Progress:    func(done, total int) { calls = append(calls, done); assert.Equal(t, 71, total) },
	})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, r.P50, latency)
	assert.GreaterOrEqual(t, r.P99, r.P50)
	assert.LessOrEqual(t, most, 3)
	assert.Len(t, calls, 71)
	assert.Equal(t, 71, calls[70])
}

func TestEvaluateStagingTimeoutIsAnError(t *testing.T) {
	url := modelServer(t, model.ServerOptions{Weights: weights(t, "v1"), Latency: time.Minute})
	r, err := analysis.EvaluateStaging(context.Background(), &scoring.Client{}, url, evalSet(t), analysis.StagingOptions{
		Concurrency: 8, RequestTimeout: 20 * time.Millisecond,
	})
	require.ErrorIs(t, err, analysis.ErrAllRequestsFailed)
	assert.Equal(t, map[string]int{"timeout": 71}, r.ErrorsByStatus)
}

func TestEvaluateStagingHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := model.NewServer(model.ServerOptions{Weights: weights(t, "v1")})
	require.NoError(t, err)
	var mu sync.Mutex
	seen := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		if seen == 10 {
			cancel()
		}
		mu.Unlock()
		if ctx.Err() != nil {
			_, _ = io.ReadAll(r.Body) // after the body, net/http watches for hang-ups
			// Hang until the evaluator gives up on the request; the bound only keeps
			// a regression from hanging the whole suite.
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
				t.Error("the evaluator did not abandon a request after cancellation")
			}
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	r, err := analysis.EvaluateStaging(ctx, &scoring.Client{}, srv.URL, evalSet(t), analysis.StagingOptions{Concurrency: 2})
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, r.Requests, 71)
	assert.Zero(t, r.Errors, "requests cut short by cancellation are not server errors")
	assert.Equal(t, r.N, r.Requests)
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
