// Package analysis simulates canary releases to measure the judges: how often each
// method rolls back a candidate exactly as good as the champion when it checks at
// every interval (A/A), and how many canary requests it needs to catch a regression.
// Everything is seeded and deterministic. Figures are in bench/README.md.
package analysis

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

// Schedule is the canary: the candidate's weight at each interval and the traffic
// per interval.
type Schedule struct {
	Weights  []float64 // candidate share per interval
	Requests float64   // trials (requests, labelled predictions) per interval
}

// Rising is 5, 10, 25 and 50% for perStep intervals each, then 50% up to total.
func Rising(perStep, total int, requests float64) Schedule {
	var w []float64
	for _, s := range []float64{0.05, 0.10, 0.25, 0.50} {
		for range perStep {
			w = append(w, s)
		}
	}
	for len(w) < total {
		w = append(w, 0.50)
	}
	return Schedule{Weights: w, Requests: requests}
}

// Method names.
const (
	Naive       = "naive threshold every interval"
	MannWhitney = "Mann-Whitney re-run every interval (Kayenta)"
	ZTest       = "z-test on all data re-run every interval"
	Sequential  = "mlrelease sequential judge"
)

// Outcome is one simulated release: for each method, the canary requests seen when
// it first failed the candidate (0: never).
type Outcome map[string]float64

// Scenario generates one interval of one release.
type Scenario interface {
	// Interval draws the interval's data for nc candidate and nb champion trials.
	Interval(rnd *rand.Rand, nc, nb float64) Batch
	// Metric is the judge the plan would use.
	Metric() plan.Metric
}

// Batch is one interval's data: event counts (rate scenarios) or histogram bucket
// counts (latency).
type Batch struct {
	X, Y, NC, NB float64   // events and trials, candidate and champion
	HC, HB       []float64 // per-bucket counts, candidate and champion (latency)
}

// Rate is an event-rate scenario: errors per request, or incorrect per labelled
// prediction.
type Rate struct {
	Champion, Candidate float64
	Tolerance           float64
}

func (s Rate) Metric() plan.Metric {
	return plan.Metric{Name: "rate", Judge: plan.JudgeRate, Query: "e", TotalQuery: "t", NoData: plan.NoDataHold,
		Tolerance: s.Tolerance, MinSamples: intp(0)}
}

func (s Rate) Interval(rnd *rand.Rand, nc, nb float64) Batch {
	return Batch{X: binom(rnd, nc, s.Candidate), Y: binom(rnd, nb, s.Champion), NC: nc, NB: nb}
}

// Latency is a log-normal latency scenario on fine histogram buckets; the candidate's
// latencies are the champion's times Slowdown.
type Latency struct {
	Median, Sigma, Slowdown float64
	Bounds                  []float64
}

func (s Latency) Metric() plan.Metric {
	return plan.Metric{Name: "latency", Judge: plan.JudgeLatency, Query: "q", NoData: plan.NoDataHold, MinSamples: intp(0)}
}

func (s Latency) probs(scale float64) []float64 {
	ln := distuv.LogNormal{Mu: math.Log(s.Median * scale), Sigma: s.Sigma}
	p := make([]float64, len(s.Bounds)+1)
	prev := 0.0
	for i, b := range s.Bounds {
		c := ln.CDF(b)
		p[i] = c - prev
		prev = c
	}
	p[len(s.Bounds)] = 1 - prev
	return p
}

func (s Latency) Interval(rnd *rand.Rand, nc, nb float64) Batch {
	return Batch{NC: nc, NB: nb, HC: multinomial(rnd, nc, s.probs(s.Slowdown)), HB: multinomial(rnd, nb, s.probs(1))}
}

// Run simulates one release on the schedule and applies every method at every
// interval, each at a nominal 5%.
func Run(rnd *rand.Rand, sc Scenario, sched Schedule) Outcome {
	out := Outcome{}
	m := sc.Metric()
	lat, isLatency := sc.(Latency)
	var champHistory analysis.Counts
	if isLatency {
		// The champion's history before the canary: a day's worth of its traffic.
		champHistory = cumulative(lat.Bounds, multinomial(rnd, 100*sched.Requests, lat.probs(1)))
	}
	st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: champHistory})
	cumC, cumB := analysis.Counts{}, cloneCounts(champHistory)
	var seriesC, seriesB []float64 // per-interval values for Mann-Whitney
	var x, y, nc, nb float64       // cumulative events and trials
	for _, w := range sched.Weights {
		c := binom(rnd, sched.Requests, w)
		b := sc.Interval(rnd, c, sched.Requests-c)
		nc, nb = nc+b.NC, nb+b.NB
		fail := func(method string) {
			if out[method] == 0 {
				out[method] = nc
			}
		}
		var reading analysis.Reading
		if isLatency {
			addInto(cumC, cumulative(lat.Bounds, b.HC))
			addInto(cumB, cumulative(lat.Bounds, b.HB))
			reading = analysis.Reading{Candidate: cloneCounts(cumC), Champion: cloneCounts(cumB)}
			qc, qb := quantile(lat.Bounds, b.HC, 0.99), quantile(lat.Bounds, b.HB, 0.99)
			// Argo-style: the interval's p99 at most 10% above the champion's.
			if b.NC > 0 && qc > 1.1*qb {
				fail(Naive)
			}
			if b.NC > 0 {
				seriesC, seriesB = append(seriesC, qc), append(seriesB, qb)
			}
		} else {
			x, y = x+b.X, y+b.Y
			reading = analysis.Reading{
				Candidate: analysis.Counts{analysis.KeyEvents: x, analysis.KeyTotal: nc},
				Champion:  analysis.Counts{analysis.KeyEvents: y, analysis.KeyTotal: nb},
			}
			// A nominal 5% two-proportion test on this interval alone.
			if zTest(b.X, b.NC, b.Y, b.NB) > 1.645 {
				fail(Naive)
			}
			if zTest(x, nc, y, nb) > 1.645 {
				fail(ZTest)
			}
			if b.NC > 0 {
				seriesC, seriesB = append(seriesC, b.X/b.NC), append(seriesB, b.Y/b.NB)
			}
		}
		if len(seriesC) >= 3 {
			if _, p := analysis.MannWhitneyGreater(seriesC, seriesB); p < 0.05 {
				fail(MannWhitney)
			}
		}
		var v analysis.Verdict
		v, _, _, st = analysis.JudgeCounts(m, st, reading)
		if v == analysis.Fail {
			fail(Sequential)
		}
	}
	return out
}

// zTest is the pooled two-proportion z statistic of x/nc above y/nb.
func zTest(x, nc, y, nb float64) float64 {
	if nc == 0 || nb == 0 {
		return 0
	}
	p := (x + y) / (nc + nb)
	se := math.Sqrt(p * (1 - p) * (1/nc + 1/nb))
	if se == 0 {
		return 0
	}
	return (x/nc - y/nb) / se
}

// FixedHorizon is the canary requests a single one-sided 5% two-proportion z-test
// needs for 80% power against pc vs pb, run once at the end of the same schedule
// (expected trials per arm): the fixed-horizon sample size "sized for that same
// regression".
func FixedHorizon(sched Schedule, pc, pb float64) float64 {
	var nc, nb float64
	for _, w := range sched.Weights {
		// Step through the interval in tenths to find the crossing closely.
		for range 10 {
			nc += sched.Requests * w / 10
			nb += sched.Requests * (1 - w) / 10
			if power(nc, nb, pc, pb) >= 0.8 {
				return nc
			}
		}
	}
	return math.Inf(1)
}

func power(nc, nb, pc, pb float64) float64 {
	p := (pc*nc + pb*nb) / (nc + nb)
	se0 := math.Sqrt(p * (1 - p) * (1/nc + 1/nb))
	se1 := math.Sqrt(pc*(1-pc)/nc + pb*(1-pb)/nb)
	return distuv.UnitNormal.Survival((1.6448536269514722*se0 - (pc - pb)) / se1)
}

// ClopperPearson is the exact 95% interval of k successes in n.
func ClopperPearson(k, n int) (lo, hi float64) {
	if k > 0 {
		lo = distuv.Beta{Alpha: float64(k), Beta: float64(n - k + 1)}.Quantile(0.025)
	}
	hi = 1
	if k < n {
		hi = distuv.Beta{Alpha: float64(k + 1), Beta: float64(n - k)}.Quantile(0.975)
	}
	return lo, hi
}

// Percentile of detection sizes; runs that never detected count as +Inf.
func Percentile(sizes []float64, q float64) float64 {
	s := slices.Clone(sizes)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func binom(rnd *rand.Rand, n, p float64) float64 {
	if n <= 0 || p <= 0 {
		return 0
	}
	return distuv.Binomial{N: n, P: p, Src: rnd}.Rand()
}

func multinomial(rnd *rand.Rand, n float64, p []float64) []float64 {
	out := make([]float64, len(p))
	rest := 1.0
	for i, pi := range p {
		if n <= 0 || rest <= 0 {
			break
		}
		k := n
		if i < len(p)-1 {
			k = binom(rnd, n, math.Min(1, pi/rest))
		}
		out[i] = k
		n -= k
		rest -= pi
	}
	return out
}

func cumulative(bounds, counts []float64) analysis.Counts {
	c := analysis.Counts{}
	var cum float64
	for i, b := range bounds {
		cum += counts[i]
		c[strconv.FormatFloat(b, 'g', -1, 64)] = cum
	}
	c["+Inf"] = cum + counts[len(bounds)]
	return c
}

// quantile of one interval's bucket counts, linear within the bucket.
func quantile(bounds, counts []float64, q float64) float64 {
	var n float64
	for _, c := range counts {
		n += c
	}
	rank, below, lo := q*n, 0.0, 0.0
	for i, b := range bounds {
		if below+counts[i] >= rank && counts[i] > 0 {
			return lo + (b-lo)*(rank-below)/counts[i]
		}
		below += counts[i]
		lo = b
	}
	return lo
}

func addInto(dst, src analysis.Counts) {
	for k, v := range src {
		dst[k] += v
	}
}

func cloneCounts(c analysis.Counts) analysis.Counts {
	out := analysis.Counts{}
	for k, v := range c {
		out[k] = v
	}
	return out
}

func intp(i int) *int { return &i }
