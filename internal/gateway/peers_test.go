package gateway

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A replica that starts fresh, or from an older state file, serves its peers' newest
// routes; one that is ahead keeps its own; a peer that is down is skipped.
func TestSyncFromPeers(t *testing.T) {
	champion, candidate := answering(t, `{"predictions":[0]}`), answering(t, `{"predictions":[1]}`)
	a, aSrv := newTestGateway(t, Options{AdminToken: "tok"})
	b, bSrv := newTestGateway(t, Options{AdminToken: "tok"})
	_, downSrv := newTestGateway(t, Options{AdminToken: "tok"})
	downSrv.Close()
	for _, w := range []int{0, 10, 50} { // revisions 1, 2, 3
		for _, g := range []*Gateway{a, b} {
			_, err := g.apply(twoVariants(champion.URL, candidate.URL, w, 0))
			require.NoError(t, err)
		}
	}
	peers := []string{downSrv.URL, aSrv.URL, bSrv.URL}

	fresh := newGateway(t, Options{StateFile: t.TempDir() + "/state.json"})
	n, err := fresh.SyncFromPeers(context.Background(), peers, "tok")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	got := (*fresh.routes.Load())["iris"].applied
	assert.Equal(t, 50, got.CandidateWeight)
	assert.Equal(t, int64(3), got.Revision)
	rec := serve(fresh, "POST", "/models/iris/invocations", "{}", nil)
	assert.Equal(t, http.StatusOK, rec.Code, "serves at once")

	// The next change keeps the replicas' revisions in step.
	applied, err := fresh.apply(twoVariants(champion.URL, candidate.URL, 60, 0))
	require.NoError(t, err)
	assert.Equal(t, int64(4), applied.Revision)

	stale := newGateway(t, Options{})
	_, err = stale.apply(twoVariants(champion.URL, candidate.URL, 0, 0)) // revision 1
	require.NoError(t, err)
	n, err = stale.SyncFromPeers(context.Background(), peers, "tok")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, 50, (*stale.routes.Load())["iris"].applied.CandidateWeight)

	// Ahead of its peers (revision 4): nothing adopted.
	n, err = fresh.SyncFromPeers(context.Background(), peers, "tok")
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	assert.Equal(t, 60, (*fresh.routes.Load())["iris"].applied.CandidateWeight)

	// A wrong token reads nothing from the peers.
	other := newGateway(t, Options{})
	n, err = other.SyncFromPeers(context.Background(), peers, "wrong")
	require.NoError(t, err)
	assert.Equal(t, 0, n)
}

// Feedback for a prediction another replica served joins there, through whichever
// replica receives it; passed on once, never back and forth.
func TestFeedbackJoinsOnThePeerThatServed(t *testing.T) {
	champion, candidate := answering(t, `{"predictions":[1]}`), answering(t, `{"predictions":[2]}`)
	var aURL, bURL string
	a, aSrv := newTestGateway(t, Options{Peers: func(context.Context) ([]string, error) { return []string{aURL, bURL}, nil }})
	b, bSrv := newTestGateway(t, Options{Peers: func(context.Context) ([]string, error) { return []string{aURL, bURL}, nil }})
	aURL, bURL = aSrv.URL, bSrv.URL
	for _, g := range []*Gateway{a, b} {
		_, err := g.apply(twoVariants(champion.URL, candidate.URL, 0, 0))
		require.NoError(t, err)
	}
	rec := serve(a, "POST", "/models/iris/invocations", "{}", nil)
	require.Equal(t, http.StatusOK, rec.Code)
	id := rec.Header().Get(RequestIDHeader)

	resp, body := post(t, bURL+"/feedback", fmt.Sprintf(`{"request_id":%q,"label":1}`, id))
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, `"outcome":"correct"`)
	assert.Equal(t, 1.0, testutil.ToFloat64(a.metrics.feedback.WithLabelValues("iris", "champion", "1", "correct")), "joined where it was served")
	assert.Equal(t, 0.0, testutil.ToFloat64(b.metrics.feedbackMisses.WithLabelValues(missUnknown)))

	// Unknown everywhere: a 404, each replica asked once (b skips itself in the list).
	resp, _ = post(t, bURL+"/feedback", `{"request_id":"never-served","label":1}`)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, 1.0, testutil.ToFloat64(a.metrics.feedbackMisses.WithLabelValues(missUnknown)))
	assert.Equal(t, 1.0, testutil.ToFloat64(b.metrics.feedbackMisses.WithLabelValues(missUnknown)))
}
