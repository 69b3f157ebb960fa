package release

import (
	"encoding/json"
	"errors"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/workflows"
)

func auditEvent(t *testing.T, firstRun string, round int) registry.Event {
	b, err := json.Marshal(workflows.AnalysisRound{Round: round, Stage: workflows.StageCanary, Weight: 10})
	if err != nil {
		t.Fatal(err)
	}
	return registry.Event{Kind: workflows.EventAnalysis, ReleaseID: "release/wine", Key: workflows.AuditKey("release/wine", firstRun, round),
		Evidence: map[string]string{workflows.EvidenceRound: string(b), workflows.EvidenceFirstRun: firstRun}}
}

// The evidence of the latest release, in round order, each round once; an earlier
// release of the model on request.
func TestEvidenceOf(t *testing.T) {
	events := []registry.Event{
		auditEvent(t, "run-a", 1), auditEvent(t, "run-a", 2),
		{Kind: "rolled_back"},
		auditEvent(t, "run-b", 2), auditEvent(t, "run-b", 1), auditEvent(t, "run-b", 2),
	}
	ev, err := EvidenceOf("wine", "", events)
	if err != nil {
		t.Fatal(err)
	}
	if ev.FirstRunID != "run-b" || len(ev.Rounds) != 2 || ev.Rounds[0].Round != 1 || ev.Rounds[1].Round != 2 {
		t.Fatalf("latest release: %+v", ev)
	}
	if ev, err = EvidenceOf("wine", "run-a", events); err != nil || len(ev.Rounds) != 2 {
		t.Fatalf("release run-a: %+v, %v", ev, err)
	}
	if _, err := EvidenceOf("wine", "run-c", events); !errors.Is(err, ErrNoRelease) {
		t.Fatalf("unknown release: err %v", err)
	}
}

// A release that failed or was cancelled after its rollback carries its final status.
func TestFailedStatusFromErrorDetails(t *testing.T) {
	st := workflows.Status{ReleaseID: "release/wine", Champion: "1", Stage: workflows.StageRolledBack, Outcome: workflows.OutcomeRolledBack}
	for name, err := range map[string]error{
		"failed": temporal.NewApplicationErrorWithOptions("error: gateway down", "ReleaseFailed",
			temporal.ApplicationErrorOptions{Details: []any{st}}),
		"cancelled": temporal.NewCanceledError(st),
	} {
		got, ok := failedStatus(err)
		if !ok || got.Champion != "1" || got.Outcome != workflows.OutcomeRolledBack {
			t.Errorf("%s: %+v, %v", name, got, ok)
		}
	}
	if _, ok := failedStatus(errors.New("terminated")); ok {
		t.Error("an error without details has no status")
	}
}
