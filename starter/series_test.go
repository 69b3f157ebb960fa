package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/workflows"
)

// status draws each metric over the whole release, counts every round, and says
// where the full evidence is and when a paused release rolls back.
func TestStatusTextOfALongRelease(t *testing.T) {
	v1, v2 := 0.001, 0.02
	st := workflows.Status{ReleaseID: "release/wine", Model: "wine", Candidate: "2", Champion: "1",
		Stage: workflows.StageCanary, CandidateWeight: 10, Rounds: 4321, Paused: true,
		PausedUntil: time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC),
		Analyses: []workflows.AnalysisRound{{Round: 4321, Stage: workflows.StageCanary, Weight: 10,
			Measurements: []analysis.Measurement{{Metric: "error-rate", Verdict: analysis.Pass, Value: &v1}}}},
		Series: []workflows.MetricSeries{{Metric: "error-rate", Every: 64, Points: []workflows.SeriesPoint{
			{Round: 1, Verdict: analysis.Pass, Candidate: &v1}, {Round: 65, Verdict: analysis.Hold},
			{Round: 129, Verdict: analysis.Fail, Candidate: &v2}}}},
	}
	out := statusText(st)
	for _, want := range []string{"4321 rounds so far", "every round: mlrelease evidence wine", ".hX", "(64 rounds a mark)", "paused: rolls back at "} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
