package model

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

func newServer(t *testing.T, opts ServerOptions) *httptest.Server {
	t.Helper()
	if opts.Weights == nil {
		opts.Weights = load(t, "v1")
	}
	h, err := NewServer(opts)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestPingAndVersion(t *testing.T) {
	srv := newServer(t, ServerOptions{Version: "7", ErrorRate: 1, Degrade: 0.25, Latency: 3 * time.Millisecond})
	for _, path := range []string{"/ping", "/health"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	resp, err := http.Get(srv.URL + "/version")
	require.NoError(t, err)
	defer resp.Body.Close()
	var v VersionInfo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	assert.Equal(t, VersionInfo{
		Version: "7", ModelVersion: "v1", Classes: []string{"0", "1", "2"}, Columns: v.Columns,
		ErrorRate: 1, LatencyMS: 3, Degrade: 0.25,
	}, v)
	assert.Len(t, v.Columns, 13)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/invocations", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestInvocationsShape(t *testing.T) {
	w := load(t, "v1")
	srv := newServer(t, ServerOptions{Weights: w})
	ds := evalSet(t)

	// dataframe_split with all eval rows, through the scoring client
	labels, err := (&scoring.Client{}).Predict(context.Background(), srv.URL, ds.Columns, ds.Rows)
	require.NoError(t, err)
	require.Len(t, labels, len(ds.Rows))
	for i, row := range ds.Rows {
		assert.Equal(t, w.Predict(row), labels[i])
	}

	// the raw answer carries numbers, as MLflow's sklearn flavour does
	rows, _ := json.Marshal(ds.Rows[:2])
	cols, _ := json.Marshal(ds.Columns)
	code, body := post(t, srv.URL, `{"dataframe_split":{"columns":`+string(cols)+`,"data":`+string(rows)+`}}`)
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"predictions":[`+w.Predict(ds.Rows[0])+`,`+w.Predict(ds.Rows[1])+`]}`, body)

	// instances in the model's column order give the same answer
	code, body = post(t, srv.URL, `{"instances":`+string(rows)+`}`)
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"predictions":[`+w.Predict(ds.Rows[0])+`,`+w.Predict(ds.Rows[1])+`]}`, body)

	// columns in another order are matched by name
	rev := slices.Clone(ds.Columns)
	slices.Reverse(rev)
	revRow := slices.Clone(ds.Rows[0])
	slices.Reverse(revRow)
	labels, err = (&scoring.Client{}).Predict(context.Background(), srv.URL, rev, [][]float64{revRow})
	require.NoError(t, err)
	assert.Equal(t, []string{w.Predict(ds.Rows[0])}, labels)
}

func TestInvocationsBadRequests(t *testing.T) {
	srv := newServer(t, ServerOptions{})
	for name, body := range map[string]string{
		"not json":        `{`,
		"empty":           `{}`,
		"missing column":  `{"dataframe_split":{"columns":["alcohol"],"data":[[13]]}}`,
		"short row":       `{"dataframe_split":{"columns":["alcohol","x"],"data":[[13]]}}`,
		"short instance":  `{"instances":[[1,2,3]]}`,
		"both":            `{"instances":[[1]],"dataframe_split":{"columns":["a"],"data":[[1]]}}`,
		"string in a row": `{"instances":[["a"]]}`,
	} {
		code, resp := post(t, srv.URL, body)
		assert.Equal(t, http.StatusBadRequest, code, name)
		var e scoring.ErrorResponse
		require.NoError(t, json.Unmarshal([]byte(resp), &e), name)
		assert.Equal(t, "BAD_REQUEST", e.ErrorCode, name)
		assert.NotEmpty(t, e.Message, name)
	}
}

func TestErrorRate(t *testing.T) {
	const n, p = 400, 0.2
	srv := newServer(t, ServerOptions{ErrorRate: p, Seed: 42})
	ds := evalSet(t)
	c := &scoring.Client{}
	failed := 0
	for i := range n {
		_, err := c.Predict(context.Background(), srv.URL, ds.Columns, ds.Rows[i%len(ds.Rows):i%len(ds.Rows)+1])
		if err != nil {
			var se *scoring.StatusError
			require.True(t, errors.As(err, &se), "%v", err)
			require.Equal(t, http.StatusServiceUnavailable, se.StatusCode)
			assert.Contains(t, se.Body, "TEMPORARILY_UNAVAILABLE")
			failed++
		}
	}
	// within 4 standard deviations of the binomial mean (n·p = 80, sd 8)
	sd := math.Sqrt(n * p * (1 - p))
	assert.InDelta(t, n*p, float64(failed), 4*sd, "503s among %d requests", n)
	assert.Positive(t, failed)
}

func TestErrorRateExtremes(t *testing.T) {
	ds := evalSet(t)
	for _, tc := range []struct {
		rate float64
		want int
	}{{0, http.StatusOK}, {1, http.StatusServiceUnavailable}} {
		srv := newServer(t, ServerOptions{ErrorRate: tc.rate})
		for range 20 {
			_, err := (&scoring.Client{}).Predict(context.Background(), srv.URL, ds.Columns, ds.Rows[:1])
			if tc.want == http.StatusOK {
				require.NoError(t, err)
			} else {
				var se *scoring.StatusError
				require.ErrorAs(t, err, &se)
			}
		}
	}
}

func TestLatencyIsAdded(t *testing.T) {
	const latency = 100 * time.Millisecond
	srv := newServer(t, ServerOptions{Latency: latency})
	ds := evalSet(t)
	for range 3 {
		start := time.Now()
		_, err := (&scoring.Client{}).Predict(context.Background(), srv.URL, ds.Columns, ds.Rows[:1])
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), latency)
	}
	// /ping is not delayed: it answers health checks
	start := time.Now()
	resp, err := http.Get(srv.URL + "/ping")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Less(t, time.Since(start), latency)
}

func TestDegradedServerIsWorse(t *testing.T) {
	ds := evalSet(t)
	accuracy := func(degrade float64) float64 {
		srv := newServer(t, ServerOptions{Degrade: degrade, Seed: 1})
		labels, err := (&scoring.Client{}).Predict(context.Background(), srv.URL, ds.Columns, ds.Rows)
		require.NoError(t, err)
		correct := 0
		for i := range labels {
			if labels[i] == ds.Labels[i] {
				correct++
			}
		}
		return float64(correct) / float64(len(labels))
	}
	honest, degraded := accuracy(0), accuracy(0.5)
	assert.GreaterOrEqual(t, honest, 0.95)
	assert.LessOrEqual(t, degraded, honest-0.2)
}

func TestNewServerRefusesBadOptions(t *testing.T) {
	w := load(t, "v1")
	for _, o := range []ServerOptions{
		{},
		{Weights: w, ErrorRate: 1.5},
		{Weights: w, ErrorRate: math.NaN()},
		{Weights: w, Degrade: -0.1},
		{Weights: w, Latency: -time.Second},
	} {
		_, err := NewServer(o)
		assert.Error(t, err, "%+v", o)
	}
}

func TestInvocationsRefusesHugeBodies(t *testing.T) {
	srv := newServer(t, ServerOptions{})
	code, _ := post(t, srv.URL, `{"instances":[[`+strings.Repeat("1,", maxRequestBytes/2)+`1]]}`)
	assert.Equal(t, http.StatusRequestEntityTooLarge, code)
}
