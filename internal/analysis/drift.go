package analysis

import "math"

// driftFloor replaces an empty bin's share in PSI, whose log is undefined at zero; it
// is the usual convention (a bin with no observations counts as 0.01% of them).
const driftFloor = 1e-4

// PSI is the population stability index of the candidate's bin counts against the
// champion's: sum over bins of (p - q) ln(p / q), p and q the bins' shares. By
// convention below 0.1 is stable, 0.1 to 0.25 a shift worth watching, above 0.25 a
// shift. Bins empty on both sides are left out; a share of 0 on one side counts as
// driftFloor.
func PSI(candidate, champion []float64) float64 {
	p, q := shares(candidate), shares(champion)
	if p == nil || q == nil {
		return math.NaN()
	}
	var psi float64
	for i := range p {
		if p[i] == 0 && q[i] == 0 {
			continue
		}
		a, b := math.Max(p[i], driftFloor), math.Max(q[i], driftFloor)
		psi += (a - b) * math.Log(a/b)
	}
	return psi
}

// JensenShannon is the Jensen-Shannon divergence (base 2, so 0..1) between the
// candidate's and the champion's bin shares: the mean Kullback-Leibler divergence of
// each from their average. It needs no floor: the average is positive wherever
// either is.
func JensenShannon(candidate, champion []float64) float64 {
	p, q := shares(candidate), shares(champion)
	if p == nil || q == nil {
		return math.NaN()
	}
	var js float64
	for i := range p {
		m := (p[i] + q[i]) / 2
		if p[i] > 0 {
			js += p[i] * math.Log2(p[i]/m) / 2
		}
		if q[i] > 0 {
			js += q[i] * math.Log2(q[i]/m) / 2
		}
	}
	return math.Max(js, 0)
}

// shares turns counts into shares; nil when there are none or the lengths differ
// from what the caller compares (checked by the caller through nil).
func shares(counts []float64) []float64 {
	var n float64
	for _, c := range counts {
		n += math.Max(c, 0)
	}
	if n == 0 {
		return nil
	}
	out := make([]float64, len(counts))
	for i, c := range counts {
		out[i] = math.Max(c, 0) / n
	}
	return out
}
