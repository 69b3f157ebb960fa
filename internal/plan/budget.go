package plan

import (
	"fmt"
	"math"
	"strings"
)

// DefaultAlpha is the release's error budget when analysis.alpha is unset.
const DefaultAlpha = 0.05

// DefaultHoldout is the old champion's share of live traffic during the watch.
const DefaultHoldout = 5

// NativeBucketGrowth is the ratio between neighbouring bounds of the gateway's native
// latency histogram (schema 3: 2^(1/8)).
var NativeBucketGrowth = math.Pow(2, 1.0/8)

// ClassicBucketGrowth is the largest ratio between neighbouring bounds of the
// gateway's classic latency buckets (..., 0.1, 0.25, 0.5, 1, 2.5, ...).
const ClassicBucketGrowth = 2.5

// Stages of the release whose statistical judges spend the error budget, named as the
// workflow names them.
const (
	BudgetShadow = "shadow"
	BudgetCanary = "canary"
	BudgetWatch  = "watching"
)

// AlphaOrDefault is Alpha, default 0.05.
func (a Analysis) AlphaOrDefault() float64 {
	if a.Alpha == 0 {
		return DefaultAlpha
	}
	return a.Alpha
}

// HoldoutOrDefault is the old champion's percentage of live traffic during the
// watch: Holdout, default 5 but no more than the last canary step leaves it.
func (p *Plan) HoldoutOrDefault() int {
	if p.PostPromotion.Holdout != nil {
		return *p.PostPromotion.Holdout
	}
	h := DefaultHoldout
	if n := len(p.Canary.Steps); n > 0 {
		h = min(h, 100-p.Canary.Steps[n-1].Weight)
	}
	return max(h, 0)
}

// BucketGrowthOrDefault is BucketGrowth; by default the gateway's classic layout when
// the query reads _bucket series, else its native histogram.
func (m Metric) BucketGrowthOrDefault() float64 {
	switch {
	case m.BucketGrowth != 0:
		return m.BucketGrowth
	case strings.Contains(m.Query, "_bucket"):
		return ClassicBucketGrowth
	}
	return NativeBucketGrowth
}

// BudgetShare is one statistical judge's test and its share of the release's error
// budget. The canary's test of a metric goes on through the watch (one test, one
// share); a watch metric the canary does not judge is a test of its own.
type BudgetShare struct {
	Stage  string  `json:"stage"`
	Metric string  `json:"metric"`
	Alpha  float64 `json:"alpha"`
}

// Budget lists the release's statistical tests and their shares, in stage order.
// Their sum is at most analysis.alpha (Validate), so by the union bound a candidate
// as good as the champion is rolled back by any of them with chance at most
// analysis.alpha.
func (p *Plan) Budget() []BudgetShare {
	var out []BudgetShare
	for _, t := range p.tests() {
		out = append(out, BudgetShare{Stage: t.stage, Metric: t.metric.Name, Alpha: t.metric.Alpha})
	}
	return out
}

type test struct {
	stage  string
	metric *Metric
}

// tests are the release's statistical tests, each with the metric (in the plan) that
// holds its alpha. A stage that falls back on the analysis metrics shares their
// Metric values: the same alpha, spent once per stage.
func (p *Plan) tests() []test {
	var out []test
	add := func(stage string, ms []Metric, skip func(Metric) bool) {
		for i := range ms {
			if ms[i].Sequential() && (skip == nil || !skip(ms[i])) {
				out = append(out, test{stage, &ms[i]})
			}
		}
	}
	if p.Shadow.Share > 0 {
		if len(p.Shadow.Metrics) > 0 {
			add(BudgetShadow, p.Shadow.Metrics, nil)
		} else {
			add(BudgetShadow, p.Analysis.Metrics, nil)
		}
	}
	canary := map[string]bool{}
	if len(p.Canary.Steps) > 0 {
		add(BudgetCanary, p.Analysis.Metrics, nil)
		for _, m := range p.Analysis.Metrics {
			if m.Sequential() {
				canary[m.Name] = true
			}
		}
	}
	if p.PostPromotion.Watch > 0 && len(p.PostPromotion.Metrics) > 0 {
		add(BudgetWatch, p.PostPromotion.Metrics, func(m Metric) bool { return canary[m.Name] })
	}
	return out
}

// defaultBudget gives every statistical test without an alpha of its own an equal
// share of what the others leave of analysis.alpha. Applied again it changes
// nothing: every test then has its alpha.
func (p *Plan) defaultBudget() {
	if p.PostPromotion.Watch > 0 && p.PostPromotion.Holdout == nil {
		h := p.HoldoutOrDefault()
		p.PostPromotion.Holdout = &h
	}
	ts := p.tests()
	var set float64
	free := 0
	for _, t := range ts {
		if t.metric.Alpha > 0 {
			set += t.metric.Alpha
		} else {
			free++
		}
	}
	left := p.Analysis.AlphaOrDefault() - set
	if free == 0 || left <= 0 {
		return
	}
	share := left / float64(free)
	// A metric shared by two stages' tests is set once, and spends its share twice.
	for _, t := range ts {
		if t.metric.Alpha == 0 {
			t.metric.Alpha = share
		}
	}
}

func (p *Plan) validateBudget() []error {
	var errs []error
	budget := p.Analysis.AlphaOrDefault()
	if budget <= 0 || budget >= 1 {
		errs = append(errs, fmt.Errorf("analysis.alpha: %v is outside (0, 1)", p.Analysis.Alpha))
		return errs
	}
	// A test without an alpha (a plan changed after Default) needs some of the
	// budget left for it; Default shares it out.
	var sum float64
	var parts []string
	free := 0
	for _, t := range p.tests() {
		a := t.metric.Alpha
		if a == 0 {
			free++
			parts = append(parts, fmt.Sprintf("%s %s unset", t.stage, t.metric.Name))
			continue
		}
		sum += a
		parts = append(parts, fmt.Sprintf("%s %s %.3g", t.stage, t.metric.Name, a))
	}
	if sum > budget*(1+1e-9) || (free > 0 && sum >= budget*(1-1e-9)) {
		errs = append(errs, fmt.Errorf("analysis.alpha: the statistical judges' alphas (%s) add up to more than the release's error budget %v, or leave nothing for those unset; lower a metric's alpha, or leave it unset for an equal share of what is left", strings.Join(parts, ", "), budget))
	}
	if p.PostPromotion.Holdout != nil {
		h := *p.PostPromotion.Holdout
		last := 0
		if n := len(p.Canary.Steps); n > 0 {
			last = p.Canary.Steps[n-1].Weight
		}
		switch {
		case h < 0 || h >= 100:
			errs = append(errs, fmt.Errorf("postPromotion.holdout: %d is outside 0..99", h))
		case h > 100-last:
			errs = append(errs, fmt.Errorf("postPromotion.holdout: %d is more than the %d%% the last canary step (weight %d) leaves the champion: candidate traffic only rises", h, 100-last, last))
		case h == 0 && p.PostPromotion.Watch > 0 && p.watchJudged():
			errs = append(errs, fmt.Errorf("postPromotion.holdout: 0 leaves no champion to compare with during the watch, whose statistical judges then have no data; keep a holdout (default %d) or drop the statistical metrics from postPromotion.metrics", DefaultHoldout))
		}
	}
	return errs
}

// watchJudged reports whether the watch has a statistical judge.
func (p *Plan) watchJudged() bool {
	for _, m := range p.WatchMetrics() {
		if m.Sequential() {
			return true
		}
	}
	return false
}
