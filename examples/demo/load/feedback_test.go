package load

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

// A fake gateway notes when it answered each request ID and with which row; every
// label must come after the delay, name that row's true label, and each user header
// must be one of the pool.
func TestRunSendsTrueLabelsAfterTheDelay(t *testing.T) {
	ds := evalSet(t)
	const requests, delay, users = 20, 30 * time.Millisecond, 3
	var (
		mu       sync.Mutex
		answered = map[string]time.Time{}
		rowOf    = map[string][]float64{}
		labels   = map[string]string{}
		late     = map[string]time.Duration{}
		userSeen = map[string]bool{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/invocations":
			var req scoring.Request
			require.NoError(t, json.NewDecoder(r.Body).Decode(&req))
			id := r.Header.Get(RequestIDHeader)
			mu.Lock()
			answered[id], rowOf[id] = time.Now(), req.DataframeSplit.Data[0]
			userSeen[r.Header.Get("X-User-ID")] = true
			mu.Unlock()
			_, _ = w.Write([]byte(`{"predictions":[1]}`))
		case "/feedback":
			var f struct {
				RequestID string             `json:"request_id"`
				Label     scoring.Prediction `json:"label"`
			}
			require.NoError(t, json.NewDecoder(r.Body).Decode(&f))
			mu.Lock()
			labels[f.RequestID] = string(f.Label)
			late[f.RequestID] = time.Since(answered[f.RequestID])
			mu.Unlock()
			_, _ = w.Write([]byte(`{"outcome":"correct"}`))
		}
	}))
	defer srv.Close()

	sum, err := Run(context.Background(), Options{URL: srv.URL + "/invocations", Dataset: ds, Requests: requests, Seed: 9,
		FeedbackURL: srv.URL + "/feedback", FeedbackDelay: delay, Users: users})
	require.NoError(t, err)
	assert.Equal(t, requests, sum.OK)
	assert.Equal(t, requests, sum.Labels)
	assert.Zero(t, sum.LabelErrors)
	require.Len(t, labels, requests, "one label per answered request, with distinct IDs")
	for id, label := range labels {
		i := slices.IndexFunc(ds.Rows, func(row []float64) bool { return slices.Equal(row, rowOf[id]) })
		require.GreaterOrEqual(t, i, 0)
		assert.Equal(t, ds.Labels[i], label, "request %s", id)
		assert.GreaterOrEqual(t, late[id], delay, "request %s labelled before the delay", id)
	}
	for u := range userSeen {
		n, err := strconv.Atoi(strings.TrimPrefix(u, "user-"))
		require.NoError(t, err, u)
		assert.True(t, n >= 0 && n < users, u)
	}
}

// Labels still waiting when the run is cancelled are not sent.
func TestRunDropsWaitingLabelsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/feedback" {
			t.Error("a label was sent after the run was cancelled")
		}
		cancel() // the first answer ends the run
		_, _ = w.Write([]byte(`{"predictions":[1]}`))
	}))
	defer srv.Close()
	sum, err := Run(ctx, Options{URL: srv.URL + "/invocations", Dataset: evalSet(t), Concurrency: 1,
		FeedbackURL: srv.URL + "/feedback", FeedbackDelay: time.Hour})
	require.NoError(t, err)
	assert.Equal(t, 1, sum.OK)
	assert.Zero(t, sum.Labels+sum.LabelErrors)
}

// Through the real gateway and the demo model: every label joins its prediction and
// counts as correct or incorrect.
func TestFeedbackThroughTheGateway(t *testing.T) {
	w, err := model.Load("../models/v1.json")
	require.NoError(t, err)
	h, err := model.NewServer(model.ServerOptions{Weights: w})
	require.NoError(t, err)
	modelSrv := httptest.NewServer(h)
	defer modelSrv.Close()
	g, err := gateway.New(gateway.Options{Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	gw := httptest.NewServer(g.Handler())
	defer gw.Close()
	_, err = deploy.NewGateway(gw.URL, "", nil).Apply(context.Background(),
		deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "1", URL: modelSrv.URL}})
	require.NoError(t, err)

	const requests = 40
	sum, err := Run(context.Background(), Options{URL: gw.URL + "/models/wine/invocations", Dataset: evalSet(t),
		Requests: requests, FeedbackURL: gw.URL + "/feedback", FeedbackDelay: time.Millisecond, Users: 10})
	require.NoError(t, err)
	assert.Equal(t, requests, sum.OK)
	assert.Equal(t, requests, sum.Labels, "every label joined")

	resp, err := http.Get(gw.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	outcomes := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "mlrelease_gateway_feedback_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		require.NoError(t, err)
		for _, o := range []string{"correct", "incorrect"} {
			if strings.Contains(line, `outcome="`+o+`"`) {
				outcomes[o] += v
			}
		}
	}
	assert.Equal(t, float64(requests), outcomes["correct"]+outcomes["incorrect"])
	assert.Greater(t, outcomes["correct"], outcomes["incorrect"], "the demo model is mostly right")
}
