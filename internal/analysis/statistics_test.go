package analysis_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

// Known answers in this file come from SciPy 1.17.1 / NumPy 2.4.6 (Python 3), each
// call written beside its number.

func TestMannWhitneyGreaterKnownAnswers(t *testing.T) {
	x := []float64{0.012, 0.015, 0.011, 0.02, 0.018, 0.015, 0.022, 0.013}
	y := []float64{0.010, 0.011, 0.009, 0.015, 0.012, 0.010, 0.011, 0.014, 0.013, 0.010}
	// scipy.stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
	// -> statistic=68.0, pvalue=0.006922036861878896 (ties at 0.010, 0.011, 0.012,
	// 0.013, 0.015)
	u, p := analysis.MannWhitneyGreater(x, y)
	assert.Equal(t, 68.0, u)
	assert.InDelta(t, 0.006922036861878896, p, 1e-12)
	// scipy.stats.mannwhitneyu(y, x, alternative="greater", method="asymptotic")
	// -> statistic=12.0, pvalue=0.9946259730350224
	u, p = analysis.MannWhitneyGreater(y, x)
	assert.Equal(t, 12.0, u)
	assert.InDelta(t, 0.9946259730350224, p, 1e-12)

	_, p = analysis.MannWhitneyGreater(nil, y)
	assert.Equal(t, 1.0, p, "no sample, no evidence")
}

func TestDriftKnownAnswers(t *testing.T) {
	champion := []float64{100, 320, 400, 140, 40}
	near := []float64{120, 300, 380, 150, 50}
	shifted := []float64{10, 50, 200, 400, 340}
	// p, q = c/c.sum(), b/b.sum(); numpy.sum((p-q)*numpy.log(p/q)) -> 0.008884431674393138
	assert.InDelta(t, 0.008884431674393138, analysis.PSI(near, champion), 1e-12)
	// scipy.spatial.distance.jensenshannon(p, q, base=2)**2 -> 0.0016003632628113207
	// (SciPy returns the distance, the square root of the divergence)
	assert.InDelta(t, 0.0016003632628113207, analysis.JensenShannon(near, champion), 1e-12)
	// the same for the shifted histogram -> 1.7620361532987099 and 0.27948153862944297
	assert.InDelta(t, 1.7620361532987099, analysis.PSI(shifted, champion), 1e-12)
	assert.InDelta(t, 0.27948153862944297, analysis.JensenShannon(shifted, champion), 1e-12)

	assert.Equal(t, 0.0, analysis.PSI(champion, champion))
	assert.Equal(t, 0.0, analysis.JensenShannon(champion, champion))
	assert.InDelta(t, 1.0, analysis.JensenShannon([]float64{1, 0}, []float64{0, 1}), 1e-12, "disjoint: the maximum")
	assert.True(t, math.IsNaN(analysis.PSI(nil, champion)), "no data is no number")
}

// The rate mixture's e-value, computed independently from binomial probabilities:
//
//	K, U = 64, 4.5; u = (numpy.arange(K) + 0.5) * U / K
//	w = 0.85*stats.halfnorm.pdf(u, scale=0.35) + 0.15*stats.halfnorm.pdf(u, scale=2.0); w /= w.sum()
//	E = sum(w * prod_t stats.binom.pmf(x_t, x_t+y_t, theta_t(rho0*exp(u))) / stats.binom.pmf(x_t, x_t+y_t, theta_t(rho0)))
//	with theta_t(rho) = nc_t*rho / (nc_t*rho + nb_t)
func TestRateMixtureKnownAnswers(t *testing.T) {
	type batch struct{ x, y, nc, nb float64 }
	e := func(rho0 float64, bs ...batch) float64 {
		var m analysis.RateMixture
		for _, b := range bs {
			m.Add(b.x, b.y, b.nc, b.nb, rho0)
		}
		return math.Exp(m.LogE())
	}
	// one batch, canary at 20%: 12 of 42 errors on the canary -> E = 1.6430222640759387
	assert.InDelta(t, 1.6430222640759387, e(1, batch{12, 30, 1000, 4000}), 1e-9)
	// three batches with the split rising 10%, 20%, 50% -> E = 0.2422163286134953;
	// with a tolerated increase of 10% (rho0 = 1.1) -> 0.1950769150777019
	rising := []batch{{3, 40, 500, 4500}, {9, 35, 1000, 4000}, {22, 30, 2500, 2500}}
	assert.InDelta(t, 0.2422163286134953, e(1, rising...), 1e-9)
	assert.InDelta(t, 0.1950769150777019, e(1.1, rising...), 1e-9)
	// a broken canary (half its requests fail) at 1/3 of the traffic, two batches
	// -> E = 96.9571643246083
	assert.InDelta(t, 96.9571643246083, e(1.1, batch{4, 0, 8, 16}, batch{4, 0, 8, 16}), 1e-7)

	assert.Equal(t, 1.0, e(1), "no evidence: E = 1")
	assert.Equal(t, 1.0, e(1, batch{0, 0, 100, 100}, batch{5, 5, 0, 100}), "batches without events or trials change nothing")
}

// The rate judge's exact test on 2x2 tables, computed independently from SciPy's
// Fisher noncentral hypergeometric law (same grid u and weights w as above):
//
//	f(b, psi) = stats.nchypergeom_fisher.logpmf(x, nc+nb, nc, x+y, psi) for b = (x, y, nc, nb)
//	E = sum(w * exp(sum_t f(b_t, psi0*exp(u)) - f(b_t, psi0)))
func TestRateTableKnownAnswers(t *testing.T) {
	type batch struct{ x, y, nc, nb float64 }
	e := func(psi0 float64, bs ...batch) float64 {
		var m analysis.RateMixture
		for _, b := range bs {
			m.AddTable(b.x, b.y, b.nc, b.nb, psi0)
		}
		return math.Exp(m.LogE())
	}
	// The rare-event batches of TestRateMixtureKnownAnswers: nearly the binomial
	// test's answers (1.6430, 0.2422) -> 1.652015987421088 and 0.24267649506906946
	assert.InDelta(t, 1.652015987421088, e(1, batch{12, 30, 1000, 4000}), 1e-9)
	rising := []batch{{3, 40, 500, 4500}, {9, 35, 1000, 4000}, {22, 30, 2500, 2500}}
	assert.InDelta(t, 0.24267649506906946, e(1, rising...), 1e-9)
	// Labelled outcomes, about 10% incorrect, the canary at 5, 10, 25, 50%
	// -> 6.587507770836712; against psi0 = 1.1*0.9/(1-0.11) = 1.1123595505617978
	// (a tolerated 10% on a 10% rate) -> 1.5862759081489897
	acc := []batch{{7, 95, 50, 950}, {14, 88, 100, 900}, {31, 74, 250, 750}, {62, 48, 500, 500}}
	assert.InDelta(t, 6.587507770836712, e(1, acc...), 1e-9)
	assert.InDelta(t, 1.5862759081489897, e(1.1123595505617978, acc...), 1e-9)
	// A broken canary, two small batches -> 222.8062959854776
	assert.InDelta(t, 222.8062959854776, e(1.1, batch{4, 0, 8, 16}, batch{4, 0, 8, 16}), 1e-7)
	// Large counts (the normalizer summed over a window around the mode)
	// -> 667963418.4508458
	assert.InDelta(t, 667963418.4508458, e(1, batch{1300, 1000, 10000, 10000}), 1e-9*667963418.4508458)

	assert.Equal(t, 1.0, e(1), "no evidence: E = 1")
	assert.Equal(t, 1.0, e(1, batch{0, 0, 100, 100}, batch{5, 5, 0, 100}, batch{10, 10, 10, 10}),
		"batches without events, without trials, or all events change nothing")
}

// With a tolerance, the judge's null odds ratio comes from the champion's counters
// before each batch: history 1000/10000, tolerance 0.1 -> psi0 = 1.1123595505617978
// for the first batch, then 1.1*(1-p)/(1-1.1p) with p = 1095/10950 for the second
// (SciPy as above): E = 0.988172733579668, then 1.3075913684488762.
func TestJudgeRateToleranceKnownAnswers(t *testing.T) {
	m := plan.Metric{Name: "accuracy", Judge: plan.JudgeRate, Query: "incorrect", TotalQuery: "labelled",
		Tolerance: 0.1, NoData: plan.NoDataHold}
	cum := func(ce, ct, be, bt float64) analysis.Reading {
		return analysis.Reading{
			Candidate: analysis.Counts{analysis.KeyEvents: ce, analysis.KeyTotal: ct},
			Champion:  analysis.Counts{analysis.KeyEvents: be, analysis.KeyTotal: bt},
		}
	}
	st := analysis.Start(cum(0, 0, 1000, 10000))
	_, _, ev, st := analysis.JudgeCounts(m, st, cum(7, 50, 1095, 10950))
	assert.InDelta(t, 0.988172733579668, *ev.EValue, 1e-9)
	_, _, ev, _ = analysis.JudgeCounts(m, st, cum(21, 150, 1183, 11850))
	assert.InDelta(t, 1.3075913684488762, *ev.EValue, 1e-9)

	// Without the champion's history there is no null to test against yet.
	_, _, ev, _ = analysis.JudgeCounts(m, analysis.Start(cum(0, 0, 0, 0)), cum(7, 50, 95, 950))
	assert.Equal(t, 1.0, *ev.EValue)
}
