package analysis

import (
	"fmt"

	"github.com/mlrelease/mlrelease/internal/plan"
)

// Budget is a release's error budget (the plan's analysis.alpha) as its statistical
// judges share and spend it: the status shows it. Its size is bounded by the plan's
// statistical metrics (at most three lines each: shadow, canary, watch).
type Budget struct {
	// Alpha is the release's budget: the chance that a candidate as good as the
	// champion is rolled back by any statistical judge.
	Alpha float64 `json:"alpha"`
	// Spent is the sum of the shares of the judges that have judged data so far:
	// their tests have run, and each may have used all of its share. It reaches
	// Alpha when every stage has run.
	Spent  float64      `json:"spent"`
	Judges []BudgetLine `json:"judges"`
}

// BudgetLine is one statistical test's share and its evidence so far.
type BudgetLine struct {
	Stage  string  `json:"stage"`
	Metric string  `json:"metric"`
	Alpha  float64 `json:"alpha"`
	// Started says the test has judged data: its share is spent.
	Started bool `json:"started"`
	// PValue is the sequential test's anytime-valid p-value so far (1 / the largest
	// e-value); it fails once PValue <= Alpha. Zero before any evidence, and for
	// the drift judge, which has no p-value.
	PValue float64 `json:"pValue,omitempty"`
	Last   Verdict `json:"last,omitempty"`
}

// NewBudget lists the plan's statistical tests and their shares (plan.Budget).
func NewBudget(p *plan.Plan) *Budget {
	b := &Budget{Alpha: p.Analysis.AlphaOrDefault(), Judges: []BudgetLine{}}
	for _, s := range p.Budget() {
		b.Judges = append(b.Judges, BudgetLine{Stage: s.Stage, Metric: s.Metric, Alpha: s.Alpha})
	}
	return b
}

// Record takes a round of a stage's measurements. A watch metric that the canary
// judged goes on with the canary's test, and so with its line.
func (b *Budget) Record(stage string, ms []Measurement) {
	for _, m := range ms {
		l := b.line(stage, m.Metric)
		if l == nil && stage == plan.BudgetWatch {
			l = b.line(plan.BudgetCanary, m.Metric)
		}
		if l == nil {
			continue
		}
		l.Last = m.Verdict
		if ev := m.Evidence; ev != nil && ev.CandidateN > 0 {
			l.Started = true
			if ev.PValue != nil {
				l.PValue = *ev.PValue
			}
		}
	}
	b.Spent = 0
	for _, l := range b.Judges {
		if l.Started {
			b.Spent += l.Alpha
		}
	}
}

func (b *Budget) line(stage, metric string) *BudgetLine {
	for i := range b.Judges {
		if b.Judges[i].Stage == stage && b.Judges[i].Metric == metric {
			return &b.Judges[i]
		}
	}
	return nil
}

// Summary is the budget in a line: "1.67% of 5% spent (2 of 6 tests judged)", or ""
// when the plan has no statistical judge.
func (b *Budget) Summary() string {
	if b == nil || len(b.Judges) == 0 {
		return ""
	}
	started := 0
	for _, l := range b.Judges {
		if l.Started {
			started++
		}
	}
	return fmt.Sprintf("%.3g%% of %.3g%% spent (%d of %d tests judged)", 100*b.Spent, 100*b.Alpha, started, len(b.Judges))
}
