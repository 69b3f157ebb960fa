package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// With a feedback token, POST /feedback without it, or with another, is refused
// before anything is joined; with it the label is taken (here: an unknown ID).
func TestFeedbackToken(t *testing.T) {
	g, err := New(Options{Registerer: prometheus.NewRegistry(), Feedback: FeedbackOptions{Token: "label-pipeline-secret"}})
	require.NoError(t, err)
	h := g.Handler()
	post := func(auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/feedback", strings.NewReader(`{"request_id":"abc","label":"1"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, auth := range []string{"", "Bearer guess", "label-pipeline-secret"} {
		rec := post(auth)
		require.Equal(t, http.StatusUnauthorized, rec.Code, "auth %q", auth)
		require.NotContains(t, rec.Body.String(), "label-pipeline-secret", "the token is never echoed")
	}
	require.Equal(t, http.StatusNotFound, post("Bearer label-pipeline-secret").Code, "authorized: the unknown ID is looked up")

	open, err := New(Options{Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	open.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/feedback", strings.NewReader(`{"request_id":"abc","label":"1"}`)))
	require.Equal(t, http.StatusNotFound, rec.Code, "no token configured: feedback stays open")
}

// Request IDs the gateway makes are 128 random bits: no prefix or counter to guess
// the next one from.
func TestRequestIDsAreUnguessable(t *testing.T) {
	g, err := New(Options{Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodPost, "/models/m/invocations", nil)
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := g.requestID(r)
		require.Len(t, id, 26, "base32 of 128 bits")
		require.False(t, seen[id])
		seen[id] = true
		if prev != "" {
			require.NotEqual(t, prev[:8], id[:8], "no shared prefix between consecutive IDs")
		}
		prev = id
	}
	r.Header.Set(RequestIDHeader, "client-chosen-1")
	require.Equal(t, "client-chosen-1", g.requestID(r), "a client's own ID is kept")
}

// BenchmarkRequestID is the cost of a gateway-made request ID (128 bits from crypto/rand).
func BenchmarkRequestID(b *testing.B) {
	g, err := New(Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/models/m/invocations", nil)
	b.ReportAllocs()
	for b.Loop() {
		_ = g.requestID(r)
	}
}
