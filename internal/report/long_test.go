package report

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/workflows"
)

// longRelease is a generated release of n rounds with the demo plan's three metrics
// (rate and latency with e-values, drift without), through shadow, ten canary steps
// and a watch, paused once, approved by two signed keys, across several runs.
func longRelease(n int) Release {
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	f := func(v float64) *float64 { return &v }
	var rounds []workflows.AnalysisRound
	for i := range n {
		stage, weight := workflows.StageCanary, 10*(1+i*10/n)
		switch {
		case i < n/10:
			stage, weight = workflows.StageShadow, 0
		case i >= n*9/10:
			stage, weight = workflows.StageWatching, 95
		}
		e := math.Exp(math.Sin(float64(i)/50) * 2)
		rate := analysis.Measurement{Metric: "error-rate", Judge: "rate", Verdict: analysis.Pass, Value: f(0.010 + 0.002*math.Sin(float64(i)/7)), Baseline: f(0.011),
			Message: fmt.Sprintf("round %d", i+1), At: at(i),
			Evidence: &analysis.Evidence{CandidateN: float64(100 * (i + 1)), ChampionN: float64(900 * (i + 1)), Statistic: "rate ratio", EValue: f(e), PValue: f(1 / math.Max(e, 1)), Threshold: 60, Alpha: 1.0 / 60}}
		latency := analysis.Measurement{Metric: "latency", Judge: "latency", Verdict: analysis.Pass, Value: f(0.12), Baseline: f(0.118), At: at(i),
			Evidence: &analysis.Evidence{Statistic: "e-value", EValue: f(e / 2), Threshold: 60, Alpha: 1.0 / 60}}
		drift := analysis.Measurement{Metric: "prediction-drift", Judge: "drift", Verdict: analysis.Pass, Value: f(0.05), At: at(i)}
		if i%97 == 0 {
			drift.Verdict = analysis.Hold
		}
		rounds = append(rounds, workflows.AnalysisRound{Round: i + 1, Stage: stage, Weight: weight, At: at(i),
			Measurements: []analysis.Measurement{rate, latency, drift}})
	}
	key := func(k string) workflows.Attribution {
		return workflows.Attribution{Key: "SHA256:" + k, Signer: "alice"}
	}
	st := workflows.Status{ReleaseID: "release/wine", Model: "wine", Champion: "1", Candidate: "2", Stage: workflows.StagePromoted,
		CandidateWeight: 100, Rounds: n, Runs: 4, Outcome: workflows.OutcomePromoted, Reason: "every gate passed; approved by alice, bob",
		StartedBy: "alice", StartedAt: t0, UpdatedAt: at(n),
		Gates: []workflows.Gate{{Name: "accuracy", Verdict: analysis.Pass, Value: 0.97, Limit: 0.85, Message: "candidate accuracy 0.9718"}},
		Decisions: []workflows.Decision{
			{Kind: workflows.Pause, Who: "bob", Comment: "a customer report", Channel: "update", At: at(n / 3), Attribution: key("bobkey")},
			{Kind: workflows.Resume, Who: "bob", Comment: "unrelated", Channel: "update", At: at(n/3 + 120), Attribution: key("bobkey")},
			{Kind: workflows.Approve, Who: "mallory", Channel: "update", At: at(n*9/10 - 5), Refused: true, Reason: "unlisted key"},
			{Kind: workflows.Approve, Who: "alice", Comment: "<script>alert(1)</script> looks good", Channel: "update", At: at(n*9/10 - 3), Attribution: key("alicekey")},
		},
		Budget: &analysis.Budget{Alpha: 0.05, Spent: 0.05, Judges: []analysis.BudgetLine{{Stage: "canary", Metric: "error-rate", Alpha: 1.0 / 60, Started: true, PValue: 0.2, Last: analysis.Pass}}},
	}
	st.Analyses = rounds[n-workflows.RecentRounds:]
	return Release{Status: st, Rounds: rounds, WebUI: "http://localhost:8233/namespaces/default/workflows/release%2Fwine", Now: at(n + 1)}
}

func TestReportOfThousandsOfRounds(t *testing.T) {
	r := longRelease(3000)
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	if b.Len() > 2<<20 {
		t.Fatalf("report of 3,000 rounds is %d bytes, over 2 MiB", b.Len())
	}
	for _, want := range []string{
		`class="outcome promoted"`, "3000 analysis rounds", "4 workflow runs (continue-as-new)",
		"drawn in at most 300 points", "rollback at 60 (1/alpha)", "SHA256:alicekey", "refused: unlisted key",
		"error-rate", "latency", "prediction-drift", "canary", "shadow", "watching", "5%, of which 5% is spent",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(html, "<script>") {
		t.Error("a comment's markup reached the page unescaped")
	}
	// Three metric charts of at most MaxPoints verdict dots each.
	if dots := strings.Count(html, `r="2.5"`); dots > 3*MaxPoints {
		t.Errorf("%d verdict dots, want at most %d", dots, 3*MaxPoints)
	}
	t.Logf("report of 3,000 rounds: %d bytes", b.Len())
}

// A hold in a merged point survives downsampling, as does a failure and the peak
// e-value.
func TestDownsampleKeepsTheWorst(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	pts := make([]point, 1000)
	for i := range pts {
		pts[i] = point{Round: i + 1, Verdict: analysis.Pass, EValue: f(1)}
	}
	pts[501].Verdict, pts[777].EValue = analysis.Fail, f(99)
	out := downsample(pts, 100)
	if len(out) != 100 {
		t.Fatalf("%d points", len(out))
	}
	fails, peak := 0, 0.0
	for _, p := range out {
		if p.Verdict == analysis.Fail {
			fails++
		}
		peak = math.Max(peak, *p.EValue)
	}
	if fails != 1 || peak != 99 || out[50].Round != 501 {
		t.Errorf("fails %d, peak %v, point 50 starts at round %d", fails, peak, out[50].Round)
	}
}

// BenchmarkReportThousandsOfRounds: the time to draw a 3,000-round release.
func BenchmarkReportThousandsOfRounds(b *testing.B) {
	r := longRelease(3000)
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := Write(&buf, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes/report")
}
