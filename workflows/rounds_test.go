package workflows

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/workflows/roundtest"
)

// roundCosts reads a recorded history and returns the events each analysis round
// took within a bake: from one round's result to the next one's, when no other
// activity, signal or update came between them (a traffic change between two bakes,
// or a pause, is not a round's cost). Since changeLocalIO a round's result is a local activity's marker; before
// it, an Analyze activity's completion. The markers of audit batches are left out
// (one every AuditBatch rounds).
func roundCosts(t *testing.T, file string) []int {
	t.Helper()
	scheduled := map[int64]string{} // activity scheduled event ID -> type
	var costs []int
	last, audits := -1, 0
	for i, ev := range readHistory(t, file) {
		round := false
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			name := ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
			scheduled[ev.GetEventId()] = name
			if name != "Analyze" {
				last = -1 // another activity: the next round begins a bake
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			round = scheduled[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()] == "Analyze"
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			switch localActivityType(t, ev) {
			case "Analyze":
				round = true
			case "RecordEvents":
				audits++ // a batch of rounds to the audit log, every AuditBatch rounds
			}
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
			last = -1 // a decision between two rounds costs its own events
		}
		if !round {
			continue
		}
		if last >= 0 {
			costs = append(costs, i-last-audits)
		}
		last, audits = i, 0
	}
	return costs
}

// localActivityType is the activity type of a local activity's marker, or "".
func localActivityType(t *testing.T, ev *historypb.HistoryEvent) string {
	attrs := ev.GetMarkerRecordedEventAttributes()
	if attrs.GetMarkerName() != "LocalActivity" {
		return ""
	}
	data := attrs.GetDetails()["data"].GetPayloads()
	require.NotEmpty(t, data, "a local activity marker without data")
	var marker struct{ ActivityType string }
	require.NoError(t, json.Unmarshal(data[0].GetData(), &marker))
	return marker.ActivityType
}

// handOverCosts reads a recorded history and returns each hand-over's cost
// (roundtest.Costs).
func handOverCosts(t *testing.T, file string) []roundtest.Cost {
	t.Helper()
	return roundtest.Costs(readHistory(t, file))
}

// readHistory reads a recorded history's events.
func readHistory(t *testing.T, file string) []*historypb.HistoryEvent {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err)
	return h.GetEvents()
}

// TestEventsPerAnalysisRound: on releases recorded on the dev server since
// changeLocalIO's version 3, a bake's rounds cost at most 5 history events each, all
// told: a round is its signal and a workflow task (4 events), and each hand-over adds
// its scheduling, and its end (started, completed) in the last round's workflow
// task: 4k+2 events for k rounds. Before it (a timer and a local activity a round) a
// round cost 6; before changeLocalIO (a timer and an activity) 11.
// bench/README.md has the figures of many releases at once.
func TestEventsPerAnalysisRound(t *testing.T) {
	files, err := filepath.Glob("testdata/localio3_*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	events, rounds := 0, 0
	for _, f := range files {
		for i, c := range handOverCosts(t, f) {
			events, rounds = events+c.Events, rounds+c.Rounds
			if c.Rounds >= 2 {
				require.LessOrEqualf(t, c.Events, 5*c.Rounds, "%s: hand-over %d: %d events for %d rounds", f, i+1, c.Events, c.Rounds)
			}
		}
	}
	require.Greater(t, rounds, 50, "the recorded releases have rounds")
	require.LessOrEqualf(t, float64(events)/float64(rounds), 5.0, "%d events for %d rounds", events, rounds)

	// Within a bake, round after round: 4 events.
	long := handOverCosts(t, "testdata/localio3_long_run1.json")
	require.NotEmpty(t, long)

	v2 := roundCosts(t, "testdata/localio2_long_run1.json")
	require.GreaterOrEqual(t, len(v2), 10)
	for _, c := range v2 {
		require.LessOrEqual(t, c, 6, "rounds on a timer and a local activity")
	}
	before := roundCosts(t, "testdata/path_promoted_by_update.json")
	require.NotEmpty(t, before)
	for _, c := range before {
		require.GreaterOrEqual(t, c, 10, "rounds before changeLocalIO")
	}
	t.Logf("now %d events for %d rounds (%.2f a round; hand-overs of the long release %v); version 2: %v; before changeLocalIO: %v",
		events, rounds, float64(events)/float64(rounds), long, v2, before)
}
