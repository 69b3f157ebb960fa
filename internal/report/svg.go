package report

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/workflows"
)

// Charts are SVG drawn here, in a fixed frame that CSS scales to the page's width.
const (
	chartW, chartH = 960.0, 220.0
	padL, padR     = 72.0, 16.0
	padT, padB     = 14.0, 30.0
)

var stageColors = map[workflows.Stage]string{
	workflows.StageShadow:   "#e8e2f6",
	workflows.StageCanary:   "#fdf0d5",
	workflows.StageWatching: "#dff1e4",
}

var verdictColors = map[analysis.Verdict]string{
	analysis.Pass:  "#2e8b57",
	analysis.Hold:  "#c9a227",
	analysis.Error: "#8a8a8a",
	analysis.Fail:  "#c0392b",
}

type frame struct {
	b          strings.Builder
	xmin, xmax float64
	ymin, ymax float64
	logY       bool
}

func newFrame(label string, xmin, xmax, ymin, ymax float64, logY bool) *frame {
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	f := &frame{xmin: xmin, xmax: xmax, ymin: ymin, ymax: ymax, logY: logY}
	fmt.Fprintf(&f.b, `<svg viewBox="0 0 %g %g" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		chartW, chartH, template.HTMLEscapeString(label))
	fmt.Fprintf(&f.b, `<rect class="plot" x="%g" y="%g" width="%g" height="%g"/>`, padL, padT, chartW-padL-padR, chartH-padT-padB)
	return f
}

func (f *frame) x(v float64) float64 {
	return padL + (v-f.xmin)/(f.xmax-f.xmin)*(chartW-padL-padR)
}

func (f *frame) y(v float64) float64 {
	return chartH - padB - (v-f.ymin)/(f.ymax-f.ymin)*(chartH-padT-padB)
}

// yTicks draws horizontal grid lines with labels.
func (f *frame) yTicks(ticks []float64, label func(float64) string) {
	for _, t := range ticks {
		y := f.y(t)
		fmt.Fprintf(&f.b, `<line class="grid" x1="%g" x2="%g" y1="%.1f" y2="%.1f"/><text class="tick" x="%g" y="%.1f" text-anchor="end">%s</text>`,
			padL, chartW-padR, y, y, padL-6, y+4, template.HTMLEscapeString(label(t)))
	}
}

func (f *frame) xLabel(left, right string) {
	fmt.Fprintf(&f.b, `<text class="tick" x="%g" y="%g">%s</text><text class="tick" x="%g" y="%g" text-anchor="end">%s</text>`,
		padL, chartH-8, template.HTMLEscapeString(left), chartW-padR, chartH-8, template.HTMLEscapeString(right))
}

// line draws the points, with a gap where a value is missing.
func (f *frame) line(class string, xs []float64, ys []*float64) {
	var seg []string
	flush := func() {
		if len(seg) > 1 {
			fmt.Fprintf(&f.b, `<polyline class="%s" points="%s"/>`, class, strings.Join(seg, " "))
		} else if len(seg) == 1 {
			var x, y float64
			fmt.Sscanf(seg[0], "%g,%g", &x, &y)
			fmt.Fprintf(&f.b, `<circle class="%s dot" cx="%.1f" cy="%.1f" r="2"/>`, class, x, y)
		}
		seg = seg[:0]
	}
	for i, v := range ys {
		if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
			flush()
			continue
		}
		seg = append(seg, fmt.Sprintf("%.1f,%.1f", f.x(xs[i]), f.y(*v)))
	}
	flush()
}

func (f *frame) html() template.HTML {
	f.b.WriteString(`</svg>`)
	return template.HTML(f.b.String()) // built from numbers and escaped text only
}

// timelineChart is the candidate's weight over time on the stages' bands, with the
// decisions as marks.
func timelineChart(pts []point, decisions []workflows.Decision) template.HTML {
	if len(pts) == 0 {
		return ""
	}
	t0, t1 := pts[0].At, pts[len(pts)-1].At
	for _, d := range decisions {
		if d.At.Before(t0) {
			t0 = d.At
		}
		if d.At.After(t1) {
			t1 = d.At
		}
	}
	sec := func(t time.Time) float64 { return t.Sub(t0).Seconds() }
	f := newFrame("candidate weight over time", 0, sec(t1), 0, 100, false)
	// Stage bands.
	for i := 0; i < len(pts); {
		j := i
		for j+1 < len(pts) && pts[j+1].Stage == pts[i].Stage {
			j++
		}
		end := t1
		if j+1 < len(pts) {
			end = pts[j+1].At
		}
		if c, ok := stageColors[pts[i].Stage]; ok {
			x0, x1 := f.x(sec(pts[i].At)), f.x(sec(end))
			fmt.Fprintf(&f.b, `<rect x="%.1f" y="%g" width="%.1f" height="%g" fill="%s"><title>%s</title></rect>`,
				x0, padT, math.Max(x1-x0, 1), chartH-padT-padB, c, template.HTMLEscapeString(string(pts[i].Stage)))
			fmt.Fprintf(&f.b, `<text class="band" x="%.1f" y="%g">%s</text>`, x0+3, padT+12, template.HTMLEscapeString(string(pts[i].Stage)))
		}
		i = j + 1
	}
	f.yTicks([]float64{0, 25, 50, 75, 100}, func(v float64) string { return fmt.Sprintf("%g%%", v) })
	// The weight as steps.
	var b strings.Builder
	for i, p := range pts {
		x, y := f.x(sec(p.At)), f.y(float64(p.Weight))
		if i > 0 {
			fmt.Fprintf(&b, "%.1f,%.1f ", x, f.y(float64(pts[i-1].Weight)))
		}
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	fmt.Fprintf(&f.b, `<polyline class="weight" points="%s"/>`, strings.TrimSpace(b.String()))
	for _, d := range decisions {
		x := f.x(sec(d.At))
		class := "decision"
		if d.Refused {
			class += " refused"
		}
		who := d.Who
		if d.Key != "" {
			who += " (" + d.Key + ")"
		}
		fmt.Fprintf(&f.b, `<line class="%s" x1="%.1f" x2="%.1f" y1="%g" y2="%g"><title>%s</title></line><text class="mark" x="%.1f" y="%g">%s</text>`,
			class, x, x, padT, chartH-padB, template.HTMLEscapeString(d.Kind+" by "+who+": "+d.Comment),
			x+2, chartH-padB-4, template.HTMLEscapeString(d.Kind))
	}
	f.xLabel(t0.UTC().Format("Jan 2 15:04:05"), t1.UTC().Format("Jan 2 15:04:05")+fmt.Sprintf(" (%s)", t1.Sub(t0).Round(time.Second)))
	return f.html()
}

// valuesChart is the candidate's value against the champion's, round by round, with
// each round's verdict as a dot along the bottom.
func valuesChart(pts []point) template.HTML {
	xs := make([]float64, len(pts))
	cand, champ := make([]*float64, len(pts)), make([]*float64, len(pts))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, p := range pts {
		xs[i] = float64(i)
		cand[i], champ[i] = p.Candidate, p.Champion
		for _, v := range []*float64{p.Candidate, p.Champion} {
			if v != nil && !math.IsNaN(*v) && !math.IsInf(*v, 0) {
				lo, hi = math.Min(lo, *v), math.Max(hi, *v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	lo = math.Min(lo, 0)
	hi += (hi - lo) * 0.1
	f := newFrame("candidate against champion", 0, float64(max(len(pts)-1, 1)), lo, hi, false)
	f.yTicks([]float64{f.ymin, (f.ymin + f.ymax) / 2, f.ymax}, func(v float64) string { return fmt.Sprintf("%.3g", v) })
	f.line("champion", xs, champ)
	f.line("candidate", xs, cand)
	for i, p := range pts {
		fmt.Fprintf(&f.b, `<circle cx="%.1f" cy="%g" r="2.5" fill="%s"><title>round %d, %s at %d%%: %s</title></circle>`,
			f.x(xs[i]), chartH-padB+8, verdictColors[p.Verdict], p.Round, p.Stage, p.Weight, p.Verdict)
	}
	if len(pts) > 0 {
		f.xLabel(fmt.Sprintf("round %d", pts[0].Round), fmt.Sprintf("round %d", pts[len(pts)-1].Round))
	}
	return f.html()
}

// evidenceChart is a sequential judge's e-value round by round on a log scale,
// against its rollback line 1/alpha; empty for judges without e-values.
func evidenceChart(pts []point) template.HTML {
	threshold := 0.0
	xs := make([]float64, len(pts))
	ys := make([]*float64, len(pts))
	hi := 0.0
	any := false
	for i, p := range pts {
		xs[i] = float64(i)
		if p.EValue == nil || *p.EValue <= 0 {
			continue
		}
		any = true
		l := math.Log10(*p.EValue)
		ys[i] = &l
		hi = math.Max(hi, l)
		if p.Threshold > 1 {
			threshold = math.Log10(p.Threshold)
		}
	}
	if !any {
		return ""
	}
	top := math.Max(hi, threshold) + 0.5
	bottom := -2.0
	f := newFrame("e-value against the rollback line", 0, float64(max(len(pts)-1, 1)), bottom, top, true)
	var ticks []float64
	for t := bottom; t <= top; t++ {
		ticks = append(ticks, t)
	}
	f.yTicks(ticks, func(v float64) string { return fmt.Sprintf("%g", math.Pow(10, v)) })
	if threshold > 0 {
		y := f.y(threshold)
		fmt.Fprintf(&f.b, `<line class="threshold" x1="%g" x2="%g" y1="%.1f" y2="%.1f"/><text class="mark" x="%g" y="%.1f">rollback at %.3g (1/alpha)</text>`,
			padL, chartW-padR, y, y, padL+4, y-4, math.Pow(10, threshold))
	}
	for i := range ys {
		if ys[i] != nil && *ys[i] < bottom {
			ys[i] = &bottom
		}
	}
	f.line("evalue", xs, ys)
	return f.html()
}
