package roundtest

import (
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"

	"github.com/mlrelease/mlrelease/activities"
)

// Cost is what one hand-over of a bake's rounds cost a release's history, in events,
// and the rounds it brought.
type Cost struct{ Events, Rounds int }

// Costs reads a release's history (since the workflow's local-io version 3) and
// returns each hand-over's cost: its scheduling, each round's signal, its end (started
// and completed, failed, timed out, or cancelled) and the workflow task each of these
// brought about. A workflow task that something else (a decision, another activity,
// a timer) brought about at the same time counts whole here too.
func Costs(events []*historypb.HistoryEvent) []Cost {
	var costs []Cost
	byID := map[int64]int{} // AnalyzeRounds scheduled event ID -> its index in costs
	current := -1           // the hand-over a round of the pending inputs belongs to
	pending := 0            // round events since the last workflow task
	for _, ev := range events {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "AnalyzeRounds" {
				byID[ev.GetEventId()] = len(costs)
				costs = append(costs, Cost{Events: 1})
			}
		case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
			if ev.GetWorkflowExecutionSignaledEventAttributes().GetSignalName() == activities.RoundSignal && len(costs) > 0 {
				current = len(costs) - 1 // rounds come from the latest hand-over
				costs[current].Rounds++
				pending++
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
			if k, ok := byID[ev.GetActivityTaskCancelRequestedEventAttributes().GetScheduledEventId()]; ok {
				costs[k].Events++
			}
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED, enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
			enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED, enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
			enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			if k, ok := byID[scheduledID(ev)]; ok {
				current = k
				pending++
				if ev.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
					costs[k].Rounds++ // the last round is the result
				}
			}
		case enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			if pending > 0 {
				costs[current].Events += pending + 3 // with the task's scheduled, started, completed
			}
			pending = 0
		}
	}
	return costs
}

func scheduledID(ev *historypb.HistoryEvent) int64 {
	switch ev.GetEventType() {
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
		return ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId()
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
		return ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
		return ev.GetActivityTaskFailedEventAttributes().GetScheduledEventId()
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
		return ev.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId()
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
		return ev.GetActivityTaskCanceledEventAttributes().GetScheduledEventId()
	}
	return 0
}
