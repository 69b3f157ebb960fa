package analysis

import (
	"math"
	"math/rand/v2"
	"strconv"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/plan"
)

// Release simulates whole releases under a plan's statistical metrics (the demo
// plan's error-rate, latency and prediction-drift judges, with their shares of the
// release's error budget), stage by stage as the workflow runs them: a shadow soak
// (the candidate gets a copy of every request), canary steps whose bakes are
// concluded by analysis.Tally (a metric without a passing measurement extends the
// step, up to its hold limit), and a post-promotion watch in which the old champion
// keeps the plan's holdout. The sequential judges' state goes on from the canary
// through the watch, as the workflow carries it.
type Release struct {
	Metrics  []plan.Metric // the statistical metrics (rate, latency, drift), in this order
	Requests float64       // live requests per interval
	Shadow   int           // shadow intervals
	Steps    []int         // canary weights, each baked BakeIntervals
	Bake     int
	Holdout  int // the old champion's percentage during the watch
	Watch    int // watch intervals (the longest simulated)
}

// World is what the simulated versions do: their error rates, latencies and scores,
// interval by interval.
type World struct {
	// ErrorRate is the arms' error rate at interval t of a stage (watch: t counts
	// from promotion).
	ErrorRate func(stage string, t int) (champion, candidate float64)
	// LatencyScale multiplies both arms' latencies (a busy hour), by stage.
	LatencyScale func(stage string, t int) float64
	// Slow is the share of the candidate's requests that take SlowBy seconds more.
	Slow, SlowBy float64
	// RestartAt restarts one of two gateway replicas at this canary interval (its
	// counters of both arms go to zero); -1 never.
	RestartAt int
}

// Outcome of one simulated release: where it was rolled back, if it was.
type ReleaseOutcome struct {
	Stage    string // "" when never rolled back within the simulated watch
	Interval int    // within the stage (watch: from promotion, 1-based)
	Metric   string
	// CanaryRequests is the candidate's canary requests when the canary failed.
	CanaryRequests float64
}

// Latency model: log-normal, median 50 ms, sigma 0.5 (p99 160 ms); scores: a
// confident classifier's largest class probability, Beta(8, 1.5).
var (
	latency = distuv.LogNormal{Mu: math.Log(0.05), Sigma: 0.5}
	scores  = distuv.Beta{Alpha: 8, Beta: 1.5}
)

// nativeBounds are the gateway's native histogram bounds (schema 3: 2^(k/8)) from
// 1 ms to 16 s.
func nativeBounds() []float64 {
	var b []float64
	for k := -80; k <= 32; k++ {
		b = append(b, math.Pow(2, float64(k)/8))
	}
	return b
}

// scoreBounds are the gateway's prediction-score buckets 0.05, 0.1, ..., 1.
func scoreBounds() []float64 {
	b := make([]float64, 20)
	for i := range b {
		b[i] = float64(i+1) / 20
	}
	return b
}

// probs are a distribution's bucket probabilities on bounds (+Inf last).
func probs(cdf func(float64) float64, bounds []float64) []float64 {
	p := make([]float64, len(bounds)+1)
	prev := 0.0
	for i, b := range bounds {
		c := cdf(b)
		p[i] = math.Max(c-prev, 0)
		prev = math.Max(c, prev)
	}
	p[len(bounds)] = math.Max(1-prev, 0)
	return p
}

// arm is one version's cumulative counters, per bucket (not cumulative) so that a
// replica's restart can be taken out: readings sum the replicas.
type arm struct {
	events, total float64
	lat, score    []float64
	// what the restarted replica had counted, taken out of every reading after
	offEvents, offTotal float64
	offLat, offScore    []float64
}

func newArm(nl, ns int) *arm {
	return &arm{lat: make([]float64, nl), score: make([]float64, ns), offLat: make([]float64, nl), offScore: make([]float64, ns)}
}

// restart takes out what the restarted replica (half the traffic) had counted.
func (a *arm) restart(rnd *rand.Rand) {
	half := func(x float64) float64 { return binom(rnd, x, 0.5) }
	a.offEvents = half(a.events)
	a.offTotal = a.offEvents + half(a.total-a.events)
	for i := range a.lat {
		a.offLat[i] = half(a.lat[i])
	}
	for i := range a.score {
		a.offScore[i] = half(a.score[i])
	}
}

func (a *arm) rate() analysis.Counts {
	return analysis.Counts{analysis.KeyEvents: a.events - a.offEvents, analysis.KeyTotal: a.total - a.offTotal}
}

func labels(bounds []float64) []string {
	out := make([]string, len(bounds))
	for i, b := range bounds {
		out[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return out
}

var nativeLabels, scoreLabels = labels(nativeBounds()), labels(scoreBounds())

func cumulativeSparse(les []string, counts, off []float64) analysis.Counts {
	c := analysis.Counts{}
	var cum float64
	for i, le := range les {
		n := counts[i] - off[i]
		cum += n
		if n > 0 { // a native histogram lists only the buckets that hold observations
			c[le] = cum
		}
	}
	c["+Inf"] = cum + counts[len(les)] - off[len(les)]
	return c
}

func cumulativeAll(les []string, counts, off []float64) analysis.Counts {
	c := analysis.Counts{}
	var cum float64
	for i, le := range les {
		cum += counts[i] - off[i]
		c[le] = cum
	}
	c["+Inf"] = cum + counts[len(les)] - off[len(les)]
	return c
}

// Run simulates one release.
func (r Release) Run(rnd *rand.Rand, w World) ReleaseOutcome {
	lb, sb := nativeBounds(), scoreBounds()
	champ, cand := newArm(len(lb)+1, len(sb)+1), newArm(len(lb)+1, len(sb)+1)
	scoreP := probs(scores.CDF, sb)
	latP := map[float64][]float64{}
	latProbs := func(scale, slow float64) []float64 {
		key := scale*1e3 + slow
		if p, ok := latP[key]; ok {
			return p
		}
		p := probs(func(x float64) float64 {
			base := latency.CDF(x / scale)
			if slow == 0 {
				return base
			}
			return (1-slow)*base + slow*latency.CDF(math.Max(x-w.SlowBy, 0)/scale)
		}, lb)
		latP[key] = p
		return p
	}
	serve := func(a *arm, n, errRate, scale, slow float64) {
		if n <= 0 {
			return
		}
		a.total += n
		a.events += binom(rnd, n, errRate)
		addTo(a.lat, multinomial(rnd, n, latProbs(scale, slow)))
		addTo(a.score, multinomial(rnd, n, scoreP))
	}
	reading := func(m plan.Metric) analysis.Reading {
		switch m.Judge {
		case plan.JudgeRate:
			return analysis.Reading{Candidate: cand.rate(), Champion: champ.rate()}
		case plan.JudgeLatency:
			return analysis.Reading{Candidate: cumulativeSparse(nativeLabels, cand.lat, cand.offLat), Champion: cumulativeSparse(nativeLabels, champ.lat, champ.offLat)}
		}
		return analysis.Reading{Candidate: cumulativeAll(scoreLabels, cand.score, cand.offScore), Champion: cumulativeAll(scoreLabels, champ.score, champ.offScore)}
	}
	// The champion's history: a hundred intervals before the release.
	er, _ := w.ErrorRate("shadow", 0)
	serve(champ, 100*r.Requests, er, w.LatencyScale("shadow", 0), 0)

	states := make([]analysis.JudgeState, len(r.Metrics))
	start := func() {
		for i, m := range r.Metrics {
			states[i] = analysis.Start(reading(m))
		}
	}
	var out ReleaseOutcome
	var canaryRequests float64
	// bake runs one bake of d intervals at the given split; it returns false when
	// the release is rolled back.
	bake := func(stage string, d int, t0 *int, split func() (nc, nb float64, mirror bool)) bool {
		tally := analysis.NewTally(r.Metrics)
		for elapsed := 1; ; elapsed++ {
			*t0++
			t := *t0
			if stage == "canary" && t == w.RestartAt {
				champ.restart(rnd)
				cand.restart(rnd)
			}
			scale := w.LatencyScale(stage, t)
			nc, nb, mirror := split()
			cr, br := errorRates(w, stage, t)
			serve(champ, nb, br, scale, 0)
			serve(cand, nc, cr, scale, w.Slow)
			if stage == "canary" && !mirror {
				canaryRequests += nc
			}
			ms := make([]analysis.Measurement, len(r.Metrics))
			for i, m := range r.Metrics {
				var v analysis.Verdict
				var msg string
				v, msg, _, states[i] = analysis.JudgeCounts(m, states[i], reading(m))
				ms[i] = analysis.Measurement{Metric: m.Name, Verdict: v, Message: msg}
			}
			if reason := tally.Add(ms); reason != "" {
				out = ReleaseOutcome{Stage: stage, Interval: t, Metric: failedMetric(ms), CanaryRequests: canaryRequests}
				return false
			}
			if elapsed < d {
				continue
			}
			switch v, _ := tally.Conclude(); v {
			case analysis.Pass:
				return true
			case analysis.Fail:
				out = ReleaseOutcome{Stage: stage, Interval: t, Metric: "conclude", CanaryRequests: canaryRequests}
				return false
			}
		}
	}
	t := 0
	if r.Shadow > 0 {
		start()
		if !bake("shadow", r.Shadow, &t, func() (float64, float64, bool) { return r.Requests, r.Requests, true }) {
			return out
		}
	}
	t = 0
	start()
	for _, wgt := range r.Steps {
		share := float64(wgt) / 100
		if !bake("canary", r.Bake, &t, func() (float64, float64, bool) {
			c := binom(rnd, r.Requests, share)
			return c, r.Requests - c, false
		}) {
			return out
		}
	}
	// The watch goes on with the canary's states; it ends after r.Watch intervals
	// (shorter watches are read off the interval of a rollback).
	t = 0
	hold := float64(r.Holdout) / 100
	tally := analysis.NewTally(r.Metrics)
	for t < r.Watch {
		t++
		cr, br := errorRates(w, "watch", t)
		scale := w.LatencyScale("watch", t)
		b := binom(rnd, r.Requests, hold)
		serve(champ, b, br, scale, 0)
		serve(cand, r.Requests-b, cr, scale, w.Slow)
		ms := make([]analysis.Measurement, len(r.Metrics))
		for i, m := range r.Metrics {
			v, msg, _, st := analysis.JudgeCounts(m, states[i], reading(m))
			states[i] = st
			ms[i] = analysis.Measurement{Metric: m.Name, Verdict: v, Message: msg}
		}
		if reason := tally.Add(ms); reason != "" {
			return ReleaseOutcome{Stage: "watch", Interval: t, Metric: failedMetric(ms), CanaryRequests: canaryRequests}
		}
	}
	return out
}

func errorRates(w World, stage string, t int) (candidate, champion float64) {
	b, c := w.ErrorRate(stage, t)
	return c, b
}

func failedMetric(ms []analysis.Measurement) string {
	for _, m := range ms {
		if m.Verdict == analysis.Fail || m.Verdict == analysis.Error {
			return m.Metric
		}
	}
	return ""
}

func addTo(dst, src []float64) {
	for i := range src {
		dst[i] += src[i]
	}
}

// FixedHorizonAt is FixedHorizon for a one-sided test at level alpha.
func FixedHorizonAt(sched Schedule, pc, pb, alpha float64) float64 {
	z := distuv.UnitNormal.Quantile(1 - alpha)
	var nc, nb float64
	for _, w := range sched.Weights {
		for range 10 {
			nc += sched.Requests * w / 10
			nb += sched.Requests * (1 - w) / 10
			p := (pc*nc + pb*nb) / (nc + nb)
			se0 := math.Sqrt(p * (1 - p) * (1/nc + 1/nb))
			se1 := math.Sqrt(pc*(1-pc)/nc + pb*(1-pb)/nb)
			if distuv.UnitNormal.Survival((z*se0-(pc-pb))/se1) >= 0.8 {
				return nc
			}
		}
	}
	return math.Inf(1)
}

// Detect is the candidate requests the rate judge alone needs to fail a regression
// (0: not within the schedule), looking every tenth of an interval so that the
// figure is not rounded up to an interval's end.
func Detect(rnd *rand.Rand, m plan.Metric, sched Schedule, pb, pc float64) float64 {
	st := analysis.Start(analysis.Reading{Candidate: analysis.Counts{}, Champion: analysis.Counts{analysis.KeyEvents: pb * 100 * sched.Requests, analysis.KeyTotal: 100 * sched.Requests}})
	var x, y, nc, nb float64
	y, nb = pb*100*sched.Requests, 100*sched.Requests
	for _, w := range sched.Weights {
		for range 10 {
			c := binom(rnd, sched.Requests/10, w)
			b := sched.Requests/10 - c
			x, y, nc, nb = x+binom(rnd, c, pc), y+binom(rnd, b, pb), nc+c, nb+b
			v, _, _, next := analysis.JudgeCounts(m, st, analysis.Reading{
				Candidate: analysis.Counts{analysis.KeyEvents: x, analysis.KeyTotal: nc},
				Champion:  analysis.Counts{analysis.KeyEvents: y, analysis.KeyTotal: nb}})
			st = next
			if v == analysis.Fail {
				return nc
			}
		}
	}
	return 0
}
