package release

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows"
)

// Evidence is every analysis round of one release in full, as the registry's audit
// log keeps it: the status keeps only the latest rounds and a downsampled series.
type Evidence struct {
	Model     string `json:"model"`
	ReleaseID string `json:"releaseId"`
	// FirstRunID tells this release from the model's other releases, which share the
	// workflow ID.
	FirstRunID string                    `json:"firstRunId"`
	Rounds     []workflows.AnalysisRound `json:"rounds"`
}

// GetEvidence reads the rounds of the model's release whose first run is firstRunID,
// or of its latest release with rounds when firstRunID is empty, oldest first.
func GetEvidence(ctx context.Context, reg registry.Registry, model, firstRunID string) (Evidence, error) {
	events, err := reg.Events(ctx, model)
	if err != nil {
		return Evidence{}, fmt.Errorf("read the audit log of model %s: %w", model, err)
	}
	return EvidenceOf(model, firstRunID, events)
}

// EvidenceOf reads the rounds of one release (or the latest, firstRunID empty) among
// a model's audit events.
func EvidenceOf(model, firstRunID string, events []registry.Event) (Evidence, error) {
	ev := Evidence{Model: model, FirstRunID: firstRunID, Rounds: []workflows.AnalysisRound{}}
	if ev.FirstRunID == "" {
		// The latest release with audited rounds.
		for _, e := range slices.Backward(events) {
			if e.Kind == workflows.EventAnalysis {
				ev.FirstRunID = e.Evidence[workflows.EvidenceFirstRun]
				break
			}
		}
	}
	seen := map[int]bool{}
	for _, e := range events {
		if e.Kind != workflows.EventAnalysis || e.Evidence[workflows.EvidenceFirstRun] != ev.FirstRunID {
			continue
		}
		var rd workflows.AnalysisRound
		if err := json.Unmarshal([]byte(e.Evidence[workflows.EvidenceRound]), &rd); err != nil {
			return ev, fmt.Errorf("audit event %s of model %s: round: %w", e.Key, model, err)
		}
		if seen[rd.Round] {
			continue
		}
		seen[rd.Round] = true
		ev.ReleaseID = e.ReleaseID
		ev.Rounds = append(ev.Rounds, rd)
	}
	if len(ev.Rounds) == 0 {
		return ev, fmt.Errorf("%w: no analysis rounds of model %s in the registry's audit log (release first run %q)", ErrNoRelease, model, ev.FirstRunID)
	}
	slices.SortFunc(ev.Rounds, func(a, b workflows.AnalysisRound) int { return a.Round - b.Round })
	return ev, nil
}
