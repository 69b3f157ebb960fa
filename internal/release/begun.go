package release

import (
	"context"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/workflows"
)

// BeginBound is how long `mlrelease start` waits to see a release begin.
const BeginBound = 10 * time.Second

// Begun waits up to bound for the release's first workflow task to start (a worker
// took it), and otherwise says why it has not begun: no worker polls its task queue,
// or the workers that do have not reached it yet. The release itself is unaffected:
// it begins whenever a worker takes it.
func Begun(ctx context.Context, c client.Client, model string, bound time.Duration) error {
	id := workflows.WorkflowID(model)
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	var queue string
	for {
		desc, err := c.DescribeWorkflowExecution(ctx, id, "")
		if err == nil {
			info := desc.GetWorkflowExecutionInfo()
			queue = info.GetTaskQueue()
			// Started, then its first workflow task scheduled: a third event means a
			// worker took that task (or the release already moved on).
			if info.GetHistoryLength() > 2 || info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return notBegun(context.WithoutCancel(ctx), c, model, queue, bound)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// notBegun explains a release whose first task no worker has taken.
func notBegun(ctx context.Context, c client.Client, model, queue string, waited time.Duration) error {
	if queue == "" {
		queue = workflows.TaskQueue
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tq, err := c.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		return fmt.Errorf("the release of %s has not begun after %s, and task queue %s cannot be described: %w", model, waited, queue, err)
	}
	if len(tq.GetPollers()) == 0 {
		return fmt.Errorf("the release of %s has not begun after %s: no worker polls task queue %s; start one (`make run`, or bin/worker with MLRELEASE_TASK_QUEUE=%s)",
			model, waited, queue, queue)
	}
	return fmt.Errorf("the release of %s has not begun after %s: %d worker(s) poll task queue %s but have not taken it yet, busy with other releases; it begins when one does (add workers or pollers: MLRELEASE_WORKER_*)",
		model, waited, len(tq.GetPollers()), queue)
}
