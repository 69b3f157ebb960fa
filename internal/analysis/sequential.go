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
	for i, u := range rateGridU {
		r.LogLR[i] += x*u - (t.logZ(lpsi0+u) - logZ0)
	}
}

// table is the support of Fisher's noncentral hypergeometric law for one batch:
// u = lo..hi candidate events of m. Its terms C(nc,u) C(nb,m-u) psi^u are computed
// where needed, never stored, so that a batch of a billion requests costs no more
// memory than one of ten.
type table struct {
	nc, nb, m, lo, hi float64
}

func newTable(nc, nb, m float64) table {
	return table{nc: nc, nb: nb, m: m, lo: math.Max(0, m-nb), hi: math.Min(nc, m)}
}

// lterm is log C(nc,u) C(nb,m-u) less a constant of the batch (it cancels in the
// likelihood ratio); defined for real u, smooth, as the trapezoid rule needs.
func (t table) lterm(u float64) float64 {
	lg := func(x float64) float64 { v, _ := math.Lgamma(x + 1); return v }
	return -lg(u) - lg(t.nc-u) - lg(t.m-u) - lg(t.nb-t.m+u)
}

// ratio is term(u+1)/term(u) at psi = 1.
func (t table) ratio(u float64) float64 {
	return (t.nc - u) * (t.m - u) / ((u + 1) * (t.nb - t.m + u + 1))
}

// logZ is log sum_u exp(lterm(u) + u*lpsi) over the support, the law's normalizer.
//
// The terms are log-concave in u, so they rise to the mode and fall after it. Where
// the law is narrow (standard deviation up to 64) or near an end of its support, the
// sum walks out from the mode on each side by the ratio of neighbouring terms, until
// a term is below 1e-17 of the sum, past which the rest cannot change a float64.
// Where it is wide and far from both ends, the terms are a smooth bell over many
// integers: the sum is the integral, and the trapezoid rule with a step of a quarter
// standard deviation computes it, both with relative errors below exp(-300)
// (Poisson summation). Either way a call costs at most a few thousand steps,
// whatever the counts.
func (t table) logZ(lpsi float64) float64 {
	psi := math.Exp(lpsi)
	mu := math.Max(t.lo, math.Min(t.hi, t.mode(psi)))
	sd := t.sd(mu)
	if sd > 64 && mu-t.lo > 40*sd && t.hi-mu > 40*sd {
		return t.logZSmooth(lpsi, mu, sd)
	}
	start := math.Round(mu)
	f0 := t.lterm(start) + start*lpsi
	const big = 1e280
	logScale, s, term := 0.0, 1.0, 1.0
	rescale := func() {
		if s > big {
			s, term, logScale = s/big, term/big, logScale+math.Log(big)
		}
	}
	for u := start; u < t.hi; u++ {
		term *= t.ratio(u) * psi
		s += term
		if term < 1e-17*s {
			break
		}
		rescale()
	}
	if logScale == 0 { // the right side fell from the start: the mode may be left
		term = 1
		for u := start; u > t.lo; u-- {
			term /= t.ratio(u-1) * psi
			s += term
			if term < 1e-17*s {
				break
			}
			rescale()
		}
	}
	return f0 + logScale + math.Log(s)
}

func (t table) logZSmooth(lpsi, mu, sd float64) float64 {
	h := sd / 4
	f := func(u float64) float64 { return t.lterm(u) + u*lpsi }
	f0 := f(mu)
	s := 1.0
	for _, dir := range []float64{1, -1} {
		for j := 1.0; ; j++ {
			term := math.Exp(f(mu+dir*j*h) - f0)
			s += term
			if term < 1e-17*s || j > 400 {
				break
			}
		}
	}
	return f0 + math.Log(s*h)
}

// sd is the law's standard deviation near its mode mu (the normal approximation of
// the noncentral hypergeometric law); it only picks the method of logZ.
func (t table) sd(mu float64) float64 {
	inv := 0.0
	for _, d := range []float64{mu, t.m - mu, t.nc - mu, t.nb - t.m + mu} {
		if d <= 0.5 {
			return 0
		}
		inv += 1 / d
	}
	return 1 / math.Sqrt(inv)
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
	if r1 >= t.lo && r1 <= t.hi {
		return r1
	}
	return r2
}
