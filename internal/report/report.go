// Package report draws one release as a self-contained HTML page: the outcome and
// its reason first, the timeline of stages, weights and decisions, every metric
// candidate against champion with its judge's evidence path, the staging gates, the
// error budget and the decisions with the keys that signed them. Inline SVG and CSS,
// no script and no fetch: it opens offline, archives and prints.
package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/workflows"
)

// Release is what a report draws.
type Release struct {
	Status workflows.Status
	// Rounds are the release's analysis rounds in full (the registry's audit log),
	// oldest first. Without them the metrics are drawn from the status's series,
	// without the judges' evidence paths.
	Rounds []workflows.AnalysisRound
	// WebUI links to the release in the Temporal Web UI, when known.
	WebUI string
	// Now is when the report was drawn.
	Now time.Time
}

// MaxPoints bounds each chart's points: a release of thousands of rounds is drawn
// from buckets of neighbouring rounds, each with its worst verdict and its highest
// e-value, so a failure or a peak is never merged away.
const MaxPoints = 300

//go:embed report.html.tmpl
var pageTemplate string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct":  func(v float64) string { return fmt.Sprintf("%.3g%%", 100*v) },
	"num":  formatNum,
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"verdictClass": func(v analysis.Verdict) string {
		return "v-" + string(v)
	},
}).Parse(pageTemplate))

// Write renders the release's report to w.
func Write(w io.Writer, r Release) error {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	return page.Execute(w, build(r))
}

// view is what the template reads.
type view struct {
	Release
	OutcomeClass string
	Headline     string
	Timeline     template.HTML
	Metrics      []metricView
	Decisions    []workflows.Decision
	Rounds       int
	Downsampled  bool
}

type metricView struct {
	Name, Judge string
	Last        analysis.Measurement
	HasLast     bool
	Values      template.HTML // candidate against champion
	Evidence    template.HTML // e-value against 1/alpha, when the judge is sequential
	Fails       int
}

func build(r Release) view {
	st := r.Status
	v := view{Release: r, Decisions: st.Decisions, Rounds: max(st.Rounds, len(r.Rounds))}
	switch st.Outcome {
	case workflows.OutcomePromoted:
		v.OutcomeClass, v.Headline = "promoted", "Promoted"
	case workflows.OutcomeRolledBack:
		v.OutcomeClass, v.Headline = "rolled-back", "Rolled back"
	default:
		v.OutcomeClass, v.Headline = "running", "Running: "+strings.ReplaceAll(string(st.Stage), "_", " ")
	}
	points := timeline(r)
	v.Timeline = timelineChart(points, st.Decisions)
	v.Metrics, v.Downsampled = metrics(r)
	return v
}

// point is one round (or a bucket of rounds) of one metric.
type point struct {
	Round               int
	At                  time.Time
	Stage               workflows.Stage
	Weight              int
	Candidate, Champion *float64
	EValue              *float64
	Threshold           float64
	Verdict             analysis.Verdict
}

// timeline is the weight over time, one point a round, and where the release stands
// now (or ended).
func timeline(r Release) []point {
	var out []point
	if len(r.Rounds) > 0 {
		for _, rd := range r.Rounds {
			out = append(out, point{Round: rd.Round, At: rd.At, Stage: rd.Stage, Weight: rd.Weight})
		}
	} else if len(r.Status.Series) > 0 {
		for _, p := range r.Status.Series[0].Points { // every series has the same rounds
			out = append(out, point{Round: p.Round, At: p.At, Stage: p.Stage, Weight: p.Weight})
		}
	}
	st := r.Status
	if n := len(out); n > 0 && st.UpdatedAt.After(out[n-1].At) {
		out = append(out, point{At: st.UpdatedAt, Stage: st.Stage, Weight: st.CandidateWeight})
	}
	return out
}

// metrics draws each metric from the full rounds when there are some, else from the
// status's series.
func metrics(r Release) ([]metricView, bool) {
	per := map[string][]point{}
	judges := map[string]string{}
	last := map[string]analysis.Measurement{}
	var order []string
	add := func(name string, p point) {
		if _, ok := per[name]; !ok {
			order = append(order, name)
		}
		per[name] = append(per[name], p)
	}
	if len(r.Rounds) > 0 {
		for _, rd := range r.Rounds {
			for _, m := range rd.Measurements {
				cand, champ := drawnValues(m)
				p := point{Round: rd.Round, At: rd.At, Stage: rd.Stage, Weight: rd.Weight, Candidate: cand, Champion: champ, Verdict: m.Verdict}
				if e := m.Evidence; e != nil && e.EValue != nil && !math.IsNaN(*e.EValue) {
					p.EValue, p.Threshold = e.EValue, e.Threshold
				}
				add(m.Metric, p)
				judges[m.Metric], last[m.Metric] = m.Judge, m
			}
		}
	} else {
		for _, s := range r.Status.Series {
			for _, sp := range s.Points {
				add(s.Metric, point{Round: sp.Round, At: sp.At, Stage: sp.Stage, Weight: sp.Weight, Candidate: sp.Candidate, Champion: sp.Champion, Verdict: sp.Verdict})
			}
		}
		if n := len(r.Status.Analyses); n > 0 {
			for _, m := range r.Status.Analyses[n-1].Measurements {
				judges[m.Metric], last[m.Metric] = m.Judge, m
			}
		}
	}
	downsampled := false
	out := make([]metricView, 0, len(order))
	for _, name := range order {
		pts := per[name]
		if len(pts) > MaxPoints {
			pts, downsampled = downsample(pts, MaxPoints), true
		}
		mv := metricView{Name: name, Judge: judges[name]}
		mv.Last, mv.HasLast = last[name]
		mv.Values = valuesChart(pts)
		mv.Evidence = evidenceChart(pts)
		for _, p := range pts {
			if p.Verdict == analysis.Fail {
				mv.Fails++
			}
		}
		out = append(out, mv)
	}
	return out, downsampled
}

// drawnValues are what a metric's chart draws for a measurement: its value against
// the champion's; for a latency judge, the highest quantile's estimates (p99); for a
// drift judge, its PSI alone.
func drawnValues(m analysis.Measurement) (cand, champ *float64) {
	if m.Value != nil || m.Evidence == nil {
		return m.Value, m.Baseline
	}
	if q := m.Evidence.Quantiles; len(q) > 0 {
		last := q[len(q)-1]
		return &last.Candidate, &last.Champion
	}
	return m.Evidence.PSI, nil
}

// downsample merges neighbouring points into at most n: each keeps its first round,
// its last values, its highest e-value and its worst verdict.
func downsample(pts []point, n int) []point {
	size := (len(pts) + n - 1) / n
	out := make([]point, 0, n)
	for i := 0; i < len(pts); i += size {
		group := pts[i:min(i+size, len(pts))]
		p := group[len(group)-1]
		p.Round, p.At = group[0].Round, group[0].At
		for _, g := range group {
			if severity(g.Verdict) > severity(p.Verdict) {
				p.Verdict = g.Verdict
			}
			if g.EValue != nil && (p.EValue == nil || *g.EValue > *p.EValue) {
				p.EValue, p.Threshold = g.EValue, g.Threshold
			}
		}
		out = append(out, p)
	}
	return out
}

func severity(v analysis.Verdict) int {
	return slices.Index([]analysis.Verdict{analysis.Pass, analysis.Hold, analysis.Error, analysis.Fail}, v)
}

func formatNum(p *float64) string {
	if p == nil {
		return "no data"
	}
	return fmt.Sprintf("%.4g", *p)
}
