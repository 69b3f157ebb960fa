package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// answering is a model server that answers every invocation with body.
func answering(t *testing.T, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// serve sends one request through the gateway's handler and returns when the handler
// has returned, so everything it records is visible.
func serve(g *Gateway, method, path, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, req)
	return rec
}

func newGateway(t *testing.T, opts Options) *Gateway {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	g, err := New(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return g
}

func twoVariants(champion, candidate string, weight, shadow int) deploy.Traffic {
	return deploy.Traffic{
		Model:           "iris",
		Champion:        deploy.Backend{Version: "1", URL: champion},
		Candidate:       &deploy.Backend{Version: "2", URL: candidate},
		CandidateWeight: weight,
		ShadowShare:     shadow,
	}
}

// Through the whole gateway, the candidate's share of requests stays within five
// standard deviations of its weight.
func TestRoutedShareMatchesWeight(t *testing.T) {
	champion, candidate := answering(t, `{"predictions":[0]}`), answering(t, `{"predictions":[1]}`)
	g := newGateway(t, Options{})
	const n, weight = 2000, 30
	_, err := g.apply(twoVariants(champion.URL, candidate.URL, weight, 0))
	require.NoError(t, err)
	got := 0
	for range n {
		rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
		require.Equal(t, http.StatusOK, rec.Code)
		if rec.Header().Get(VariantHeader) == deploy.Candidate {
			got++
		}
	}
	p := weight / 100.0
	assert.InDelta(t, n*p, float64(got), 5*math.Sqrt(n*p*(1-p)))
}

// Routing keys spread over [0, 1) like uniform draws, so the sticky share of users
// matches the weight too; and a key on the candidate stays there as the weight rises.
func TestStickyDrawIsUniformAndNested(t *testing.T) {
	const n = 20000
	draws := make([]float64, n)
	for i := range draws {
		draws[i] = StickyDraw("iris", "2", fmt.Sprintf("user-%d", i))
		require.True(t, draws[i] >= 0 && draws[i] < 1)
	}
	prev := map[int]bool{}
	for _, weight := range []int{1, 5, 10, 25, 50, 90, 100} {
		on := map[int]bool{}
		for i, u := range draws {
			if v, _ := Pick(traffic(weight, 0), u); v == deploy.Candidate {
				on[i] = true
			}
		}
		for i := range prev {
			require.True(t, on[i], "user-%d left the candidate when the weight rose to %d", i, weight)
		}
		p := float64(weight) / 100
		assert.InDelta(t, n*p, float64(len(on)), 5*math.Sqrt(n*p*(1-p))+1e-9, "weight %d", weight)
		prev = on
	}
	assert.Equal(t, StickyDraw("iris", "2", "u"), StickyDraw("iris", "2", "u"))
	assert.NotEqual(t, StickyDraw("iris", "2", "u"), StickyDraw("iris", "3", "u"), "a new candidate reshuffles")
	assert.NotEqual(t, StickyDraw("ab", "c", "u"), StickyDraw("a", "bc", "u"))
}

func TestStickyAssignmentAcrossWeightChanges(t *testing.T) {
	champion, candidate := answering(t, `{"predictions":[0]}`), answering(t, `{"predictions":[1]}`)
	g := newGateway(t, Options{RoutingKeyHeader: "x-user-id"})
	const users = 300
	variantOf := func(user int) string {
		rec := serve(g, "POST", "/models/iris/invocations", "{}", map[string]string{"X-User-ID": fmt.Sprintf("u%d", user)})
		require.Equal(t, http.StatusOK, rec.Code)
		return rec.Header().Get(VariantHeader)
	}
	onCandidate := map[int]bool{}
	for _, weight := range []int{10, 20, 50} {
		_, err := g.apply(twoVariants(champion.URL, candidate.URL, weight, 0))
		require.NoError(t, err)
		now := map[int]bool{}
		for u := range users {
			v := variantOf(u)
			for range 3 {
				require.Equal(t, v, variantOf(u), "user %d at weight %d", u, weight)
			}
			if v == deploy.Candidate {
				now[u] = true
			}
		}
		for u := range onCandidate {
			assert.True(t, now[u], "user %d left the candidate at weight %d", u, weight)
		}
		assert.Greater(t, len(now), len(onCandidate), "weight %d brings more users", weight)
		onCandidate = now
	}
	// Without the header, requests are drawn at random.
	seen := map[string]bool{}
	for range 200 {
		seen[serve(g, "POST", "/models/iris/invocations", "{}", nil).Header().Get(VariantHeader)] = true
	}
	assert.Len(t, seen, 2)
}

func TestEveryAnswerCarriesARequestID(t *testing.T) {
	champion, toChampion := upstream(t, "champion", nil)
	g := newGateway(t, Options{})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: champion.URL}})
	require.NoError(t, err)

	a := serve(g, "POST", "/models/iris/invocations", "{}", nil)
	b := serve(g, "POST", "/models/iris/invocations", "{}", nil)
	idA, idB := a.Header().Get(RequestIDHeader), b.Header().Get(RequestIDHeader)
	assert.NotEmpty(t, idA)
	assert.NotEqual(t, idA, idB)
	assert.Equal(t, idA, (<-toChampion).header.Get(RequestIDHeader), "the model server sees it too")
	<-toChampion

	own := serve(g, "POST", "/models/iris/invocations", "{}", map[string]string{RequestIDHeader: "client-id-1"})
	assert.Equal(t, "client-id-1", own.Header().Get(RequestIDHeader))
	assert.Len(t, own.Header().Values(RequestIDHeader), 1)
	<-toChampion
	bad := serve(g, "POST", "/models/iris/invocations", "{}", map[string]string{RequestIDHeader: "has space\n"})
	assert.NotEqual(t, "has space\n", bad.Header().Get(RequestIDHeader))
	assert.NotEmpty(t, bad.Header().Get(RequestIDHeader))
	<-toChampion
	assert.NotEmpty(t, serve(g, "POST", "/models/nope/invocations", "{}", nil).Header().Get(RequestIDHeader))
}

func scoreText(t *testing.T, g *Gateway) string {
	t.Helper()
	out, err := testutil.CollectAndFormat(g.metrics.score, expfmt.TypeTextPlain, "mlrelease_gateway_prediction_score")
	require.NoError(t, err)
	return string(out)
}

func scoreCount(t *testing.T, g *Gateway, variant, version, mode string) uint64 {
	t.Helper()
	prefix := fmt.Sprintf(`mlrelease_gateway_prediction_score_count{mode=%q,model="iris",variant=%q,version=%q} `, mode, variant, version)
	for _, line := range strings.Split(scoreText(t, g), "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			var n uint64
			_, err := fmt.Sscan(rest, &n)
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

func TestShadowComparisonAndScores(t *testing.T) {
	champion := answering(t, `{"predictions":[[0.2,0.8],[0.6,0.4]]}`)
	agrees := answering(t, `{"predictions":[[0.1,0.9],[0.3,0.7]]}`) // row 0 agrees, row 1 does not
	g := newGateway(t, Options{})
	_, err := g.apply(twoVariants(champion.URL, agrees.URL, 0, 100))
	require.NoError(t, err)
	for range 3 {
		rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
		require.Equal(t, http.StatusOK, rec.Code)
		assert.JSONEq(t, `{"predictions":[[0.2,0.8],[0.6,0.4]]}`, rec.Body.String(), "the client gets the champion's answer")
	}
	require.NoError(t, g.Shutdown(context.Background()))

	assert.Equal(t, 3.0, testutil.ToFloat64(g.metrics.comparisons.WithLabelValues("iris", "2", "agree")))
	assert.Equal(t, 3.0, testutil.ToFloat64(g.metrics.comparisons.WithLabelValues("iris", "2", "disagree")))
	assert.Equal(t, uint64(6), scoreCount(t, g, "champion", "1", "primary"))
	assert.Equal(t, uint64(6), scoreCount(t, g, "candidate", "2", "shadow"))
	assert.Equal(t, uint64(0), scoreCount(t, g, "candidate", "2", "primary"))

	out := scoreText(t, g)
	// 0.8 and 0.6 from the champion, 0.9 and 0.7 from the candidate.
	assert.Contains(t, out, `mlrelease_gateway_prediction_score_bucket{mode="primary",model="iris",variant="champion",version="1",le="0.55"} 0`)
	assert.Contains(t, out, `mlrelease_gateway_prediction_score_bucket{mode="primary",model="iris",variant="champion",version="1",le="0.6"} 3`)
	assert.Contains(t, out, `mlrelease_gateway_prediction_score_bucket{mode="primary",model="iris",variant="champion",version="1",le="0.75"} 3`)
	assert.Contains(t, out, `mlrelease_gateway_prediction_score_bucket{mode="primary",model="iris",variant="champion",version="1",le="0.8"} 6`)
	assert.Contains(t, out, `mlrelease_gateway_prediction_score_bucket{mode="shadow",model="iris",variant="candidate",version="2",le="0.7"} 3`)
}

// A shadow that fails or cannot be parsed is counted as a shadow request, never as
// an agreement or disagreement.
func TestFailedShadowIsNotCompared(t *testing.T) {
	champion := answering(t, `{"predictions":[1]}`)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	g := newGateway(t, Options{})
	_, err := g.apply(twoVariants(champion.URL, failing.URL, 0, 100))
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, serve(g, "POST", "/models/iris/invocations", "{}", nil).Code)
	require.NoError(t, g.Shutdown(context.Background()))
	assert.Equal(t, 1.0, g.requestsCounted("iris", "candidate", "2", "shadow", "500"))
	assert.Equal(t, 0, testutil.CollectAndCount(g.metrics.comparisons)-2, "only the zero series")
	assert.Equal(t, 0.0, testutil.ToFloat64(g.metrics.comparisons.WithLabelValues("iris", "2", "agree"))+
		testutil.ToFloat64(g.metrics.comparisons.WithLabelValues("iris", "2", "disagree")))
}

// A dead shadow and one slower than the shadow timeout are counted (502, 504) and cost
// the primary nothing.
func TestDeadOrSlowShadowNeverFailsPrimary(t *testing.T) {
	champion := answering(t, `{"predictions":[1]}`)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })

	for _, tc := range []struct {
		name, url string
		code      string
	}{{"dead", dead.URL, "502"}, {"slow", slow.URL, "504"}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, Options{Shadow: ShadowOptions{Timeout: 50 * time.Millisecond}})
			_, err := g.apply(twoVariants(champion.URL, tc.url, 0, 100))
			require.NoError(t, err)
			for range 5 {
				rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
				require.Equal(t, http.StatusOK, rec.Code)
				require.JSONEq(t, `{"predictions":[1]}`, rec.Body.String())
			}
			require.NoError(t, g.Shutdown(context.Background()))
			assert.Equal(t, 5.0, g.requestsCounted("iris", "candidate", "2", "shadow", tc.code))
			assert.Equal(t, 5.0, g.requestsCounted("iris", "champion", "1", "primary", "200"))
		})
	}
}

func TestUpstreamTimeoutIs504JSON(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 20 * time.Millisecond
	g := newGateway(t, Options{Transport: tr})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: slow.URL}})
	require.NoError(t, err)
	rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
	assert.Equal(t, http.StatusGatewayTimeout, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.Contains(t, rec.Body.String(), "did not answer in time")
	assert.Equal(t, 1.0, g.requestsCounted("iris", "champion", "1", "primary", "504"))
}

// fakeClock is the feedback store's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func feedback(t *testing.T, g *Gateway, body string) (int, map[string]string) {
	t.Helper()
	rec := serve(g, "POST", "/feedback", body, nil)
	var out map[string]string
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out), rec.Body.String())
	return rec.Code, out
}

func TestFeedbackJoinsCountsAndExpires(t *testing.T) {
	champion, candidate := answering(t, `{"predictions":[1]}`), answering(t, `{"predictions":["2"]}`)
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := newGateway(t, Options{Now: clock.Now, Feedback: FeedbackOptions{TTL: time.Minute}})
	_, err := g.apply(twoVariants(champion.URL, candidate.URL, 0, 0))
	require.NoError(t, err)
	invoke := func() string {
		rec := serve(g, "POST", "/models/iris/invocations", "{}", nil)
		require.Equal(t, http.StatusOK, rec.Code)
		return rec.Header().Get(RequestIDHeader)
	}

	first, second := invoke(), invoke()
	code, out := feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":1.0}`, first))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, map[string]string{"request_id": first, "model": "iris", "variant": "champion", "version": "1", "outcome": "correct"}, out)
	code, out = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":"0"}`, second))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "incorrect", out["outcome"])

	code, _ = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":1}`, first))
	assert.Equal(t, http.StatusNotFound, code, "a prediction is joined once")
	code, _ = feedback(t, g, `{"request_id":"never-served","label":1}`)
	assert.Equal(t, http.StatusNotFound, code)

	// The candidate's answers are joined under the candidate.
	_, err = g.apply(twoVariants(champion.URL, candidate.URL, 100, 0))
	require.NoError(t, err)
	third := invoke()
	code, out = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":2}`, third))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "candidate", out["variant"])
	assert.Equal(t, "correct", out["outcome"])

	// Expiry: one label arrives too late (found but expired), and a later request
	// sweeps another one out.
	late, swept := invoke(), invoke()
	clock.Add(time.Minute)
	code, out = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":2}`, late))
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, out["error"], "expired")
	invoke()
	code, _ = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":2}`, swept))
	assert.Equal(t, http.StatusNotFound, code)
	assert.Equal(t, 1, g.feedback.len(), "only the newest prediction waits")

	fb := func(variant, version, outcome string) float64 {
		return testutil.ToFloat64(g.metrics.feedback.WithLabelValues("iris", variant, version, outcome))
	}
	assert.Equal(t, 1.0, fb("champion", "1", "correct"))
	assert.Equal(t, 1.0, fb("champion", "1", "incorrect"))
	assert.Equal(t, 1.0, fb("candidate", "2", "correct"))
	assert.Equal(t, 0.0, fb("candidate", "2", "incorrect"))
	assert.Equal(t, 3.0, testutil.ToFloat64(g.metrics.feedbackMisses.WithLabelValues("unknown")))
	assert.Equal(t, 1.0, testutil.ToFloat64(g.metrics.feedbackMisses.WithLabelValues("expired")))
	assert.Equal(t, 2.0, testutil.ToFloat64(g.metrics.feedbackExpired.WithLabelValues("iris", "age")))
}

func TestFeedbackStoreStaysWithinCapacity(t *testing.T) {
	champion := answering(t, `{"predictions":[1]}`)
	g := newGateway(t, Options{Feedback: FeedbackOptions{Capacity: 3}})
	_, err := g.apply(deploy.Traffic{Model: "iris", Champion: deploy.Backend{Version: "1", URL: champion.URL}})
	require.NoError(t, err)
	var ids []string
	for range 10 {
		ids = append(ids, serve(g, "POST", "/models/iris/invocations", "{}", nil).Header().Get(RequestIDHeader))
	}
	assert.Equal(t, 3, g.feedback.len())
	assert.Equal(t, 7.0, testutil.ToFloat64(g.metrics.feedbackExpired.WithLabelValues("iris", "capacity")))
	code, _ := feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":1}`, ids[0]))
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = feedback(t, g, fmt.Sprintf(`{"request_id":%q,"label":1}`, ids[9]))
	assert.Equal(t, http.StatusOK, code)

	// A client reusing its request ID replaces the waiting prediction; the old slot
	// does not evict the new one.
	for range 2 {
		serve(g, "POST", "/models/iris/invocations", "{}", map[string]string{RequestIDHeader: "same"})
	}
	for range 2 {
		serve(g, "POST", "/models/iris/invocations", "{}", nil)
	}
	code, _ = feedback(t, g, `{"request_id":"same","label":1}`)
	assert.Equal(t, http.StatusOK, code)
}

func TestFeedbackRefusesBadInput(t *testing.T) {
	g := newGateway(t, Options{})
	for _, tc := range []struct{ body, want string }{
		{`{"label":1}`, "request_id is empty"},
		{`{"request_id":"x"}`, "label is missing"},
		{`{"request_id":"x","label":""}`, "label is missing"},
		{`{"request_id":"x","label":null}`, "label"},
		{`{"request_id":"x","label":1,"extra":2}`, "extra"},
		{`{"request_id":"x","label":1}{}`, "data after"},
		{`nope`, "not feedback"},
	} {
		code, out := feedback(t, g, tc.body)
		assert.Equal(t, http.StatusBadRequest, code, tc.body)
		assert.Contains(t, out["error"], tc.want, tc.body)
	}
}

func TestRestartKeepsRoutes(t *testing.T) {
	state := filepath.Join(t.TempDir(), "gateway-state.json")
	g := newGateway(t, Options{StateFile: state})
	tr := twoVariants("http://champion:8080", "http://candidate:8080", 10, 50)
	_, err := g.apply(tr)
	require.NoError(t, err)
	tr.CandidateWeight = 25
	want, err := g.apply(tr)
	require.NoError(t, err)
	_, err = g.apply(deploy.Traffic{Model: "wine", Champion: deploy.Backend{Version: "7", URL: "http://wine"}})
	require.NoError(t, err)
	require.NoError(t, g.Shutdown(context.Background()))

	restarted := newGateway(t, Options{StateFile: state})
	rec := serve(restarted, "GET", "/admin/v1/models/iris", "", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	var got deploy.Applied
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	assert.Equal(t, want, got)
	assert.Equal(t, int64(2), got.Revision)
	assert.InDelta(t, 0.25, gaugeValue(restarted, "iris"), 1e-9)
	again, err := restarted.apply(tr)
	require.NoError(t, err)
	assert.Equal(t, int64(2), again.Revision, "a retried PUT after a restart keeps the revision")
	rec = serve(restarted, "GET", "/readyz", "", nil)
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.JSONEq(t, `{"status":"ready","models":2}`, rec.Body.String())

	entries, err := os.ReadDir(filepath.Dir(state))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files are left behind")
}

func TestStateFileProblems(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	require.NoError(t, os.WriteFile(corrupt, []byte(`{"routes":[`), 0o644))
	_, err := New(Options{Registerer: prometheus.NewRegistry(), StateFile: corrupt})
	assert.ErrorContains(t, err, "does not parse")

	invalid := filepath.Join(dir, "invalid.json")
	require.NoError(t, os.WriteFile(invalid, []byte(`{"routes":[{"model":"iris","champion":{"version":"1","url":"http://c"},"candidateWeight":50,"revision":3}]}`), 0o644))
	_, err = New(Options{Registerer: prometheus.NewRegistry(), StateFile: invalid})
	assert.ErrorContains(t, err, "need a candidate")

	// A state that cannot be saved is not applied.
	g := newGateway(t, Options{StateFile: filepath.Join(dir, "missing-dir", "state.json")})
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	code, body := admin(t, "PUT", srv.URL+"/admin/v1/models/iris", "", irisTraffic)
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Contains(t, body, "routes unchanged")
	code, _ = admin(t, "GET", srv.URL+"/admin/v1/models/iris", "", "")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestReadinessDuringDrain(t *testing.T) {
	g := newGateway(t, Options{})
	assert.Equal(t, http.StatusOK, serve(g, "GET", "/readyz", "", nil).Code)
	assert.Equal(t, http.StatusOK, serve(g, "GET", "/healthz", "", nil).Code)
	g.Drain()
	rec := serve(g, "GET", "/readyz", "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.JSONEq(t, `{"status":"draining"}`, rec.Body.String())
	assert.Equal(t, http.StatusOK, serve(g, "GET", "/healthz", "", nil).Code, "still alive")
}

// FuzzAdminPut: whatever the body, a PUT answers 200 with traffic that validates and
// is what GET returns, or 400 with a JSON error and the routes unchanged.
func FuzzAdminPut(f *testing.F) {
	for _, seed := range []string{irisTraffic, `{}`, `{"champion":{"version":"1","url":"http://c"}}`,
		`{"champion":{"version":"1","url":"http://c"},"candidate":{"version":"2","url":"https://d/x?y=1"},"candidateWeight":100,"shadowShare":0}`,
		`{"model":"wine","champion":{"version":"1","url":"http://c"}}`, `{"candidateWeight":1e3}`, `[]`, `null`,
		`{"champion":{"version":"1","url":"http://u:p@c"}}`, `{"champion":{"version":"1","url":"http://c"},"shadowShare":-1}`} {
		f.Add(seed)
	}
	g, err := New(Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		f.Fatal(err)
	}
	before := serve(g, "PUT", "/admin/v1/models/iris", irisTraffic, nil)
	if before.Code != http.StatusOK {
		f.Fatal(before.Body.String())
	}
	f.Fuzz(func(t *testing.T, body string) {
		prev := serve(g, "GET", "/admin/v1/models/iris", "", nil).Body.String()
		rec := serve(g, "PUT", "/admin/v1/models/iris", body, nil)
		after := serve(g, "GET", "/admin/v1/models/iris", "", nil).Body.String()
		switch rec.Code {
		case http.StatusOK:
			var a deploy.Applied
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatalf("200 with %q: %v", rec.Body.String(), err)
			}
			if err := a.Validate(); err != nil {
				t.Fatalf("applied invalid traffic %+v: %v", a, err)
			}
			if strings.TrimSpace(after) != strings.TrimSpace(rec.Body.String()) {
				t.Fatalf("GET %s differs from PUT's answer %s", after, rec.Body.String())
			}
		case http.StatusBadRequest:
			var e map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" {
				t.Fatalf("400 without a JSON error: %q", rec.Body.String())
			}
			if after != prev {
				t.Fatalf("a refused PUT changed the routes: %s -> %s", prev, after)
			}
		default:
			t.Fatalf("PUT %q answered %d", body, rec.Code)
		}
	})
}
