package load

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

func evalSet(t *testing.T) *scoring.Dataset {
	t.Helper()
	ds, err := scoring.LoadCSV("../data/eval.csv")
	require.NoError(t, err)
	return ds
}

// counting wraps a model server, counting requests and the most in flight at once.
type counting struct {
	next              http.Handler
	requests          atomic.Int64
	mu                sync.Mutex
	inFlight, maxSeen int
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	c.mu.Lock()
	c.inFlight++
	c.maxSeen = max(c.maxSeen, c.inFlight)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}()
	c.next.ServeHTTP(w, r)
}

func newTarget(t *testing.T, opts model.ServerOptions) (*counting, string) {
	t.Helper()
	w, err := model.Load("../models/v1.json")
	require.NoError(t, err)
	opts.Weights = w
	h, err := model.NewServer(opts)
	require.NoError(t, err)
	c := &counting{next: h}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv.URL + "/invocations"
}

func TestRunSendsTheBoundedNumberOfRequests(t *testing.T) {
	target, url := newTarget(t, model.ServerOptions{Latency: 2 * time.Millisecond})
	sum, err := Run(context.Background(), Options{URL: url, Dataset: evalSet(t), Requests: 60, Concurrency: 3})
	require.NoError(t, err)
	assert.Equal(t, Summary{Sent: 60, OK: 60, Errors: map[string]int{}}, sum)
	assert.EqualValues(t, 60, target.requests.Load())
	assert.LessOrEqual(t, target.maxSeen, 3, "concurrency bound")
}

func TestRunCountsErrorsByStatus(t *testing.T) {
	target, url := newTarget(t, model.ServerOptions{ErrorRate: 0.3, Seed: 5})
	sum, err := Run(context.Background(), Options{URL: url, Dataset: evalSet(t), Requests: 200})
	require.NoError(t, err)
	assert.Equal(t, 200, sum.Sent)
	assert.EqualValues(t, 200, target.requests.Load())
	assert.Equal(t, 200, sum.OK+sum.Errors["503"])
	assert.Len(t, sum.Errors, 1)
	assert.InDelta(t, 60, sum.Errors["503"], 4*6.5) // binomial(200, 0.3): sd ≈ 6.5
}

func TestRunStopsWhenTheContextEnds(t *testing.T) {
	w, err := model.Load("../models/v1.json")
	require.NoError(t, err)
	h, err := model.NewServer(model.ServerOptions{Weights: w})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 25 {
			cancel() // the 25th request ends the run; it and those in flight still count
		}
		h.ServeHTTP(rw, r)
	}))
	defer srv.Close()

	sum, err := Run(ctx, Options{URL: srv.URL + "/invocations", Dataset: evalSet(t), Concurrency: 2})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, sum.Sent, 25)
	assert.LessOrEqual(t, sum.Sent, 25+2)
	assert.EqualValues(t, seen.Load(), sum.Sent, "every request the server saw is counted")
	assert.Equal(t, sum.Sent, sum.OK, "requests in flight at the end are not cut short")
}

func TestRunKeepsTheRate(t *testing.T) {
	_, url := newTarget(t, model.ServerOptions{})
	start := time.Now()
	sum, err := Run(context.Background(), Options{URL: url, Dataset: evalSet(t), Requests: 11, Rate: 100})
	require.NoError(t, err)
	assert.Equal(t, 11, sum.OK)
	// 11 requests at 100/s wait for 11 ticks 10ms apart
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
}

func TestRunSendsOneDataframeRowPerRequest(t *testing.T) {
	ds := evalSet(t)
	var mu sync.Mutex
	var bodies []scoring.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req scoring.Request
		require.NoError(t, json.NewDecoder(r.Body).Decode(&req))
		mu.Lock()
		bodies = append(bodies, req)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"predictions":[1]}`))
	}))
	defer srv.Close()
	_, err := Run(context.Background(), Options{URL: srv.URL, Dataset: ds, Requests: 10, Seed: 3})
	require.NoError(t, err)
	require.Len(t, bodies, 10)
	for _, b := range bodies {
		require.NotNil(t, b.DataframeSplit)
		assert.Equal(t, ds.Columns, b.DataframeSplit.Columns)
		assert.Len(t, b.DataframeSplit.Data, 1)
		assert.Contains(t, ds.Rows, b.DataframeSplit.Data[0])
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	_, err := Run(context.Background(), Options{Dataset: evalSet(t)})
	assert.Error(t, err)
	_, err = Run(context.Background(), Options{URL: "http://x", Dataset: evalSet(t), Rate: -1})
	assert.Error(t, err)
}
