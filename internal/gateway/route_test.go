package gateway

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

func traffic(weight, shadow int) deploy.Traffic {
	return deploy.Traffic{
		Model:           "iris",
		Champion:        deploy.Backend{Version: "1", URL: "http://champion"},
		Candidate:       &deploy.Backend{Version: "2", URL: "http://candidate"},
		CandidateWeight: weight,
		ShadowShare:     shadow,
	}
}

func TestPickExtremesAreExact(t *testing.T) {
	for _, u := range []float64{0, 0.1, 0.5, math.Nextafter(1, 0)} {
		v, b := Pick(traffic(0, 0), u)
		assert.Equal(t, deploy.Champion, v, "weight 0, u=%v", u)
		assert.Equal(t, "1", b.Version)

		v, b = Pick(traffic(100, 0), u)
		assert.Equal(t, deploy.Candidate, v, "weight 100, u=%v", u)
		assert.Equal(t, "2", b.Version)

		noCandidate := traffic(0, 0)
		noCandidate.Candidate = nil
		v, _ = Pick(noCandidate, u)
		assert.Equal(t, deploy.Champion, v, "no candidate, u=%v", u)
	}
}

func TestPickBoundary(t *testing.T) {
	// [0, w/100) is the candidate's share, so its upper edge belongs to the champion.
	v, _ := Pick(traffic(10, 0), 0.1)
	assert.Equal(t, deploy.Champion, v)
	v, _ = Pick(traffic(10, 0), math.Nextafter(0.1, 0))
	assert.Equal(t, deploy.Candidate, v)
}

func TestPickShareMatchesWeight(t *testing.T) {
	const n = 20000
	for _, weight := range []int{1, 10, 50, 90} {
		r := rand.New(rand.NewPCG(1, uint64(weight)))
		got := 0
		for range n {
			if v, _ := Pick(traffic(weight, 0), r.Float64()); v == deploy.Candidate {
				got++
			}
		}
		p := float64(weight) / 100
		want, sigma := n*p, math.Sqrt(n*p*(1-p))
		assert.InDelta(t, want, float64(got), 5*sigma, "weight %d", weight)
	}
}

func TestMirrored(t *testing.T) {
	assert.False(t, Mirrored(traffic(0, 0), 0))
	assert.True(t, Mirrored(traffic(0, 100), math.Nextafter(1, 0)))
	assert.True(t, Mirrored(traffic(0, 30), 0.29))
	assert.False(t, Mirrored(traffic(0, 30), 0.3))
	noCandidate := traffic(0, 0)
	noCandidate.Candidate, noCandidate.ShadowShare = nil, 100
	assert.False(t, Mirrored(noCandidate, 0))
}

func TestUpstreamURL(t *testing.T) {
	for _, tc := range []struct{ target, rest, query, want string }{
		{"http://m:8080", "invocations", "", "http://m:8080/invocations"},
		{"http://m:8080/", "invocations", "", "http://m:8080/invocations"},
		{"http://m:8080/v2/", "models/x/infer", "a=1", "http://m:8080/v2/models/x/infer?a=1"},
		{"http://m:8080/v2?key=k", "ping", "a=1", "http://m:8080/v2/ping?key=k&a=1"},
		{"http://m:8080", "", "", "http://m:8080/"},
	} {
		target, err := parseUpstream("champion", tc.target)
		if assert.NoError(t, err) {
			assert.Equal(t, tc.want, upstreamURL(target, tc.rest, tc.query).String())
		}
	}
}

func TestParseUpstreamRefuses(t *testing.T) {
	for _, raw := range []string{"champion:8080", "/relative", "ftp://m/x", "http://user:pw@m/", "http://%zz"} {
		_, err := parseUpstream("champion", raw)
		assert.ErrorIs(t, err, deploy.ErrInvalid, raw)
		assert.NotContains(t, err.Error(), "pw", "credentials must not be echoed")
	}
}
