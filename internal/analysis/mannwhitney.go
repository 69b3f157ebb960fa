package analysis

import (
	"math"
	"sort"

	"gonum.org/v1/gonum/stat/distuv"
)

// MannWhitneyGreater is the Mann-Whitney U test that x tends to be greater than y,
// as Spinnaker Kayenta's judge runs it on a canary's and a baseline's metric
// samples: U is x's statistic, the p-value one-sided from the normal approximation
// with tie and continuity corrections (SciPy's stats.mannwhitneyu(x, y,
// alternative="greater", method="asymptotic")). It is a fixed-horizon test: run again
// at every interval on the data so far, its false-rollback rate grows with every look.
func MannWhitneyGreater(x, y []float64) (u, p float64) {
	n1, n2 := float64(len(x)), float64(len(y))
	if n1 == 0 || n2 == 0 {
		return 0, 1
	}
	type obs struct {
		v float64
		x bool
	}
	all := make([]obs, 0, len(x)+len(y))
	for _, v := range x {
		all = append(all, obs{v, true})
	}
	for _, v := range y {
		all = append(all, obs{v, false})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v < all[j].v })
	var r1, ties float64
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].v == all[i].v {
			j++
		}
		rank := float64(i+j+1) / 2 // mean of ranks i+1..j
		t := float64(j - i)
		ties += t*t*t - t
		for k := i; k < j; k++ {
			if all[k].x {
				r1 += rank
			}
		}
		i = j
	}
	u = r1 - n1*(n1+1)/2
	n := n1 + n2
	mu := n1 * n2 / 2
	s := math.Sqrt(n1 * n2 / 12 * ((n + 1) - ties/(n*(n-1))))
	if s == 0 {
		return u, 1
	}
	z := (u - mu - 0.5) / s
	return u, distuv.UnitNormal.Survival(z)
}
