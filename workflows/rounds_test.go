package workflows

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
)

// roundCosts reads a recorded history and returns the events each analysis round
// took within a bake: from one round's result to the next one's, when no other
// activity, signal or update came between them (a traffic change between two bakes,
// or a pause, is not a round's cost). Since changeLocalIO a round's result is a local activity's marker; before
// it, an Analyze activity's completion. The markers of audit batches are left out
// (one every AuditBatch rounds).
func roundCosts(t *testing.T, file string) []int {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	require.NoError(t, err)
	scheduled := map[int64]string{} // activity scheduled event ID -> type
	var costs []int
	last, audits := -1, 0
	for i, ev := range h.GetEvents() {
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

// TestEventsPerAnalysisRound: on a release recorded on the dev server since
// changeLocalIO, every analysis round within a bake costs 6 history events (the
// timer's start and firing, a workflow task's three events, the round's marker;
// and every AuditBatch rounds the audit batch's marker, 0.1 a round),
// where before it an analysis round cost 11 (an activity's three events and a second
// workflow task's). bench/README.md has the figures of many releases at once.
func TestEventsPerAnalysisRound(t *testing.T) {
	now := roundCosts(t, "testdata/localio2_long_run1.json")
	require.GreaterOrEqual(t, len(now), 10, "the recorded release has rounds within its bakes")
	for i, c := range now {
		require.LessOrEqualf(t, c, 6, "round %d took %d events", i+1, c)
	}
	before := roundCosts(t, "testdata/path_promoted_by_update.json")
	require.NotEmpty(t, before)
	for _, c := range before {
		require.GreaterOrEqual(t, c, 10, "rounds before changeLocalIO")
	}
	t.Logf("events per round: %v now, %v before", now, before)
}
