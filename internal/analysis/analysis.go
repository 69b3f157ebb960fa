// Package analysis judges a release from evidence: metric measurements from
// Prometheus, staging evaluations, shadow comparisons. Every judgement carries the
// evidence it used, and missing data is never a pass.
package analysis

import (
	"fmt"
	"math"
	"time"

	"github.com/mlrelease/mlrelease/internal/plan"
)

// Verdict is a judgement of one measurement, gate or stage.
type Verdict string

const (
	Pass Verdict = "pass"
	Fail Verdict = "fail"
	// Hold is inconclusive: no data yet, or not enough.
	Hold Verdict = "hold"
	// Error means the metric provider failed; it is not a metric failure.
	Error Verdict = "error"
)

// Measurement is one metric measured once, with its evidence.
type Measurement struct {
	Metric  string   `json:"metric"`
	Judge   string   `json:"judge"`
	Verdict Verdict  `json:"verdict"`
	Value   *float64 `json:"value,omitempty"`
	// Baseline is the same query for the champion, for comparison.
	Baseline      *float64  `json:"baseline,omitempty"`
	Query         string    `json:"query"`
	BaselineQuery string    `json:"baselineQuery,omitempty"`
	Message       string    `json:"message"`
	At            time.Time `json:"at"`
	// Evidence is what a rate, latency or drift judge used: sample sizes, statistic,
	// e-value and p-value, the resolved queries, warnings.
	Evidence *Evidence `json:"evidence,omitempty"`
	// State is a sequential judge's accumulated evidence, handed back to it at the
	// next interval. The workflow carries it and keeps it out of the status.
	State *JudgeState `json:"state,omitempty"`
}

// JudgeThreshold judges a candidate value against the metric's bounds. A nil or NaN
// value is no data, judged by the metric's no-data policy; an infinite one is an
// analysis error.
func JudgeThreshold(m plan.Metric, v *float64) (Verdict, string) {
	if v == nil || math.IsNaN(*v) {
		return noData(m, "no data")
	}
	if math.IsInf(*v, 0) {
		return Error, fmt.Sprintf("the query returned %v, not a finite number", *v)
	}
	if m.Min != nil && *v < *m.Min {
		return Fail, fmt.Sprintf("%.4g is below min %.4g", *v, *m.Min)
	}
	if m.Max != nil && *v > *m.Max {
		return Fail, fmt.Sprintf("%.4g is above max %.4g", *v, *m.Max)
	}
	return Pass, fmt.Sprintf("%.4g is within %s", *v, bounds(m))
}

// JudgeThresholdSample is JudgeThreshold for a metric with a SampleQuery: n is the
// window's sample, and a window below the metric's minimum (or without a sample) is
// no data, whatever its value: one slow request among fifteen is a p99 of nothing.
func JudgeThresholdSample(m plan.Metric, v, n *float64) (Verdict, string) {
	switch {
	case n != nil && (math.IsInf(*n, 0) || *n < 0):
		return Error, fmt.Sprintf("the sample query returned %v, not a count", *n)
	case n == nil || math.IsNaN(*n) || *n < float64(m.MinSampleSize()):
		got := 0.0
		if n != nil && !math.IsNaN(*n) {
			got = *n
		}
		return noData(m, fmt.Sprintf("no data: %.0f of the %d samples the window needs", got, m.MinSampleSize()))
	}
	verdict, msg := JudgeThreshold(m, v)
	return verdict, fmt.Sprintf("%s (%.0f samples)", msg, *n)
}

// noData judges a measurement without data by the metric's policy. A pass says so
// loudly: the plan asked for it explicitly.
func noData(m plan.Metric, what string) (Verdict, string) {
	switch m.NoData {
	case plan.NoDataFail:
		return Fail, what + " (policy: fail)"
	case plan.NoDataPass:
		if m.AllowNoDataPass {
			return Pass, what + " (policy: pass) " + NoDataPassWarning
		}
	}
	return Hold, what + " (policy: hold)"
}

// NoDataPassWarning marks a pass that rests on no data.
const NoDataPassWarning = "WARNING: passed without data because the plan says noData: pass"

func bounds(m plan.Metric) string {
	lo, hi := "-inf", "+inf"
	if m.Min != nil {
		lo = fmt.Sprintf("%.4g", *m.Min)
	}
	if m.Max != nil {
		hi = fmt.Sprintf("%.4g", *m.Max)
	}
	return "[" + lo + ", " + hi + "]"
}

// Tally accumulates a stage's measurements, metric by metric, and says when the
// stage has failed or may end. It is deterministic, so workflows use it directly.
type Tally struct {
	Metrics []MetricTally `json:"metrics"`
}

// MetricTally is one metric's record within a stage.
type MetricTally struct {
	Metric            plan.Metric `json:"-"`
	Name              string      `json:"name"`
	Measurements      int         `json:"measurements"`
	Failures          int         `json:"failures"`
	ConsecutiveErrors int         `json:"consecutiveErrors"`
	Holds             int         `json:"holds"`
	// Inconclusive counts Hold measurements (no data, too small a sample).
	Inconclusive int     `json:"inconclusive"`
	Last         Verdict `json:"last"`
}

// NewTally starts a stage's tally over the given metrics.
func NewTally(metrics []plan.Metric) *Tally {
	t := &Tally{}
	for _, m := range metrics {
		t.Metrics = append(t.Metrics, MetricTally{Metric: m, Name: m.Name})
	}
	return t
}

// Add records one round of measurements. It returns a non-empty reason as soon as a
// metric passes its failure or error limit: the stage has failed.
func (t *Tally) Add(ms []Measurement) (failure string) {
	for _, m := range ms {
		mt := t.find(m.Metric)
		if mt == nil {
			continue
		}
		mt.Measurements++
		mt.Last = m.Verdict
		switch m.Verdict {
		case Hold:
			mt.ConsecutiveErrors = 0
			mt.Inconclusive++
			if lim := mt.Metric.InconclusiveLimit; lim != nil && mt.Inconclusive > *lim && failure == "" {
				failure = fmt.Sprintf("metric %s was inconclusive %d time(s), limit %d: %s", mt.Name, mt.Inconclusive, *lim, m.Message)
			}
		case Pass:
			mt.ConsecutiveErrors = 0
		case Fail:
			mt.ConsecutiveErrors = 0
			mt.Failures++
			if mt.Failures > mt.Metric.FailureLimit && failure == "" {
				failure = fmt.Sprintf("metric %s failed %d time(s), limit %d: %s", mt.Name, mt.Failures, mt.Metric.FailureLimit, m.Message)
			}
		case Error:
			mt.ConsecutiveErrors++
			if mt.ConsecutiveErrors > mt.Metric.ErrorLimit() && failure == "" {
				failure = fmt.Sprintf("metric %s: %d provider errors in a row, limit %d: %s", mt.Name, mt.ConsecutiveErrors, mt.Metric.ErrorLimit(), m.Message)
			}
		}
	}
	return failure
}

// Conclude is asked when a stage's time is up. Pass when every metric's latest
// measurement passed. Hold (extend by one interval) while a metric without a passing
// measurement still has holds left; Fail once it has none: no data is never a pass.
func (t *Tally) Conclude() (Verdict, string) {
	verdict, reason := Pass, "every metric passed its latest measurement"
	for i := range t.Metrics {
		mt := &t.Metrics[i]
		if mt.Last == Pass {
			continue
		}
		if mt.Holds >= mt.Metric.HoldLimit() {
			return Fail, fmt.Sprintf("metric %s has no passing measurement after extending the stage %d interval(s) (last: %s)", mt.Name, mt.Holds, lastOr(mt.Last))
		}
		verdict, reason = Hold, fmt.Sprintf("metric %s has no passing measurement yet (last: %s); extending", mt.Name, lastOr(mt.Last))
	}
	if verdict == Hold {
		for i := range t.Metrics {
			if t.Metrics[i].Last != Pass {
				t.Metrics[i].Holds++
			}
		}
	}
	return verdict, reason
}

func lastOr(v Verdict) Verdict {
	if v == "" {
		return "none"
	}
	return v
}

func (t *Tally) find(name string) *MetricTally {
	for i := range t.Metrics {
		if t.Metrics[i].Name == name {
			return &t.Metrics[i]
		}
	}
	return nil
}
