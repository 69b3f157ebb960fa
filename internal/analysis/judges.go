package analysis

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/mlrelease/mlrelease/internal/plan"
)

// Counts are cumulative counter readings of one arm, by series: "events" and "total"
// for the rate judge; histogram bucket upper bounds ("0.005", "+Inf") for the latency
// and drift judges.
type Counts map[string]float64

// Series keys of the rate judge's counts.
const (
	KeyEvents = "events"
	KeyTotal  = "total"
)

// Reading is one read of a metric's counters for both arms.
type Reading struct {
	Candidate Counts `json:"candidate"`
	Champion  Counts `json:"champion"`
}

// JudgeState is a counting judge's evidence since its stage started. It travels from
// one interval's analysis to the next through the workflow, so that a stage (the
// whole canary, across its steps) is judged on all its data, and a sequential test
// keeps its guarantee across every look.
type JudgeState struct {
	// Last is the latest cumulative reading; increments are taken from it.
	Last Reading `json:"last"`
	// Total is the sum of the increments since the stage started.
	Total Reading `json:"total"`
	// Batches counts the readings with new data.
	Batches int `json:"batches"`
	// Tests are the sequential tests so far: one for a rate, one per quantile for
	// latency.
	Tests []RateMixture `json:"tests,omitempty"`
	// MaxLogE is the largest log e-value seen; 1/exp(MaxLogE) is the anytime-valid
	// p-value.
	MaxLogE float64 `json:"maxLogE"`
}

// Evidence is what a counting judge's verdict rests on.
type Evidence struct {
	// CandidateN and ChampionN are the sample sizes since the stage started: trials
	// (rate) or histogram observations (latency, drift).
	CandidateN float64 `json:"candidateN"`
	ChampionN  float64 `json:"championN"`
	// CandidateEvents and ChampionEvents are the rate judge's events.
	CandidateEvents float64 `json:"candidateEvents,omitempty"`
	ChampionEvents  float64 `json:"championEvents,omitempty"`
	// Statistic names Value: "rate ratio", "e-value", "psi".
	// Value is nil where the statistic is undefined (a ratio over a zero rate).
	Statistic string   `json:"statistic"`
	Value     *float64 `json:"value,omitempty"`
	// EValue is a sequential judge's e-value now; it fails at 1/alpha (Threshold).
	// PValue is the anytime-valid p-value: 1 / the largest e-value so far.
	EValue    *float64 `json:"eValue,omitempty"`
	PValue    *float64 `json:"pValue,omitempty"`
	Threshold float64  `json:"threshold,omitempty"`
	// Alpha is this judge's share of the release's error budget (analysis.alpha).
	Alpha float64 `json:"alpha,omitempty"`
	// PSI and JS are the drift judge's divergences.
	PSI *float64 `json:"psi,omitempty"`
	JS  *float64 `json:"js,omitempty"`
	// Quantiles are the latency judge's per-quantile estimates and e-values.
	Quantiles []QuantileEvidence `json:"quantiles,omitempty"`
	// MinSamples is the candidate sample size needed to pass.
	MinSamples int `json:"minSamples"`
	// Queries are the resolved queries, candidate's first.
	Queries []string `json:"queries"`
	Warning string   `json:"warning,omitempty"`
}

// QuantileEvidence is one latency quantile's comparison.
type QuantileEvidence struct {
	Quantile float64 `json:"quantile"`
	// Candidate and Champion are the quantile's estimates since the stage started
	// (linear within a bucket, as Prometheus's histogram_quantile).
	Candidate float64 `json:"candidate"`
	Champion  float64 `json:"champion"`
	EValue    float64 `json:"eValue"`
	// ChampionBound is the bucket bound at or above the champion's quantile, and
	// CandidateBound the bound at or above it times 1+tolerance, where the candidate's
	// share of slower requests is compared with the champion's: the test tolerates
	// CandidateBound/ChampionBound - 1 (the tolerance, rounded up to the buckets).
	ChampionBound  float64 `json:"championBound,omitempty"`
	CandidateBound float64 `json:"candidateBound,omitempty"`
}

// Start begins a stage's state from the reading at the stage's start.
func Start(at Reading) JudgeState {
	return JudgeState{Last: at, Total: Reading{Candidate: Counts{}, Champion: Counts{}}}
}

// MaxSeries bounds the series of one arm's reading (histogram buckets): a judge
// call's time and memory, and the state the workflow carries, stay bounded.
const MaxSeries = 512

// JudgeCounts judges a rate, latency or drift metric on a new reading of its
// counters, given the state so far, and returns the new state. A verdict is Fail as
// soon as the evidence is strong enough (a sequential test may fail on any sample),
// Hold while the candidate's sample is below the metric's minimum (or there is no
// data, by the metric's no-data policy), and Pass otherwise.
//
// Only new evidence may pass: a reading in which either arm's count did not move
// (a data plane down, a champion that serves nothing) is no data, judged by the
// no-data policy, and so is one in which an arm's counter went down (a restart:
// that interval's growth is unknown, and counting the whole counter again would
// recount history). A reading with a value that is not a finite non-negative number
// is an analysis error, with the state unchanged.
func JudgeCounts(m plan.Metric, prev JudgeState, now Reading) (Verdict, string, *Evidence, JudgeState) {
	ev := &Evidence{MinSamples: m.MinSampleSize(), Alpha: m.AlphaOrDefault()}
	for _, arm := range []struct {
		name string
		c    Counts
	}{{"candidate", now.Candidate}, {"champion", now.Champion}} {
		if len(arm.c) > MaxSeries {
			return Error, fmt.Sprintf("the %s's reading has %d series, more than the %d a judge takes; aggregate the query (sum by (le))", arm.name, len(arm.c), MaxSeries), ev, prev
		}
		if k, ok := firstKey(arm.c, func(_ string, v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) || v < 0 }); ok {
			return Error, fmt.Sprintf("the %s's series %q read %v, not a finite count: the query or the exporter is broken", arm.name, k, arm.c[k]), ev, prev
		}
	}
	st := prev.Clone()
	st.Last = Reading{Candidate: merge(prev.Last.Candidate, now.Candidate), Champion: merge(prev.Last.Champion, now.Champion)}
	// A reset of either arm drops the batch of both: the tests compare the arms
	// within a batch.
	for _, arm := range []struct {
		name      string
		last, now Counts
	}{{"candidate", prev.Last.Candidate, now.Candidate}, {"champion", prev.Last.Champion, now.Champion}} {
		if k, ok := reset(arm.last, arm.now); ok {
			v, msg := noData(m, fmt.Sprintf("no new evidence: the %s's counter %q went down from %.0f to %.0f (a restart); this interval is not counted", arm.name, k, arm.last[k], arm.now[k]))
			ev.Statistic = "reset"
			// Counting starts again from this reading alone: a series it lacks (an
			// emptied native bucket, an error count not exported yet) starts at 0.
			st.Last = Reading{Candidate: cloneCounts(now.Candidate), Champion: cloneCounts(now.Champion)}
			return v, msg, ev, st
		}
	}
	inc := Reading{Candidate: increments(prev.Last.Candidate, now.Candidate), Champion: increments(prev.Last.Champion, now.Champion)}
	var v Verdict
	var msg string
	switch m.Judge {
	case plan.JudgeRate, plan.JudgeLatency, plan.JudgeDrift:
	default:
		return Error, fmt.Sprintf("judge %q does not count", m.Judge), nil, prev
	}
	if nc, nb := trials(m, inc.Candidate), trials(m, inc.Champion); nc <= 0 || nb <= 0 {
		v, msg = noData(m, fmt.Sprintf("no new evidence: %.0f candidate and %.0f champion %s since the last round", nc, nb, unit(m)))
		if v == Pass {
			ev.Warning = NoDataPassWarning
		}
		ev.Statistic = "no new data"
		return v, msg, ev, st
	}
	st.Batches++
	for k, v := range inc.Candidate {
		st.Total.Candidate[k] += v
	}
	for k, v := range inc.Champion {
		st.Total.Champion[k] += v
	}
	switch m.Judge {
	case plan.JudgeRate:
		v, msg = judgeRate(m, prev.Last, inc, &st, ev)
	case plan.JudgeLatency:
		v, msg = judgeLatency(m, prev.Last, inc, &st, ev)
	case plan.JudgeDrift:
		v, msg = judgeDrift(m, &st, ev)
	}
	if v == Pass && strings.Contains(msg, NoDataPassWarning) {
		ev.Warning = NoDataPassWarning
	}
	return v, msg, ev, st
}

// trials is a batch's sample: requests for a rate, observations for a histogram.
func trials(m plan.Metric, c Counts) float64 {
	if m.Judge == plan.JudgeRate {
		return c[KeyTotal]
	}
	return c["+Inf"]
}

func unit(m plan.Metric) string {
	if m.Judge == plan.JudgeRate {
		return "trials"
	}
	return "observations"
}

// reset finds a series that went down since last.
func reset(last, now Counts) (string, bool) {
	return firstKey(now, func(k string, v float64) bool {
		l, ok := last[k]
		return ok && v < l
	})
}

// firstKey is the smallest key whose value is bad (the same message whatever the
// map's order).
func firstKey(c Counts, bad func(string, float64) bool) (string, bool) {
	first, found := "", false
	for k, v := range c {
		if bad(k, v) && (!found || k < first) {
			first, found = k, true
		}
	}
	return first, found
}

// sequentialVerdict applies the common rule of the sequential judges.
func sequentialVerdict(m plan.Metric, logE float64, st *JudgeState, ev *Evidence, n float64, what string) (Verdict, string) {
	st.MaxLogE = math.Max(st.MaxLogE, logE)
	// Capped so that it stays a JSON number; far past any threshold.
	e, p := math.Exp(math.Min(logE, 700)), math.Min(1, math.Exp(-st.MaxLogE))
	alpha := m.AlphaOrDefault()
	ev.EValue, ev.PValue, ev.Threshold = &e, &p, 1/alpha
	switch {
	case logE >= math.Log(1/alpha):
		return Fail, fmt.Sprintf("%s; e-value %.3g reached %.3g (anytime p %.2g <= alpha %.3g)", what, e, 1/alpha, p, alpha)
	case n < float64(m.MinSampleSize()):
		return Hold, fmt.Sprintf("%s; e-value %.3g below %.3g, but %.0f of the %d samples needed to pass", what, e, 1/alpha, n, m.MinSampleSize())
	}
	return Pass, fmt.Sprintf("%s; e-value %.3g below %.3g (anytime p %.2g), %.0f samples", what, e, 1/alpha, p, n)
}

func judgeRate(m plan.Metric, last Reading, inc Reading, st *JudgeState, ev *Evidence) (Verdict, string) {
	if len(st.Tests) == 0 {
		st.Tests = []RateMixture{{}}
	}
	x, nc := clampEvents(inc.Candidate[KeyEvents], inc.Candidate[KeyTotal])
	y, nb := clampEvents(inc.Champion[KeyEvents], inc.Champion[KeyTotal])
	rho0 := 1 + m.Tolerance
	if psi0, ok := nullOdds(rho0, last.Champion); ok {
		st.Tests[0].AddTable(x, y, nc, nb, psi0)
	}

	ex, n := clampEvents(st.Total.Candidate[KeyEvents], st.Total.Candidate[KeyTotal])
	ey, nbt := clampEvents(st.Total.Champion[KeyEvents], st.Total.Champion[KeyTotal])
	ev.CandidateN, ev.ChampionN, ev.CandidateEvents, ev.ChampionEvents = n, nbt, ex, ey
	ev.Statistic = "rate ratio"
	if n == 0 || nbt == 0 {
		return noData(m, fmt.Sprintf("no data: candidate %.0f and champion %.0f trials since the stage started", n, nbt))
	}
	rc, rb := ex/n, ey/nbt
	ratio := "undefined"
	if rb > 0 {
		r := rc / rb
		ev.Value = &r
		ratio = fmt.Sprintf("%.3g", r)
	}
	what := fmt.Sprintf("candidate %.0f/%.0f (%.3g%%) vs champion %.0f/%.0f (%.3g%%), ratio %s (tolerated %.3g)",
		ex, n, 100*rc, ey, nbt, 100*rb, ratio, rho0)
	return sequentialVerdict(m, st.Tests[0].LogE(), st, ev, n, what)
}

// nullOdds is the odds ratio of the rate judge's null, a candidate rate rho0 times
// the champion's pb: psi0 = rho0 (1-pb) / (1-rho0 pb). Without a tolerance it is 1
// whatever pb, and the test is exact. With one, pb is the champion's rate over its
// counters' history before the batch (a predictable plug-in, so that the batch
// cannot move its own null; the champion's long history pins it down far better
// than the comparison needs); for rare events psi0 is rho0, the rate test's null.
// No history, or a tolerance that allows every rate, gives no test (ok false).
func nullOdds(rho0 float64, history Counts) (float64, bool) {
	if rho0 == 1 {
		return 1, true
	}
	e, n := clampEvents(history[KeyEvents], history[KeyTotal])
	if n <= 0 {
		return 0, false
	}
	pb := e / n
	if rho0*pb >= 1 {
		return 0, false
	}
	return rho0 * (1 - pb) / (1 - rho0*pb), true
}

func judgeLatency(m plan.Metric, last Reading, inc Reading, st *JudgeState, ev *Evidence) (Verdict, string) {
	qs := m.QuantilesOrDefault()
	if len(st.Tests) != len(qs) {
		st.Tests = make([]RateMixture, len(qs))
	}
	cb, cc := buckets(inc.Candidate), buckets(inc.Champion)
	// The champion's quantile is read from its whole history before this batch, and
	// the candidate's bound from both arms' bounds before it, so the test is fixed
	// before the batch's data is seen (a predictable choice keeps the product of
	// likelihood ratios a supermartingale). A native histogram lists only the
	// buckets that hold observations; any bound at or above the champion's times
	// 1+tolerance keeps the test valid, the nearest one keeps it sharp.
	history := buckets(last.Champion)
	known := buckets(merge(last.Champion, last.Candidate))
	bounds := make([][2]float64, len(qs))
	for i, q := range qs {
		xb, ok := history.upperBound(q)
		if !ok {
			continue
		}
		xc, ok := known.boundAtLeast(xb * (1 + m.Tolerance))
		if !ok {
			continue
		}
		bounds[i] = [2]float64{xb, xc}
		nc, nb := cb.total(), cc.total()
		st.Tests[i].Add(nc-cb.at(xc), nb-cc.at(xb), nc, nb, 1)
	}
	tc, tb := buckets(st.Total.Candidate), buckets(st.Total.Champion)
	n := tc.total()
	ev.CandidateN, ev.ChampionN, ev.Statistic = n, tb.total(), "e-value"
	if n == 0 || tb.total() == 0 {
		return noData(m, fmt.Sprintf("no data: candidate %.0f and champion %.0f observations since the stage started", n, tb.total()))
	}
	// The mean of e-values is an e-value: the quantiles share alpha adaptively.
	var e float64
	parts := make([]string, 0, len(qs))
	for i, q := range qs {
		ei := math.Exp(math.Min(st.Tests[i].LogE(), 700))
		e += ei / float64(len(qs))
		qe := QuantileEvidence{Quantile: q, Candidate: tc.quantile(q), Champion: tb.quantile(q), EValue: ei,
			ChampionBound: bounds[i][0], CandidateBound: bounds[i][1]}
		ev.Quantiles = append(ev.Quantiles, qe)
		parts = append(parts, fmt.Sprintf("p%s candidate %.3gs vs champion %.3gs", strconv.FormatFloat(100*q, 'f', -1, 64), qe.Candidate, qe.Champion))
	}
	ev.Value = &e
	what := strings.Join(parts, ", ") + fmt.Sprintf(" (tolerated slowdown %.3g%%)", 100*m.Tolerance)
	return sequentialVerdict(m, math.Log(e), st, ev, n, what)
}

func judgeDrift(m plan.Metric, st *JudgeState, ev *Evidence) (Verdict, string) {
	tc, tb := buckets(st.Total.Candidate), buckets(st.Total.Champion)
	n, nb := tc.total(), tb.total()
	ev.CandidateN, ev.ChampionN, ev.Statistic = n, nb, "psi"
	if n == 0 || nb == 0 {
		return noData(m, fmt.Sprintf("no data: candidate %.0f and champion %.0f observations since the stage started", n, nb))
	}
	bounds := unionBounds(tc, tb)
	pc, pb := mergeSparse(tc.bins(bounds), tb.bins(bounds), n)
	// Half an observation added to every bucket (Jeffreys): a bucket that chance
	// left empty on one side weighs its chance, not a log of a floor.
	for i := range pc {
		pc[i], pb[i] = pc[i]+0.5, pb[i]+0.5
	}
	psi, js := PSI(pc, pb), JensenShannon(pc, pb)
	ev.Value, ev.PSI, ev.JS = &psi, &psi, &js
	need := DriftMinimum(m, occupied(pc, pb), nb)
	ev.MinSamples = int(math.Min(need, math.MaxInt32))
	what := fmt.Sprintf("PSI %.3g (max %.3g), Jensen-Shannon %.3g (max %.3g) on %.0f candidate and %.0f champion observations in %d buckets",
		psi, m.PSILimit(), js, m.JSLimit(), n, nb, len(pc))
	switch {
	case psi > m.PSILimit() || js > m.JSLimit():
		if n < need {
			return Hold, what + fmt.Sprintf("; above a limit, but %.0f of the %.0f samples needed to judge %d buckets at alpha %.3g", n, need, occupied(pc, pb), ev.Alpha)
		}
		return Fail, what
	case n < need:
		return Hold, what + fmt.Sprintf("; %.0f of the %.0f samples needed to judge %d buckets at alpha %.3g", n, need, occupied(pc, pb), ev.Alpha)
	case psi > 0.1:
		ev.Warning = "PSI above 0.1: a moderate shift"
	}
	return Pass, what
}

// DriftMinimum is the candidate sample the drift judge needs before it may fail or
// pass, given k occupied buckets and nb champion observations: at least the metric's
// minSamples, and enough that a candidate drawn from the champion's own distribution
// crosses the PSI or Jensen-Shannon limit with chance at most the judge's alpha.
//
// With nc and nb observations of the same distribution over k buckets, PSI (the
// symmetrised Kullback-Leibler divergence) is about (1/nc + 1/nb) times a
// chi-square with k-1 degrees of freedom, and Jensen-Shannon (bits) that over
// 8 ln 2. The minimum solves (1/nc + 1/nb) q <= limit for q the chi-square's 1-alpha/2
// quantile: half the alpha for the first look at the minimum, half for the later
// looks, where the sample grows and the divergence of an A/A pair shrinks as 1/n.
// It grows with k (q / limit for nb >> nc: 132 at 20 buckets, PSI limit 0.25, alpha
// 0.05; twice that for nb = nc), and is +Inf while the champion's sample alone is too
// small. Buckets are merged first so that each expects 5 candidate observations, and
// the divergences take half an observation more in every bucket (mergeSparse,
// judgeDrift): TestDriftAAAtTheMinimum measures 2.0-2.6% false failures at alpha
// 5%, 0.1-0.6% at 1%, on 20 buckets.
func DriftMinimum(m plan.Metric, k int, nb float64) float64 {
	need := float64(m.MinSampleSize())
	if k < 2 {
		return need
	}
	q := distuv.ChiSquared{K: float64(k - 1)}.Quantile(1 - m.AlphaOrDefault()/2)
	for _, limit := range []float64{m.PSILimit(), 8 * math.Ln2 * m.JSLimit()} {
		room := limit - q/nb
		if room <= 0 {
			return math.Inf(1)
		}
		need = math.Max(need, math.Ceil(q/room))
	}
	return need
}

// mergeSparse merges neighbouring buckets until each holds at least 5 of the n
// candidate observations the champion's shares predict, the rest into the last:
// PSI's chi-square law (and DriftMinimum) needs no nearly empty buckets, where one
// stray observation weighs like a shift. Merging only lowers a divergence, so a
// shift that crosses a limit on merged buckets crosses it on the raw ones too.
func mergeSparse(candidate, champion []float64, n float64) ([]float64, []float64) {
	var nb float64
	for _, c := range champion {
		nb += c
	}
	if nb == 0 {
		return candidate, champion
	}
	var pc, pb []float64
	var accC, accB float64
	for i := range champion {
		accC, accB = accC+candidate[i], accB+champion[i]
		if accB/nb*n >= 5 {
			pc, pb = append(pc, accC), append(pb, accB)
			accC, accB = 0, 0
		}
	}
	switch {
	case len(pc) == 0:
		pc, pb = []float64{accC}, []float64{accB}
	case accC > 0 || accB > 0:
		pc[len(pc)-1] += accC
		pb[len(pb)-1] += accB
	}
	return pc, pb
}

// occupied counts the buckets that hold an observation of either arm.
func occupied(a, b []float64) int {
	k := 0
	for i := range a {
		if a[i] > 0 || b[i] > 0 {
			k++
		}
	}
	return k
}

// increments are the counters' growth since last (a reset is caught before).
func increments(last, now Counts) Counts {
	out := Counts{}
	for k, v := range now {
		out[k] = math.Max(v-last[k], 0)
	}
	return out
}

// merge keeps last's readings of series that are missing now (not scraped yet after
// a restart), so that their growth is not counted twice when they come back.
func merge(last, now Counts) Counts {
	out := cloneCounts(last)
	for k, v := range now {
		out[k] = v
	}
	return out
}

func cloneCounts(c Counts) Counts {
	out := make(Counts, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

func sum(c Counts) float64 {
	var s float64
	for _, v := range c {
		s += v
	}
	return s
}

// clampEvents keeps events within 0..total, whatever the queries returned.
func clampEvents(events, total float64) (float64, float64) {
	total = math.Max(total, 0)
	return math.Min(math.Max(events, 0), total), total
}

// histogram is cumulative bucket counts by upper bound, ascending, +Inf last.
type histogram struct {
	le  []float64
	cum []float64
}

func buckets(c Counts) histogram {
	type bucket struct{ le, cum float64 }
	bs := make([]bucket, 0, len(c))
	for k, v := range c {
		b := math.Inf(1)
		if k != "+Inf" {
			var err error
			if b, err = strconv.ParseFloat(k, 64); err != nil {
				continue
			}
		}
		bs = append(bs, bucket{b, v})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	h := histogram{le: make([]float64, len(bs)), cum: make([]float64, len(bs))}
	for i, b := range bs {
		h.le[i], h.cum[i] = b.le, b.cum
	}
	return h
}

func (h histogram) total() float64 {
	if len(h.le) == 0 || !math.IsInf(h.le[len(h.le)-1], 1) {
		return 0
	}
	return h.cum[len(h.cum)-1]
}

// at is the cumulative count at bound b: the count at the largest bound at or
// below b. A native histogram lists only the buckets that hold observations, so a
// bound it does not list holds none beyond the one below it.
func (h histogram) at(b float64) float64 {
	c := 0.0
	for i, x := range h.le {
		if x > b*(1+1e-12) {
			break
		}
		c = h.cum[i]
	}
	return c
}

// upperBound is the smallest finite bound at or above the q-quantile.
func (h histogram) upperBound(q float64) (float64, bool) {
	n := h.total()
	if n == 0 {
		return 0, false
	}
	for i, b := range h.le {
		if !math.IsInf(b, 1) && h.cum[i] >= q*n {
			return b, true
		}
	}
	return 0, false
}

// boundAtLeast is the smallest finite bound >= x (with a relative slack for float
// rounding in x).
func (h histogram) boundAtLeast(x float64) (float64, bool) {
	for _, b := range h.le {
		if !math.IsInf(b, 1) && b >= x*(1-1e-9) {
			return b, true
		}
	}
	return 0, false
}

// quantile interpolates linearly within the bucket holding the q-quantile, as
// Prometheus's histogram_quantile does; the first bucket starts at 0.
func (h histogram) quantile(q float64) float64 {
	n := h.total()
	if n == 0 {
		return math.NaN()
	}
	rank := q * n
	lo, below := 0.0, 0.0
	for i, b := range h.le {
		if h.cum[i] >= rank {
			if math.IsInf(b, 1) {
				return lo
			}
			in := h.cum[i] - below
			if in <= 0 {
				return b
			}
			return lo + (b-lo)*(rank-below)/in
		}
		lo, below = b, h.cum[i]
	}
	return lo
}

func unionBounds(a, b histogram) []float64 {
	seen := map[float64]bool{}
	var out []float64
	for _, h := range []histogram{a, b} {
		for _, x := range h.le {
			if !seen[x] {
				seen[x] = true
				out = append(out, x)
			}
		}
	}
	sort.Float64s(out)
	return out
}

// bins turns cumulative counts into per-bucket counts on the given bounds.
func (h histogram) bins(bounds []float64) []float64 {
	out := make([]float64, len(bounds))
	prev := 0.0
	for i, b := range bounds {
		c := prev
		for j, x := range h.le {
			if x == b {
				c = h.cum[j]
			}
		}
		out[i] = math.Max(c-prev, 0)
		prev = math.Max(c, prev)
	}
	return out
}

// Clone copies the state deeply, so that judging never changes the caller's copy.
func (s JudgeState) Clone() JudgeState {
	c := s
	c.Last = Reading{Candidate: cloneCounts(s.Last.Candidate), Champion: cloneCounts(s.Last.Champion)}
	c.Total = Reading{Candidate: cloneCounts(s.Total.Candidate), Champion: cloneCounts(s.Total.Champion)}
	c.Tests = make([]RateMixture, len(s.Tests))
	for i, t := range s.Tests {
		c.Tests[i].LogLR = append([]float64(nil), t.LogLR...)
	}
	return c
}
