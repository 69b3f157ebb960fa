package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

const timeFormat = "2006-01-02 15:04:05"

// progressBar draws a percentage as ten cells: progressBar(50) is "[#####-----] 50%".
// Any traffic at all shows at least one cell.
func progressBar(percent int) string {
	const width = 10
	percent = min(max(percent, 0), 100)
	filled := (percent*width + 50) / 100
	if percent > 0 && filled == 0 {
		filled = 1
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "] " + strconv.Itoa(percent) + "%"
}

// stageText is the stage, marked when paused.
func stageText(st workflows.Status) string {
	s := string(st.Stage)
	if s == "" {
		s = release.StagePending
	}
	if st.Paused {
		s += " (paused)"
	}
	return s
}

// stepText is "step 2/3" during canary steps, else "".
func stepText(st workflows.Status) string {
	if st.Step <= 0 {
		return ""
	}
	return fmt.Sprintf("step %d/%d", st.Step, len(st.Steps))
}

// value formats a measured number; nil is no data.
func value(v *float64) string {
	if v == nil {
		return "no data"
	}
	return strconv.FormatFloat(*v, 'g', 4, 64)
}

// verdicts is the latest analysis round in one line: "error_rate=pass(0.002) ...".
func verdicts(st workflows.Status) string {
	n := len(st.Analyses)
	if n == 0 {
		return ""
	}
	parts := make([]string, 0, len(st.Analyses[n-1].Measurements))
	for _, m := range st.Analyses[n-1].Measurements {
		part := fmt.Sprintf("%s=%s(%s)", m.Metric, m.Verdict, value(m.Value))
		for _, s := range st.Series {
			if line := sparkline(s.Points, sparkPoints); s.Metric == m.Metric && line != "" {
				part = m.Metric + " " + line + " " + strings.TrimPrefix(part, m.Metric+"=")
			}
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, " ")
}

// sparkPoints is how many of a metric's latest points watch draws.
const sparkPoints = 12

var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws the candidate's latest values, lowest to highest of those shown;
// a point with no value is a space, a failed one an exclamation mark.
func sparkline(points []workflows.SeriesPoint, n int) string {
	if len(points) > n {
		points = points[len(points)-n:]
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range points {
		if p.Candidate != nil {
			lo, hi = math.Min(lo, *p.Candidate), math.Max(hi, *p.Candidate)
		}
	}
	if math.IsInf(lo, 1) {
		return ""
	}
	out := make([]rune, len(points))
	for i, p := range points {
		switch {
		case p.Verdict == analysis.Fail:
			out[i] = '!'
		case p.Candidate == nil:
			out[i] = ' '
		case hi == lo:
			out[i] = sparks[len(sparks)/2]
		default:
			out[i] = sparks[int((*p.Candidate-lo)/(hi-lo)*float64(len(sparks)-1)+0.5)]
		}
	}
	return string(out)
}

// watchLine is one line of watch: time, stage, canary weight, step and verdicts.
func watchLine(st workflows.Status) string {
	at := st.UpdatedAt
	if at.IsZero() {
		at = time.Now()
	}
	fields := []string{at.Local().Format("15:04:05"), fmt.Sprintf("%-17s", stageText(st)), fmt.Sprintf("%-17s", progressBar(st.CandidateWeight))}
	if st.ShadowShare > 0 {
		fields = append(fields, fmt.Sprintf("shadow %d%%", st.ShadowShare))
	}
	for _, s := range []string{stepText(st), verdicts(st)} {
		if s != "" {
			fields = append(fields, s)
		}
	}
	return strings.TrimRight(strings.Join(fields, "  "), " ")
}

// decisionText is one recorded decision: who, when, through what, and a refusal.
func decisionText(d workflows.Decision) string {
	s := fmt.Sprintf("%s  %s by %s", d.At.Local().Format(timeFormat), d.Kind, d.Who)
	via := d.Channel
	if d.Source != "" {
		via = d.Source + ", " + d.Channel
	}
	if via != "" {
		s += " (" + via + ")"
	}
	if d.Comment != "" {
		s += ": " + d.Comment
	}
	switch {
	case d.Key != "":
		s += " [signed " + d.Signer + " " + d.Key + "]"
	case d.Unsigned && !d.Refused:
		s += " [unsigned]"
	}
	if d.Refused {
		s += " REFUSED: " + d.Reason
	}
	return s
}

// outcomeText is the last line of a release.
func outcomeText(st workflows.Status) string {
	switch {
	case st.Outcome == workflows.OutcomePromoted:
		return fmt.Sprintf("promoted: version %s of %s is the champion (%s)", st.Candidate, st.Model, st.Reason)
	case st.Outcome == workflows.OutcomeRolledBack:
		return fmt.Sprintf("rolled back: champion %s of %s kept (%s)", st.Champion, st.Model, st.Reason)
	case st.Reason != "":
		return fmt.Sprintf("ended at stage %s: %s", stageText(st), st.Reason)
	}
	return "stage " + stageText(st)
}

// statusText renders a release's status for people.
func statusText(st workflows.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  stage %s", st.ReleaseID, stageText(st))
	if !st.UpdatedAt.IsZero() {
		fmt.Fprintf(&b, ", updated %s", st.UpdatedAt.Local().Format(timeFormat))
	}
	b.WriteString("\n")
	champion := st.Champion
	if champion == "" {
		champion = "(not resolved yet)"
	}
	fmt.Fprintf(&b, "  model      %s: candidate %s vs champion %s\n", st.Model, st.Candidate, champion)
	if st.Report != "" {
		fmt.Fprintf(&b, "  report     %s\n", st.Report)
	}
	if !st.StartedAt.IsZero() {
		fmt.Fprintf(&b, "  started    %s", st.StartedAt.Local().Format(timeFormat))
		if st.StartedBy != "" {
			fmt.Fprintf(&b, " by %s", st.StartedBy)
		}
		if st.StarterKey != "" {
			fmt.Fprintf(&b, " (key %s)", st.StarterKey)
		}
		b.WriteString("\n")
	}
	if st.Signing != "" {
		fmt.Fprintf(&b, "  decisions  %s", st.Signing)
		if st.ReleaseRun != "" {
			fmt.Fprintf(&b, " (sign for release %s)", st.ReleaseRun)
		}
		b.WriteString("\n")
		if st.TrustNote != "" {
			fmt.Fprintf(&b, "  trust      %s\n", st.TrustNote)
		}
	}
	fmt.Fprintf(&b, "  canary     %s", progressBar(st.CandidateWeight))
	if s := stepText(st); s != "" {
		fmt.Fprintf(&b, ", %s", s)
	}
	fmt.Fprintf(&b, "; shadow %d%%\n", st.ShadowShare)
	switch {
	case st.ApprovalRequired:
		fmt.Fprintf(&b, "  approval   required from %s\n", strings.Join(st.Approvers, ", "))
	case len(st.Approvers) > 0:
		fmt.Fprintf(&b, "  approval   optional, by %s\n", strings.Join(st.Approvers, ", "))
	default:
		b.WriteString("  approval   not required\n")
	}
	if line := st.Budget.Summary(); line != "" {
		fmt.Fprintf(&b, "  budget     %s\n", line)
	}

	if len(st.Gates) > 0 {
		b.WriteString("\ngates\n")
		for _, g := range st.Gates {
			fmt.Fprintf(&b, "  %-5s %s: %s\n", g.Verdict, g.Name, gateText(g))
		}
	}
	if n := len(st.Analyses); n > 0 {
		r := st.Analyses[n-1]
		fmt.Fprintf(&b, "\nlatest analysis: %s", r.Stage)
		if r.Step > 0 {
			fmt.Fprintf(&b, " step %d", r.Step)
		}
		total := max(st.Rounds, n) // releases from before Rounds count their analyses
		rounds := "1 round"
		if total > 1 {
			rounds = strconv.Itoa(total) + " rounds"
		}
		fmt.Fprintf(&b, " at %d%%, %s (%s so far)\n", r.Weight, r.At.Local().Format(timeFormat), rounds)
		for _, m := range r.Measurements {
			fmt.Fprintf(&b, "  %-5s %s = %s", m.Verdict, m.Metric, value(m.Value))
			if m.Baseline != nil {
				fmt.Fprintf(&b, " (champion %s)", value(m.Baseline))
			}
			if m.Message != "" {
				fmt.Fprintf(&b, ": %s", m.Message)
			}
			b.WriteString("\n")
		}
	}
	if len(st.Series) > 0 {
		fmt.Fprintf(&b, "\nwhole release (every round: mlrelease evidence %s)\n", st.Model)
		for _, s := range st.Series {
			fmt.Fprintf(&b, "  %-24s %s\n", s.Metric, seriesText(s))
		}
	}
	if st.Paused && !st.PausedUntil.IsZero() {
		fmt.Fprintf(&b, "\npaused: rolls back at %s unless resumed\n", st.PausedUntil.Local().Format(timeFormat))
	}
	if len(st.Decisions) > 0 {
		b.WriteString("\ndecisions\n")
		for _, d := range st.Decisions {
			b.WriteString("  " + decisionText(d) + "\n")
		}
	}
	if st.Outcome != "" || st.Reason != "" {
		b.WriteString("\n" + outcomeText(st) + "\n")
	}
	return b.String()
}

// seriesText draws a metric over the whole release: one mark a point, by its worst
// verdict (. pass, h hold, e error, X fail), and the candidate's range.
func seriesText(s workflows.MetricSeries) string {
	var marks strings.Builder
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range s.Points {
		switch p.Verdict {
		case analysis.Pass:
			marks.WriteByte('.')
		case analysis.Fail:
			marks.WriteByte('X')
		case analysis.Error:
			marks.WriteByte('e')
		default:
			marks.WriteByte('h')
		}
		if p.Candidate != nil {
			lo, hi = min(lo, *p.Candidate), max(hi, *p.Candidate)
		}
	}
	out := marks.String()
	if lo <= hi {
		out += fmt.Sprintf("  %s..%s", value(&lo), value(&hi))
	}
	if s.Every > 1 {
		out += fmt.Sprintf("  (%d rounds a mark)", s.Every)
	}
	return out
}

func gateText(g analysis.Gate) string {
	if g.Message != "" {
		return g.Message
	}
	return fmt.Sprintf("%g (limit %g)", g.Value, g.Limit)
}

// listText writes releases as a table.
func listText(w io.Writer, rs []release.Release, model string) error {
	if len(rs) == 0 {
		if model != "" {
			_, err := fmt.Fprintf(w, "no releases of model %s\n", model)
			return err
		}
		_, err := fmt.Fprintln(w, "no releases")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW\tSTATUS\tSTAGE\tCANDIDATE\tWEIGHT\tSTARTED\tCLOSED")
	for _, r := range rs {
		closed := "-"
		if !r.ClosedAt.IsZero() {
			closed = r.ClosedAt.Local().Format(timeFormat)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%%\t%s\t%s\n", r.WorkflowID, r.Status, r.Stage, r.Candidate, r.Weight,
			r.StartedAt.Local().Format(timeFormat), closed)
	}
	return tw.Flush()
}

// decidedText confirms a decision.
func decidedText(model string, d workflows.Decision) string {
	id := workflows.WorkflowID(model)
	if d.Channel == "signal" {
		return fmt.Sprintf("sent %s to %s as %s by signal: the release checks it when it takes it; see `mlrelease status %s`", d.Kind, id, d.Who, model)
	}
	return fmt.Sprintf("%s: %s by %s, recorded at %s", id, d.Kind, d.Who, d.At.Local().Format(timeFormat))
}
