package deploy_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/deploy"
	"github.com/mlrelease/mlrelease/internal/gateway"
)

const token = "s3cret-admin-token"

// realGateway serves the real gateway's Handler, so the client is tested against the
// API it will drive.
func realGateway(t *testing.T) *httptest.Server {
	t.Helper()
	g, err := gateway.New(gateway.Options{AdminToken: token, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		srv.Close()
		assert.NoError(t, g.Shutdown(context.Background()))
	})
	return srv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func irisTraffic(weight int) deploy.Traffic {
	return deploy.Traffic{
		Model:           "iris",
		Champion:        deploy.Backend{Version: "1", URL: "http://champion:8080"},
		Candidate:       &deploy.Backend{Version: "2", URL: "http://candidate:8080"},
		CandidateWeight: weight,
	}
}

func TestGatewayApplyIsIdempotentAndCurrentReadsBack(t *testing.T) {
	srv := realGateway(t)
	var d deploy.Deployer = deploy.NewGateway(srv.URL+"/", token, srv.Client())

	_, err := d.Current(ctx(t), "iris")
	assert.ErrorIs(t, err, deploy.ErrNotFound)

	a, err := d.Apply(ctx(t), irisTraffic(10))
	require.NoError(t, err)
	assert.Equal(t, int64(1), a.Revision)
	assert.Equal(t, irisTraffic(10), a.Traffic)

	again, err := d.Apply(ctx(t), irisTraffic(10))
	require.NoError(t, err)
	assert.Equal(t, a, again, "applying the same traffic twice changes nothing")

	next, err := d.Apply(ctx(t), irisTraffic(50))
	require.NoError(t, err)
	assert.Equal(t, int64(2), next.Revision)

	cur, err := d.Current(ctx(t), "iris")
	require.NoError(t, err)
	assert.Equal(t, next, cur)
}

func TestGatewayInvalidTraffic(t *testing.T) {
	srv := realGateway(t)
	d := deploy.NewGateway(srv.URL, token, srv.Client())

	// Refused by the client's own check.
	_, err := d.Apply(ctx(t), irisTraffic(150))
	assert.ErrorIs(t, err, deploy.ErrInvalid)
	assert.Contains(t, err.Error(), "candidateWeight 150")

	// Refused by the gateway, which also checks the URLs.
	bad := irisTraffic(10)
	bad.Champion.URL = "champion:8080"
	_, err = d.Apply(ctx(t), bad)
	assert.ErrorIs(t, err, deploy.ErrInvalid)
	assert.Contains(t, err.Error(), `champion url "champion:8080"`)
	assert.Equal(t, 1, strings.Count(err.Error(), deploy.ErrInvalid.Error()), "no stutter: %v", err)

	_, err = d.Current(ctx(t), "iris")
	assert.ErrorIs(t, err, deploy.ErrNotFound, "nothing was applied")
}

func TestGatewayWrongTokenIsUnauthorized(t *testing.T) {
	srv := realGateway(t)
	for _, tok := range []string{"", "wrong-token"} {
		d := deploy.NewGateway(srv.URL, tok, srv.Client())
		_, err := d.Apply(ctx(t), irisTraffic(10))
		assert.ErrorIs(t, err, deploy.ErrUnauthorized)
		assert.False(t, errors.Is(err, deploy.ErrInvalid))
		_, err = d.Current(ctx(t), "iris")
		assert.ErrorIs(t, err, deploy.ErrUnauthorized)
		assert.NotContains(t, err.Error(), token)
		if tok != "" {
			assert.NotContains(t, err.Error(), tok)
		}
	}
}

func TestGatewayServerAndNetworkErrorsArePlain(t *testing.T) {
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	d := deploy.NewGateway(failing.URL, token, failing.Client())
	_, err := d.Apply(ctx(t), irisTraffic(10))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "503")
	assert.Contains(t, err.Error(), "overloaded")
	for _, sentinel := range []error{deploy.ErrInvalid, deploy.ErrNotFound, deploy.ErrUnauthorized} {
		assert.False(t, errors.Is(err, sentinel), "5xx must stay retryable, not %v", sentinel)
	}
	assert.NotContains(t, err.Error(), token)

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	_, err = deploy.NewGateway(gone.URL, token, nil).Current(ctx(t), "iris")
	require.Error(t, err)
	assert.False(t, errors.Is(err, deploy.ErrNotFound))
	assert.NotContains(t, err.Error(), token)
}

// Every replica of a gateway gets each change; one that is down makes the change fail,
// retryably, naming it, and gets it on the next try.
func TestGatewayReplicas(t *testing.T) {
	a, b := realGateway(t), realGateway(t)
	down := realGateway(t)
	downURL := down.URL
	down.Close()
	// dns+ with an address resolves to that address alone.
	both := deploy.NewGateway(a.URL+", dns+"+b.URL+"/", token, nil)

	applied, err := both.Apply(ctx(t), irisTraffic(10))
	require.NoError(t, err)
	assert.Equal(t, int64(1), applied.Revision)
	for _, srv := range []string{a.URL, b.URL} {
		cur, err := deploy.NewGateway(srv, token, nil).Current(ctx(t), "iris")
		require.NoError(t, err)
		assert.Equal(t, 10, cur.CandidateWeight, srv)
	}
	cur, err := both.Current(ctx(t), "iris")
	require.NoError(t, err)
	assert.Equal(t, 10, cur.CandidateWeight)

	three := deploy.NewGateway(strings.Join([]string{a.URL, b.URL, downURL}, ","), token, nil)
	_, err = three.Apply(ctx(t), irisTraffic(50))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "replica "+downURL)
	assert.False(t, errors.Is(err, deploy.ErrInvalid) || errors.Is(err, deploy.ErrNotFound), "a replica that is down is retried: %v", err)

	// The two that answered hold 50% now, so they agree; one behind makes Current fail.
	_, err = deploy.NewGateway(a.URL, token, nil).Apply(ctx(t), irisTraffic(60))
	require.NoError(t, err)
	_, err = both.Current(ctx(t), "iris")
	assert.ErrorContains(t, err, "replicas disagree")
}
