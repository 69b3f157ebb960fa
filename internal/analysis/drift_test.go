package analysis_test

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

func multinomialDraw(rnd *rand.Rand, n float64, p []float64) []float64 {
	out := make([]float64, len(p))
	rest := 1.0
	for i, pi := range p {
		if n <= 0 {
			break
		}
		k := n
		if i < len(p)-1 {
			k = distuv.Binomial{N: n, P: math.Min(1, pi/rest), Src: rnd}.Rand()
		}
		out[i], n, rest = k, n-k, rest-pi
	}
	return out
}

// A/A at the minimum sample: a candidate drawn from the champion's own score
// distribution over 20 buckets, judged every round from its first observations on
// (minSamples 0: the judge's own minimum), fails in at most alpha of 2,000 seeded
// releases, with the champion at 9 and at 1 times the candidate's traffic. The
// minimum grows with the buckets.
func TestDriftAAAtTheMinimum(t *testing.T) {
	bounds := make([]float64, 19)
	for i := range bounds {
		bounds[i] = float64(i+1) / 20
	}
	skewed := make([]float64, 20) // scores pile up near 1, as a confident classifier's
	var sum float64
	for i := range skewed {
		skewed[i] = math.Pow(1.4, float64(i))
		sum += skewed[i]
	}
	for i := range skewed {
		skewed[i] /= sum
	}
	uniform := make([]float64, 20)
	for i := range uniform {
		uniform[i] = 0.05
	}
	const alpha, runs = 0.05, 2000
	m := plan.Metric{Name: "drift", Judge: plan.JudgeDrift, Query: "q", NoData: plan.NoDataHold, MinSamples: intp(0), Alpha: alpha}
	need := analysis.DriftMinimum(m, 20, math.Inf(1))
	assert.Greater(t, need, analysis.DriftMinimum(m, 5, math.Inf(1)), "more buckets, more samples")
	for _, c := range []struct {
		name  string
		p     []float64
		ratio float64
	}{{"skewed, champion 9x", skewed, 9}, {"uniform, champion 9x", uniform, 9}, {"skewed, champion 1x", skewed, 1}} {
		rnd := rand.New(rand.NewPCG(42, uint64(c.ratio)))
		fails := 0
		for range runs {
			st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: analysis.Counts{}})
			cand, champ := analysis.Counts{}, analysis.Counts{}
			for range 12 { // batches of a tenth of the minimum, on to past it
				cand = addCounts(cand, histogram(bounds, multinomialDraw(rnd, need/10, c.p)))
				champ = addCounts(champ, histogram(bounds, multinomialDraw(rnd, c.ratio*need/10, c.p)))
				var v analysis.Verdict
				v, _, _, st = analysis.JudgeCounts(m, st, analysis.Reading{Candidate: cand, Champion: champ})
				if v == analysis.Fail {
					fails++
					break
				}
			}
		}
		lo, _ := clopperPearson(fails, runs)
		t.Logf("%s: minimum %.0f, %d of %d A/A releases failed", c.name, need, fails, runs)
		assert.LessOrEqual(t, lo, alpha, c.name)
		assert.LessOrEqual(t, float64(fails)/runs, alpha, c.name)
	}
}

func histogram(bounds, counts []float64) analysis.Counts {
	c := analysis.Counts{}
	var cum float64
	for i, b := range bounds {
		cum += counts[i]
		c[strconv.FormatFloat(b, 'g', -1, 64)] = cum
	}
	c["+Inf"] = cum + counts[len(bounds)]
	return c
}

func clopperPearson(k, n int) (lo, hi float64) {
	if k > 0 {
		lo = distuv.Beta{Alpha: float64(k), Beta: float64(n - k + 1)}.Quantile(0.025)
	}
	hi = 1
	if k < n {
		hi = distuv.Beta{Alpha: float64(k + 1), Beta: float64(n - k)}.Quantile(0.975)
	}
	return lo, hi
}
