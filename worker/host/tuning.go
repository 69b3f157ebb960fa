package host

import (
	"fmt"

	"go.temporal.io/sdk/worker"

	"github.com/mlrelease/mlrelease/internal/config"
)

// tune applies the worker's capacity settings (MLRELEASE_WORKER_*): fixed pollers or
// the SDK's poller autoscaling, task slots, the sticky cache and a rate limit.
func tune(t config.Tuning, o *worker.Options) error {
	for name, v := range map[string]int{"WORKFLOW_POLLERS": t.WorkflowPollers, "ACTIVITY_POLLERS": t.ActivityPollers,
		"MAX_POLLERS": t.MaxPollers, "WORKFLOW_TASK_SLOTS": t.WorkflowTaskSlots, "ACTIVITY_SLOTS": t.ActivitySlots, "STICKY_CACHE_SIZE": t.StickyCacheSize} {
		if v < 0 {
			return fmt.Errorf("MLRELEASE_WORKER_%s %d must not be negative", name, v)
		}
	}
	if t.ActivitiesPerSecond < 0 {
		return fmt.Errorf("MLRELEASE_WORKER_ACTIVITIES_PER_SECOND %v must not be negative", t.ActivitiesPerSecond)
	}
	// A workflow task poller is kept for the sticky queue and one for the normal
	// queue at the least, so a fixed count below 2 is raised to 2.
	poll := func(fixed int, minimum int) worker.PollerBehavior {
		if fixed > 0 {
			return worker.NewPollerBehaviorSimpleMaximum(worker.PollerBehaviorSimpleMaximumOptions{MaximumNumberOfPollers: max(fixed, minimum)})
		}
		return worker.NewPollerBehaviorAutoscaling(worker.PollerBehaviorAutoscalingOptions{
			MinimumNumberOfPollers: minimum, InitialNumberOfPollers: min(5, max(t.MaxPollers, minimum)), MaximumNumberOfPollers: max(t.MaxPollers, minimum)})
	}
	o.WorkflowTaskPollerBehavior = poll(t.WorkflowPollers, 2)
	o.ActivityTaskPollerBehavior = poll(t.ActivityPollers, 1)
	o.MaxConcurrentWorkflowTaskExecutionSize = t.WorkflowTaskSlots
	// Local activities (analysis rounds, registry and audit writes) take the same
	// bounds: they reach the same Prometheus and registry.
	o.MaxConcurrentActivityExecutionSize, o.MaxConcurrentLocalActivityExecutionSize = t.ActivitySlots, t.ActivitySlots
	o.WorkerActivitiesPerSecond, o.WorkerLocalActivitiesPerSecond = t.ActivitiesPerSecond, t.ActivitiesPerSecond
	if t.StickyCacheSize > 0 {
		// Process-wide in the SDK: one worker per process here.
		worker.SetStickyWorkflowCacheSize(t.StickyCacheSize)
	}
	return nil
}
