package workflows

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/mlrelease/mlrelease/internal/analysis"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// A release may run for days, so what it keeps in its status is bounded (rule 10):
// the latest rounds in full, and every metric over the whole release as a series of
// at most SeriesPoints points. Every round in full goes to the registry's audit log.
const (
	// RecentRounds is how many of the latest analysis rounds the status keeps in full
	// (Argo Rollouts keeps 10 measurements).
	RecentRounds = 10
	// SeriesPoints bounds each metric's series: when it is full, neighbouring points
	// merge and each point then stands for twice as many rounds.
	SeriesPoints = 128
	// AuditBatch is how many rounds go to the audit log in one activity.
	AuditBatch = 10
	// PayloadBudget is the most any payload a release writes may take: the status,
	// the result, every activity's input and output.
	PayloadBudget = 256 << 10
	// EventAnalysis is the registry audit event that holds one round in full.
	EventAnalysis = registry.KindAnalysis
	// RecentDecisions bounds the decisions the status keeps.
	RecentDecisions = 50
	// EventDecision is the registry audit event that records one decision.
	EventDecision = "decision"
)

// addDecision records a decision: in the status, among the latest RecentDecisions
// (an accepted approval, rejection or abort is never dropped), and for the audit log.
func (r *release) addDecision(d Decision) {
	r.Status.DecisionsTaken++
	r.Status.Decisions = append(r.Status.Decisions, d)
	if r.auditDecisions {
		r.UnrecordedDecisions = append(r.UnrecordedDecisions, d)
	}
	for len(r.Status.Decisions) > RecentDecisions {
		drop := 0
		for i, old := range r.Status.Decisions {
			if old.Refused || (old.Kind != Approve && old.Kind != Reject && old.Kind != Abort) {
				drop = i
				break
			}
		}
		r.Status.Decisions = append(r.Status.Decisions[:drop:drop], r.Status.Decisions[drop+1:]...)
	}
}

// decisionEvents turns decisions into audit events, keyed by the release and the
// decision's number.
func decisionEvents(releaseID, firstRunID, version string, first int, ds []Decision) ([]registry.Event, error) {
	out := make([]registry.Event, 0, len(ds))
	for i, d := range ds {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("decision %d: %w", first+i, err)
		}
		verb := d.Kind
		if d.Refused {
			verb = "refused " + d.Kind
		}
		out = append(out, registry.Event{
			Key:     fmt.Sprintf("%s/%s/decision/%d", releaseID, firstRunID, first+i),
			Version: version, ReleaseID: releaseID, Kind: EventDecision, Actor: d.Who,
			Message:  fmt.Sprintf("%s by %s via %s: %s", verb, d.Who, d.Channel, d.Comment),
			Evidence: map[string]string{"decision": string(b), EvidenceFirstRun: firstRunID},
			At:       d.At,
		})
	}
	return out, nil
}

// Evidence keys of an EventAnalysis event: the round in JSON, and the release's
// first run ID, which tells the releases of one model (one workflow ID) apart.
const (
	EvidenceRound    = "round"
	EvidenceFirstRun = "firstRunId"
)

// AuditKey is the audit event key of a release's round.
func AuditKey(releaseID, firstRunID string, round int) string {
	return fmt.Sprintf("%s/%s/round/%d", releaseID, firstRunID, round)
}

// MetricSeries is one metric over the whole release, downsampled.
type MetricSeries struct {
	Metric string `json:"metric"`
	// Every is how many rounds each point stands for: 1, 2, 4, ...
	Every  int           `json:"every"`
	Points []SeriesPoint `json:"points"`
}

// SeriesPoint is one point of a series: the first round it stands for, its values,
// and the worst verdict of its rounds (a failure is never merged away).
type SeriesPoint struct {
	Round     int              `json:"r"`
	At        time.Time        `json:"t"`
	Stage     Stage            `json:"s,omitempty"`
	Weight    int              `json:"w"`
	Candidate *float64         `json:"c,omitempty"`
	Champion  *float64         `json:"b,omitempty"`
	Verdict   analysis.Verdict `json:"v"`
}

// severity orders verdicts from best to worst.
func severity(v analysis.Verdict) int {
	switch v {
	case analysis.Pass:
		return 0
	case analysis.Hold:
		return 1
	case analysis.Error:
		return 2
	case analysis.Fail:
		return 3
	}
	return 1
}

func worse(a, b analysis.Verdict) analysis.Verdict {
	if severity(b) > severity(a) {
		return b
	}
	return a
}

// add puts one round's measurement of the series' metric in.
func (s *MetricSeries) add(round AnalysisRound, m analysis.Measurement) {
	if s.Every == 0 {
		s.Every = 1
	}
	p := SeriesPoint{Round: round.Round, At: round.At, Stage: round.Stage, Weight: round.Weight,
		Candidate: m.Value, Champion: m.Baseline, Verdict: m.Verdict}
	if n := len(s.Points); n > 0 && round.Round-s.Points[n-1].Round < s.Every {
		s.Points[n-1].Verdict = worse(s.Points[n-1].Verdict, p.Verdict)
		return
	}
	s.Points = append(s.Points, p)
	if len(s.Points) <= SeriesPoints {
		return
	}
	// Full: merge pairs of points, keeping the first's values and the worse verdict.
	merged := s.Points[:0]
	for i := 0; i < len(s.Points); i += 2 {
		q := s.Points[i]
		if i+1 < len(s.Points) {
			q.Verdict = worse(q.Verdict, s.Points[i+1].Verdict)
		}
		merged = append(merged, q)
	}
	s.Points = merged
	s.Every *= 2
}

// addRound records a round: in full among the recent rounds and for the audit log,
// and as a point in every metric's series.
func (r *release) addRound(round AnalysisRound) {
	r.Status.Rounds++
	round.Round = r.Status.Rounds
	r.Status.Analyses = append(r.Status.Analyses, round)
	if n := len(r.Status.Analyses); n > RecentRounds {
		r.Status.Analyses = append([]AnalysisRound(nil), r.Status.Analyses[n-RecentRounds:]...)
	}
	if r.bounded {
		r.Unrecorded = append(r.Unrecorded, round)
	}
	for _, m := range round.Measurements {
		i := 0
		for i < len(r.Status.Series) && r.Status.Series[i].Metric != m.Metric {
			i++
		}
		if i == len(r.Status.Series) {
			r.Status.Series = append(r.Status.Series, MetricSeries{Metric: m.Metric, Every: 1})
		}
		r.Status.Series[i].add(round, m)
	}
}

// auditEvents turns rounds into the registry events that keep them in full. The key
// is the release (its workflow ID and first run, the same in every run) and the
// round's number, so a retried or repeated write records each round once, in
// whichever run it happens.
func auditEvents(releaseID, firstRunID, version string, rounds []AnalysisRound) ([]registry.Event, error) {
	out := make([]registry.Event, 0, len(rounds))
	for _, rd := range rounds {
		b, err := json.Marshal(rd)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", rd.Round, err)
		}
		verdicts := ""
		for i, m := range rd.Measurements {
			if i > 0 {
				verdicts += ", "
			}
			verdicts += m.Metric + " " + string(m.Verdict)
		}
		out = append(out, registry.Event{
			Key:     AuditKey(releaseID, firstRunID, rd.Round),
			Version: version, ReleaseID: releaseID, Kind: EventAnalysis, Actor: "mlrelease",
			Message:  fmt.Sprintf("round %d, %s at %d%%: %s", rd.Round, rd.Stage, rd.Weight, verdicts),
			Evidence: map[string]string{EvidenceRound: string(b), EvidenceFirstRun: firstRunID},
			At:       rd.At,
		})
	}
	return out, nil
}
