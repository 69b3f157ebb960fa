package activities

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/mlrelease/mlrelease/internal/registry"
)

// keepAlive heartbeats every second until the returned stop is called, so that an
// activity whose worker crashed is retried within the workflow's heartbeat timeout
// (seconds), not its StartToClose timeout. Outside an activity it does nothing.
func keepAlive(ctx context.Context) (stop func()) {
	if !activity.IsActivity(ctx) {
		return func() {}
	}
	activity.RecordHeartbeat(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	return func() { close(done) }
}

// RecordEvents writes events to a model's audit log: the full evidence of analysis
// rounds that the release's status keeps only in summary. Each event carries its own
// key, so a retried or repeated call records it once.
func (a *Activities) RecordEvents(ctx context.Context, model string, events []registry.Event) error {
	defer keepAlive(ctx)()
	for _, e := range events {
		if e.Key == "" {
			return nonRetryable(ErrTypeInvalid, fmt.Errorf("audit event %s for model %s has no key", e.Kind, model))
		}
		e.Model = model
		if err := a.Registry.RecordEvent(ctx, e); err != nil {
			return classify(fmt.Errorf("record %s event %s for model %s: %w", e.Kind, e.Key, model, err))
		}
	}
	return nil
}
