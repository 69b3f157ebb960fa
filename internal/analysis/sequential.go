package analysis

import (
	"math"
)

// RateMixture is an anytime-valid sequential test that a candidate's event rate is at
// most rho0 times the champion's, on event counts that arrive in batches (one per
// analysis interval) with a traffic split that may change from batch to batch.
//
// Conditioned on the number of events in a batch, each event is the candidate's with
// probability theta = nc*rho/(nc*rho + nb), where nc and nb are the batch's trials
// (requests) per arm and rho is the ratio of the arms' rates: the two-category case of
// the multinomial count test of Lindon & Malek ("Anytime-Valid Inference for
// Multinomial Count Data", NeurIPS 2022), with the null set by each batch's own split.
// The test statistic is a mixture over rho > rho0 of the batches' likelihood ratios:
//
//	E = sum_i w_i prod_t (theta_t(rho_i)/theta_t(rho0))^x_t ((1-theta_t(rho_i))/(1-theta_t(rho0)))^y_t
//
// For each rho_i the product is a nonnegative martingale under rho = rho0 and a
// supermartingale under rho < rho0 (the likelihood ratio rises with x), and so is
// the mixture: by Ville's inequality P(E ever reaches 1/alpha) <= alpha, however
// often it is looked at. With per-request Bernoulli outcomes and rho0 = 1 the
// conditional law of x is hypergeometric, which is smaller in convex order than the
// binomial the ratio assumes, so the bound still holds; for rho0 > 1 it holds for
// rare events (the Poisson limit).
//
// The mixing weights w_i are a fixed discrete prior over u = log(rho/rho0) > 0, so
// the bound does not depend on any quadrature error. LogLR holds each grid point's
// log likelihood ratio so far; it is the whole state of the test.
//
// Add is this binomial test, used by the latency judge on exceedance counts. The
// rate judge uses AddTable, the same mixture over the odds ratio with each batch's
// exact conditional law (Fisher's noncentral hypergeometric), which keeps the
// information of outcomes that are not rare. Each batch's factor has mean at most 1
// under the null either way, so a state may mix the two.
type RateMixture struct {
	LogLR []float64 `json:"logLR"`
}

// The prior over u = log(rho/rho0): a mixture of two half-normals, one for the
// regressions a release is about (rates up by a fifth to double), one for broken
// candidates (rates up tenfold and more), on an even grid. The scales were tuned on
// bench/analysis (median requests to detect against the fixed-horizon size); any
// fixed prior keeps the guarantee.
const (
	rateGridPoints = 64
	rateGridMax    = 4.5 // rho up to 90 times rho0
	rateScaleSmall = 0.35
	rateScaleLarge = 2.0
	rateWeightWide = 0.15
)

var rateGridU, rateGridLogW = rateGrid()

func rateGrid() (u, logW []float64) {
	u = make([]float64, rateGridPoints)
	w := make([]float64, rateGridPoints)
	h := rateGridMax / rateGridPoints
	var sum float64
	for i := range u {
		u[i] = (float64(i) + 0.5) * h
		halfNormal := func(s float64) float64 { return math.Exp(-u[i]*u[i]/(2*s*s)) / s }
		w[i] = (1-rateWeightWide)*halfNormal(rateScaleSmall) + rateWeightWide*halfNormal(rateScaleLarge)
		sum += w[i]
	}
	logW = make([]float64, rateGridPoints)
	for i := range w {
		logW[i] = math.Log(w[i] / sum)
	}
	return u, logW
}

// Add takes one batch: x of the candidate's nc trials and y of the champion's nb
// trials were events. A batch without trials on either side, or without events,
// carries no evidence about the ratio and changes nothing.
func (r *RateMixture) Add(x, y, nc, nb, rho0 float64) {
	if nc <= 0 || nb <= 0 || x+y <= 0 || rho0 <= 0 {
		return
	}
	if r.LogLR == nil {
		r.LogLR = make([]float64, rateGridPoints)
	}
	theta0 := nc * rho0 / (nc*rho0 + nb)
	for i, u := range rateGridU {
		rho := rho0 * math.Exp(u)
		theta := nc * rho / (nc*rho + nb)
		r.LogLR[i] += x*math.Log(theta/theta0) + y*math.Log((1-theta)/(1-theta0))
	}
}

// LogE is the log of the mixture's e-value; 0 (E = 1) before any evidence.
func (r RateMixture) LogE() float64 {
	if r.LogLR == nil {
		return 0
	}
	terms := make([]float64, len(r.LogLR))
	for i := range r.LogLR {
		terms[i] = rateGridLogW[i] + r.LogLR[i]
	}
	return logSumExp(terms)
}

func logSumExp(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	if math.IsInf(m, -1) {
		return m
	}
	var s float64
	for _, x := range xs {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// AddTable takes one batch as a 2x2 table, x of the candidate's nc trials and y of
// the champion's nb trials were events, and tests the odds ratio
// psi = pc(1-pb) / (pb(1-pc)) of the arms' event probabilities against psi0.
//
// Conditioned on the batch's events m = x+y, x follows Fisher's noncentral
// hypergeometric law with odds psi, whatever the champion's probability pb:
//
//	P(x | m) = C(nc,x) C(nb,m-x) psi^x / sum_u C(nc,u) C(nb,m-u) psi^u
//
// so each grid point's likelihood ratio against psi0 is exactly a nonnegative
// martingale under psi = psi0 and, the law having a likelihood ratio monotone in x,
// a supermartingale under psi < psi0: the same mixture and Ville bound as Add, with
// no approximation for events that are not rare. Add's binomial law of x given m is
// this law's limit when events are rare; when they are not (incorrect predictions
// at 10%), the binomial is wider than the real law by about 1/(1-p), and Add gives up
// that much of the evidence. The grid over u = log(psi/psi0) and its weights are
// Add's. Counts are rounded to whole trials.
func (r *RateMixture) AddTable(x, y, nc, nb, psi0 float64) {
	x, y, nc, nb = math.Round(x), math.Round(y), math.Round(nc), math.Round(nb)
	m := x + y
	if nc <= 0 || nb <= 0 || m <= 0 || x > nc || y > nb || psi0 <= 0 || math.IsInf(psi0, 1) {
		return
	}
	if x+y >= nc+nb {
		return // every trial an event: the table carries no evidence
	}
	if r.LogLR == nil {
		r.LogLR = make([]float64, rateGridPoints)
	}
	t := newTable(nc, nb, m)
	lpsi0 := math.Log(psi0)
	logZ0 := t.logZ(lpsi0)
	xi := x - t.lo
	for i, u := range rateGridU {
		r.LogLR[i] += xi*u - (t.logZ(lpsi0+u) - logZ0)
	}
}

// AddOneSample takes a batch in which only the candidate served: x of its nc trials
// were events, against a champion whose event probability pb is known from its
// history (the canary's counts, when the post-promotion watch sends it nothing). Each
// grid point's candidate odds are exp(u) times the null's, psi0 * pb/(1-pb), as in
// AddTable, and the batch's binomial likelihood ratio extends the same e-process. It
// is exact for a known pb; with pb estimated from the champion's history it is a
// plug-in, as the null of a tolerance is.
func (r *RateMixture) AddOneSample(x, nc, pb, psi0 float64) {
	x, nc = math.Round(x), math.Round(nc)
	if nc <= 0 || x > nc || pb <= 0 || pb >= 1 || psi0 <= 0 || math.IsInf(psi0, 1) {
		return
	}
	if r.LogLR == nil {
		r.LogLR = make([]float64, rateGridPoints)
	}
	odds0 := psi0 * pb / (1 - pb)
	p0 := odds0 / (1 + odds0)
	for i, u := range rateGridU {
		odds := odds0 * math.Exp(u)
		p := odds / (1 + odds)
		r.LogLR[i] += x*math.Log(p/p0) + (nc-x)*math.Log((1-p)/(1-p0))
	}
}

// table is the support of Fisher's noncentral hypergeometric law for one batch:
// u = lo..lo+len(lc)-1 candidate events of m. lc[k] is the log of
// C(nc,u) C(nb,m-u) at u = lo+k, shifted by a constant (it cancels in the
// likelihood ratio); ratio[k] = exp(lc[k+1]-lc[k]).
type table struct {
	nc, nb, m, lo float64
	lc, ratio     []float64
}

func newTable(nc, nb, m float64) table {
	lo, hi := math.Max(0, m-nb), math.Min(nc, m)
	n := int(hi-lo) + 1
	t := table{nc: nc, nb: nb, m: m, lo: lo, lc: make([]float64, n), ratio: make([]float64, n-1)}
	for k := range t.ratio {
		u := lo + float64(k)
		t.ratio[k] = (nc - u) * (m - u) / ((u + 1) * (nb - m + u + 1))
		t.lc[k+1] = t.lc[k] + math.Log(t.ratio[k])
	}
	return t
}

// logZ is log sum_k exp(lc[k] + k*lpsi), the law's normalizer with u = lo+k. The
// sum starts near the mode (a root of the quadratic that sets the ratio of
// neighbouring terms to 1) and walks out on each side by the ratio of neighbouring
// terms, in units of the starting term. The terms are log-concave in k, so a side
// that rises keeps rising to the mode and then falls; it stops once a term is below
// 1e-17 of the sum, past which the rest cannot change a float64. The sum is rescaled
// if it grows large (a start far below the mode).
func (t table) logZ(lpsi float64) float64 {
	psi := math.Exp(lpsi)
	n := len(t.lc)
	start := int(math.Max(0, math.Min(float64(n-1), math.Round(t.mode(psi)-t.lo))))
	const big = 1e280
	logScale, s, term := 0.0, 1.0, 1.0
	rescale := func() {
		if s > big {
			s, term, logScale = s/big, term/big, logScale+math.Log(big)
		}
	}
	for k := start; k+1 < n; k++ {
		term *= t.ratio[k] * psi
		s += term
		if term < 1e-17*s {
			break
		}
		rescale()
	}
	if logScale == 0 { // the right side fell from the start: the mode may be left
		term = 1
		for k := start; k > 0; k-- {
			term /= t.ratio[k-1] * psi
			s += term
			if term < 1e-17*s {
				break
			}
			rescale()
		}
	}
	return t.lc[start] + float64(start)*lpsi + logScale + math.Log(s)
}

// mode is where the law's terms stop rising: the root in the support of
// (psi-1)u^2 - (psi(nc+m) + nb - m)u + psi nc m = 0 (the continuous solution of
// (nc-u)(m-u)psi = u(nb-m+u)). Only a starting point for logZ.
func (t table) mode(psi float64) float64 {
	a := psi - 1
	b := -(psi*(t.nc+t.m) + t.nb - t.m)
	c := psi * t.nc * t.m
	if math.Abs(a) < 1e-12 {
		return -c / b
	}
	d := math.Sqrt(math.Max(b*b-4*a*c, 0))
	// The smaller root when psi > 1, the positive one when psi < 1; written to avoid
	// cancellation.
	q := -0.5 * (b - d)
	if b > 0 {
		q = -0.5 * (b + d)
	}
	r1, r2 := q/a, c/q
	lo, hi := t.lo, t.lo+float64(len(t.lc)-1)
	if r1 >= lo && r1 <= hi {
		return r1
	}
	return r2
}
