package analysis_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/analysis"
)

// In the post-promotion watch the champion serves nothing: the rate test goes on
// with the candidate alone against the champion's rate counted during the canary.
// Seeded: a candidate as good as the champion rarely fails (at most alpha, checked
// after every batch), one with three times its error rate always does.
func TestOneSampleWatchKeepsAlphaAndCatchesRegressions(t *testing.T) {
	const (
		runs, batches = 1000, 30
		trials        = 200.0 // the candidate's requests per interval at 100%
		pb            = 0.02  // the champion's error rate during the canary
		alpha         = 0.05
	)
	threshold := math.Log(1 / alpha)
	rejectRate := func(pc float64, seed uint64) float64 {
		src := rand.New(rand.NewPCG(seed, 7))
		rejected := 0
		for range runs {
			var m analysis.RateMixture
			for range batches {
				x := distuv.Binomial{N: trials, P: pc, Src: src}.Rand()
				m.AddOneSample(x, trials, pb, 1)
				if m.LogE() >= threshold {
					rejected++
					break
				}
			}
		}
		return float64(rejected) / runs
	}
	aa := rejectRate(pb, 1)
	assert.LessOrEqual(t, aa, alpha, "a candidate as good as the champion")
	assert.Equal(t, 1.0, rejectRate(3*pb, 2), "a candidate with three times the champion's error rate")
}

// AddOneSample is the binomial likelihood ratio of each grid point against the
// null: with no events in many trials the evidence falls below 1, and a batch with
// no trials or an impossible champion rate changes nothing.
func TestAddOneSampleEdges(t *testing.T) {
	var m analysis.RateMixture
	m.AddOneSample(0, 0, 0.02, 1)
	m.AddOneSample(3, 100, 0, 1)
	m.AddOneSample(3, 100, 1, 1)
	assert.Zero(t, m.LogE(), "no evidence")
	m.AddOneSample(0, 1000, 0.02, 1)
	assert.Less(t, m.LogE(), 0.0, "no errors in 1,000 trials speaks for the candidate")
}
