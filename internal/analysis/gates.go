package analysis

import (
	"fmt"
	"sort"
	"time"

	"github.com/mlrelease/mlrelease/internal/plan"
)

// Gate is one staging gate's result with its evidence.
type Gate struct {
	Name    string  `json:"name"`
	Verdict Verdict `json:"verdict"`
	// Value is what was measured; Limit what it was held to.
	Value   float64 `json:"value"`
	Limit   float64 `json:"limit"`
	Message string  `json:"message"`
}

// JudgeStaging applies the plan's staging gates to the evaluation of the candidate
// against the champion. A report with no answered rows fails every accuracy gate:
// missing data is never a pass.
func JudgeStaging(s plan.Staging, champion, candidate StagingReport) []Gate {
	var gates []Gate
	add := func(name string, ok bool, value, limit float64, format string, args ...any) {
		v := Fail
		if ok {
			v = Pass
		}
		gates = append(gates, Gate{Name: name, Verdict: v, Value: value, Limit: limit, Message: fmt.Sprintf(format, args...)})
	}
	n := fmt.Sprintf("(candidate n=%d, champion n=%d)", candidate.N, champion.N)
	if candidate.N == 0 || champion.N == 0 {
		add("accuracy", false, 0, s.MinAccuracy, "no answered evaluation rows %s", n)
		return gates
	}
	add("errors", candidate.ErrorRate() <= s.MaxErrorRate, candidate.ErrorRate(), s.MaxErrorRate,
		"candidate error rate %.4f (%d of %d requests), max %.4f", candidate.ErrorRate(), candidate.Errors, candidate.Requests, s.MaxErrorRate)
	add("accuracy", candidate.Accuracy >= s.MinAccuracy, candidate.Accuracy, s.MinAccuracy,
		"candidate accuracy %.4f, min %.4f %s", candidate.Accuracy, s.MinAccuracy, n)
	drop := 0.02
	if s.MaxAccuracyDrop != nil {
		drop = *s.MaxAccuracyDrop
	}
	add("accuracy_vs_champion", candidate.Accuracy >= champion.Accuracy-drop, candidate.Accuracy-champion.Accuracy, -drop,
		"candidate accuracy %.4f vs champion %.4f (change %+.4f, allowed drop %.4f) %s",
		candidate.Accuracy, champion.Accuracy, candidate.Accuracy-champion.Accuracy, drop, n)
	if d := s.MaxClassAccuracyDrop; d != nil {
		classes := make([]string, 0, len(champion.PerClass))
		for c := range champion.PerClass {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			ch, ca := champion.PerClass[c], candidate.PerClass[c]
			if ch.N == 0 {
				continue
			}
			chAcc := float64(ch.Correct) / float64(ch.N)
			caAcc := 0.0
			if ca.N > 0 {
				caAcc = float64(ca.Correct) / float64(ca.N)
			}
			add("class_accuracy_vs_champion:"+c, ca.N > 0 && caAcc >= chAcc-*d, caAcc-chAcc, -*d,
				"class %s: candidate accuracy %.4f (n=%d) vs champion %.4f (n=%d), change %+.4f, allowed drop %.4f",
				c, caAcc, ca.N, chAcc, ch.N, caAcc-chAcc, *d)
		}
	}
	if inc := s.MaxP99LatencyIncrease; inc > 0 && champion.P99 > 0 {
		ratio := float64(candidate.P99)/float64(champion.P99) - 1
		add("p99_latency_vs_champion", ratio <= inc, ratio, inc,
			"candidate p99 latency %s vs champion %s (%+.1f%%, allowed +%.1f%%)",
			candidate.P99.Round(time.Microsecond), champion.P99.Round(time.Microsecond), 100*ratio, 100*inc)
	}
	if lim := s.MaxP99Latency.D(); lim > 0 {
		add("p99_latency", candidate.P99 <= lim, candidate.P99.Seconds(), lim.Seconds(),
			"candidate p99 latency %s (champion %s), max %s", candidate.P99.Round(time.Microsecond), champion.P99.Round(time.Microsecond), lim)
	}
	return gates
}
