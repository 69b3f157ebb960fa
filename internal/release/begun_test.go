package release

import (
	"strings"
	"testing"
	"time"
)

// A release no worker takes is reported, with why: first no worker at all on its
// queue; one that a worker takes has begun.
func TestBegunSaysWhyNot(t *testing.T) {
	ctx := ctxFor(t)
	model := uniqueModel("wine-begun")
	reg := newRegistry(t, model)
	queue := "nobody-polls-" + model
	if _, err := Start(ctx, tc, reg, StartOptions{Plan: fastPlan(t, model), StartedBy: "alice", TaskQueue: queue, Signer: alice}); err != nil {
		t.Fatal(err)
	}
	err := Begun(ctx, tc, model, time.Second)
	if err == nil || !strings.Contains(err.Error(), "no worker polls task queue "+queue) {
		t.Fatalf("not begun: %v", err)
	}
	// The status says the same, rather than a bare timeout.
	if _, err := GetStatus(ctx, tc, model); err == nil || !strings.Contains(err.Error(), "has not begun") {
		t.Fatalf("status of a release not begun: %v", err)
	}

	other := uniqueModel("wine-begun")
	reg2 := newRegistry(t, other)
	if _, err := Start(ctx, tc, reg2, StartOptions{Plan: fastPlan(t, other), StartedBy: "alice", TaskQueue: startWorker(t, reg2), Signer: alice}); err != nil {
		t.Fatal(err)
	}
	if err := Begun(ctx, tc, other, 30*time.Second); err != nil {
		t.Fatalf("with a worker: %v", err)
	}
}
