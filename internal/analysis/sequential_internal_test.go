package analysis

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

// logZWalk is logZ by the walk alone, whatever the law's width: the reference for
// the trapezoid rule that logZ takes for wide laws.
func (t table) logZWalk(lpsi float64) float64 {
	psi := math.Exp(lpsi)
	start := math.Round(math.Max(t.lo, math.Min(t.hi, t.mode(psi))))
	f0 := t.lterm(start) + start*lpsi
	s, term := 1.0, 1.0
	for u := start; u < t.hi; u++ {
		term *= t.ratio(u) * psi
		s += term
		if term < 1e-17*s {
			break
		}
	}
	term = 1
	for u := start; u > t.lo; u-- {
		term /= t.ratio(u-1) * psi
		s += term
		if term < 1e-17*s {
			break
		}
	}
	return f0 + math.Log(s)
}

// The trapezoid rule over a wide law agrees with the exact sum to float precision,
// at every grid point's odds, and logZ picks it only where it is that accurate.
func TestLogZSmoothMatchesWalk(t *testing.T) {
	for _, c := range []struct{ nc, nb, m float64 }{
		{2e6, 8e6, 1e5},     // sd about 89
		{5e7, 5e7, 1e6},     // sd about 350
		{1e8, 9e8, 3e7},     // sd about 1600
		{3e5, 3e5, 2.9e5},   // events common on both arms
		{1e9, 1e9, 1e9 - 5}, // nearly every trial an event: narrow, walked
	} {
		tb := newTable(c.nc, c.nb, c.m)
		for _, lpsi := range []float64{0, 0.1, 0.7, 2, 4.5} {
			lpsi += math.Log(1.1)
			got, want := tb.logZ(lpsi), tb.logZWalk(lpsi)
			assert.InDelta(t, want, got, 1e-6*math.Max(1, math.Abs(want)*1e-9), "nc %g nb %g m %g lpsi %g", c.nc, c.nb, c.m, lpsi)
		}
	}
}
