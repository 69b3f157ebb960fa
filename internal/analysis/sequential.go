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
