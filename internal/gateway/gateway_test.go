package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// received is what an upstream saw.
type received struct {
	method, path, query, body string
	header                    http.Header
}

// upstream is a model server that reports every request on a channel and answers
// with its name, after waiting for release when release is not nil.
func upstream(t *testing.T, name string, release <-chan struct{}) (*httptest.Server, <-chan received) {
	t.Helper()
	seen := make(chan received, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- received{r.Method, r.URL.Path, r.URL.RawQuery, string(body), r.Header.Clone()}
		if release != nil {
			<-release
		}
		io.WriteString(w, name+" answers "+string(body))
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

func newTestGateway(t *testing.T, opts Options) (*Gateway, *httptest.Server) {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	g, err := New(opts)
	require.NoError(t, err)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, g.Shutdown(ctx))
	})
	return g, srv
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func (g *Gateway) requestsCounted(model, variant, version, mode, code string) float64 {
	return testutil.ToFloat64(g.metrics.requests.WithLabelValues(model, variant, version, mode, code))
}

func TestProxyRoutesByWeight(t *testing.T) {
	champion, toChampion := upstream(t, "champion", nil)
	candidate, toCandidate := upstream(t, "candidate", nil)
	g, srv := newTestGateway(t, Options{})

	tr := deploy.Traffic{
		Model:     "iris",
		Champion:  deploy.Backend{Version: "1", URL: champion.URL + "/v1"},
		Candidate: &deploy.Backend{Version: "2", URL: candidate.URL},
	}
	_, err := g.apply(tr)
	require.NoError(t, err)

	resp, body := post(t, srv.URL+"/models/iris/invocations?debug=1", `{"x":[1]}`)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, `champion answers {"x":[1]}`, body)
	assert.Equal(t, deploy.Champion, resp.Header.Get(VariantHeader))
	assert.Equal(t, "1", resp.Header.Get(VersionHeader))
	got := <-toChampion
	assert.Equal(t, received{"POST", "/v1/invocations", "debug=1", `{"x":[1]}`, got.header}, got)
	assert.Equal(t, "application/json", got.header.Get("Content-Type"))
	assert.NotEmpty(t, got.header.Get("X-Forwarded-For"))

	tr.CandidateWeight = 100
	_, err = g.apply(tr)
	require.NoError(t, err)
	resp, body = post(t, srv.URL+"/models/iris/invocations", `{"x":[2]}`)
	assert.Equal(t, `candidate answers {"x":[2]}`, body)
	assert.Equal(t, deploy.Candidate, resp.Header.Get(VariantHeader))
	assert.Equal(t, "2", resp.Header.Get(VersionHeader))
	got = <-toCandidate
	assert.Equal(t, "/invocations", got.path)
	assert.Empty(t, got.header.Get(ShadowHeader))

	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "200"))
	assert.Equal(t, 1.0, g.requestsCounted("iris", "candidate", "2", "primary", "200"))
	assert.Equal(t, 1.0, testutil.ToFloat64(g.metrics.candidateWeight.WithLabelValues("iris")))
	assert.Empty(t, toCandidate, "weight 100 sends nothing else to the candidate")
	assert.Empty(t, toChampion)
}

func TestUnknownModelIs404JSON(t *testing.T) {
	_, srv := newTestGateway(t, Options{})
	resp, body := post(t, srv.URL+"/models/nope/invocations", "{}")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"error":"no routes for model \"nope\""}`, body)
}

func TestDeadUpstreamIs502AndCounted(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // its port now refuses connections
	g, srv := newTestGateway(t, Options{})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: dead.URL}})
	require.NoError(t, err)

	resp, body := post(t, srv.URL+"/models/iris/invocations", "{}")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, deploy.Champion, resp.Header.Get(VariantHeader))
	var e map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &e))
	assert.Contains(t, e["error"], "unreachable")
	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "502"))
	assert.Equal(t, 1, testutil.CollectAndCount(g.metrics.duration, "mlrelease_gateway_request_duration_seconds"))
}

func TestShadowCopiesToCandidateAndAnswersFromChampion(t *testing.T) {
	champion, _ := upstream(t, "champion", nil)
	candidate, toCandidate := upstream(t, "candidate", nil)
	g, srv := newTestGateway(t, Options{})
	_, err := g.apply(deploy.Traffic{
		Model:       "iris",
		Champion:    deploy.Backend{Version: "1", URL: champion.URL},
		Candidate:   &deploy.Backend{Version: "2", URL: candidate.URL},
		ShadowShare: 100,
	})
	require.NoError(t, err)

	resp, body := post(t, srv.URL+"/models/iris/invocations?k=v", `{"x":[3]}`)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, `champion answers {"x":[3]}`, body)
	assert.Equal(t, deploy.Champion, resp.Header.Get(VariantHeader))

	// Shutdown waits for queued copies, so the shadow's metrics are final afterwards.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.Shutdown(ctx))
	got := <-toCandidate
	assert.Equal(t, "POST", got.method)
	assert.Equal(t, "/invocations", got.path)
	assert.Equal(t, "k=v", got.query)
	assert.Equal(t, `{"x":[3]}`, got.body)
	assert.Equal(t, "true", got.header.Get(ShadowHeader))
	assert.Equal(t, 1.0, g.requestsCounted("iris", "candidate", "2", "shadow", "200"))
	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "200"))
}

func TestShadowSkipsBodiesOverTheCap(t *testing.T) {
	champion, toChampion := upstream(t, "champion", nil)
	candidate, toCandidate := upstream(t, "candidate", nil)
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{MaxBodyBytes: 8}})
	_, err := g.apply(deploy.Traffic{
		Model:       "iris",
		Champion:    deploy.Backend{Version: "1", URL: champion.URL},
		Candidate:   &deploy.Backend{Version: "2", URL: candidate.URL},
		ShadowShare: 100,
	})
	require.NoError(t, err)

	big := strings.Repeat("x", 100)
	_, body := post(t, srv.URL+"/models/iris/invocations", big)
	assert.Equal(t, "champion answers "+big, body, "the primary gets the whole body")
	assert.Equal(t, big, (<-toChampion).body)
	require.NoError(t, g.Shutdown(context.Background()))
	assert.Empty(t, toCandidate)
	assert.Equal(t, 1.0, testutil.ToFloat64(g.metrics.shadowDropped.WithLabelValues("iris")))
}

// A candidate that never answers holds the single worker; the queue fills and further
// copies are dropped, while every primary request is answered at once.
func TestStuckShadowNeverDelaysPrimary(t *testing.T) {
	champion, _ := upstream(t, "champion", nil)
	release := make(chan struct{})
	candidate, toCandidate := upstream(t, "candidate", release)
	// Registered after upstream's cleanup, so it runs first and lets the stuck handler
	// return before its server's Close waits for it.
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	const queue, primaries = 2, 20
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{Workers: 1, QueueSize: queue, Timeout: time.Hour}})
	_, err := g.apply(deploy.Traffic{
		Model:       "iris",
		Champion:    deploy.Backend{Version: "1", URL: champion.URL},
		Candidate:   &deploy.Backend{Version: "2", URL: candidate.URL},
		ShadowShare: 100,
	})
	require.NoError(t, err)

	_, body := post(t, srv.URL+"/models/iris/invocations", "first")
	assert.Equal(t, "champion answers first", body)
	<-toCandidate // the worker is now stuck in the candidate

	for i := range primaries {
		resp, body := post(t, srv.URL+"/models/iris/invocations", "more")
		require.Equal(t, http.StatusOK, resp.StatusCode, "request %d", i)
		require.Equal(t, "champion answers more", body)
	}
	assert.Equal(t, float64(primaries-queue), testutil.ToFloat64(g.metrics.shadowDropped.WithLabelValues("iris")))
	assert.Equal(t, float64(primaries+1), g.requestsCounted("iris", "champion", "1", "primary", "200"))

	close(release)
	require.NoError(t, g.Shutdown(context.Background()))
	assert.Equal(t, float64(1+queue), g.requestsCounted("iris", "candidate", "2", "shadow", "200"))
}

func TestShutdownAbandonsStuckShadowWhenContextEnds(t *testing.T) {
	champion, _ := upstream(t, "champion", nil)
	release := make(chan struct{})
	candidate, toCandidate := upstream(t, "candidate", release)
	t.Cleanup(func() { close(release) })
	g, srv := newTestGateway(t, Options{Shadow: ShadowOptions{Workers: 1, Timeout: time.Hour}})
	_, err := g.apply(deploy.Traffic{
		Model:       "iris",
		Champion:    deploy.Backend{Version: "1", URL: champion.URL},
		Candidate:   &deploy.Backend{Version: "2", URL: candidate.URL},
		ShadowShare: 100,
	})
	require.NoError(t, err)
	post(t, srv.URL+"/models/iris/invocations", "x")
	<-toCandidate

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, g.Shutdown(ctx), context.Canceled)
	assert.Equal(t, 0.0, g.requestsCounted("iris", "candidate", "2", "shadow", "502"), "an abandoned copy says nothing about the candidate")
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, srv := newTestGateway(t, Options{Registerer: reg})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: "http://127.0.0.1:1"}})
	require.NoError(t, err)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		if path == "/metrics" {
			assert.Contains(t, string(b), `mlrelease_gateway_candidate_weight_ratio{model="iris"} 0`)
		}
	}
}

func TestNewRefusesMissingRegisterer(t *testing.T) {
	_, err := New(Options{})
	assert.Error(t, err)
	// Two gateways on one registry collide rather than silently sharing series.
	reg := prometheus.NewRegistry()
	_, err = New(Options{Registerer: reg})
	require.NoError(t, err)
	_, err = New(Options{Registerer: reg})
	assert.Error(t, err)
}

func bufferLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func gaugeValue(g *Gateway, model string) float64 {
	return testutil.ToFloat64(g.metrics.candidateWeight.WithLabelValues(model))
}

// A client that leaves is not the model server's fault: it counts as 499, not 502.
func TestClientGoneIsNot502(t *testing.T) {
	release := make(chan struct{})
	champion, toChampion := upstream(t, "champion", release)
	t.Cleanup(func() { close(release) })
	g, err := New(Options{Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	srv := httptest.NewServer(g.Handler())
	_, err = g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: champion.URL}})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/models/iris/invocations", strings.NewReader("x"))
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	<-toChampion // the request is at the model server, which holds it
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	srv.Close() // waits for the gateway's handler to return
	require.NoError(t, g.Shutdown(context.Background()))

	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "499"))
	assert.Equal(t, 0.0, g.requestsCounted("iris", "champion", "1", "primary", "502"))
}
