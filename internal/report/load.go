package report

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/release"
	"github.com/mlrelease/mlrelease/workflows"
)

// Load reads a model's latest release: its status from the release itself (running
// or ended, across continue-as-new) and every round from the registry's audit log.
// link makes the link to a workflow in the Temporal Web UI; nil for none.
func Load(ctx context.Context, c client.Client, reg registry.Registry, model string, link func(workflowID string) string) (Release, error) {
	st, err := release.GetStatus(ctx, c, model)
	if err != nil {
		return Release{}, err
	}
	return withRounds(ctx, reg, st, link)
}

// LoadRun reads one release of a model by the ID of any of its runs, as Web UI links
// and the status name them.
func LoadRun(ctx context.Context, c client.Client, reg registry.Registry, model, runID string, link func(string) string) (Release, error) {
	id := workflows.WorkflowID(model)
	desc, err := c.DescribeWorkflow(ctx, id, runID)
	if err != nil {
		return Release{}, fmt.Errorf("release run %s of model %s: %w", runID, model, err)
	}
	if desc.Status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return Load(ctx, c, reg, model, link)
	}
	// Ended, or continued as new: the run's chain's result (the SDK follows the chain).
	var res workflows.Result
	if err := c.GetWorkflow(ctx, id, runID).Get(ctx, &res); err != nil {
		return Release{}, fmt.Errorf("release run %s of model %s has no result: %w", runID, model, err)
	}
	return withRounds(ctx, reg, res.Status, link)
}

func withRounds(ctx context.Context, reg registry.Registry, st workflows.Status, link func(string) string) (Release, error) {
	r := Release{Status: st}
	if link != nil {
		r.WebUI = link(st.ReleaseID)
	}
	ev, err := release.GetEvidence(ctx, reg, st.Model, st.ReleaseRun)
	switch {
	case err == nil:
		r.Rounds = ev.Rounds
	case errors.Is(err, release.ErrNoRelease):
		// No round audited yet: the status's own rounds and series are drawn.
		r.Rounds = completeRounds(nil, st)
	default:
		return Release{}, err
	}
	return r, nil
}

// Handler serves reports: GET /releases/{model} (the latest release) and
// /releases/{model}/{run}.
func Handler(c client.Client, reg registry.Registry, link func(workflowID string) string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	serve := func(w http.ResponseWriter, r *http.Request, load func(ctx context.Context) (Release, error)) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		rel, err := load(ctx)
		if err != nil {
			code := http.StatusBadGateway
			if errors.Is(err, release.ErrNoRelease) {
				code = http.StatusNotFound
			}
			log.Warn("release report", "path", r.URL.Path, "error", err)
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Self-contained: nothing to fetch, no script to run.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
		if err := Write(w, rel); err != nil {
			log.Warn("release report", "path", r.URL.Path, "error", err)
		}
	}
	mux.HandleFunc("GET /releases/{model}", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func(ctx context.Context) (Release, error) { return Load(ctx, c, reg, r.PathValue("model"), link) })
	})
	mux.HandleFunc("GET /releases/{model}/{run}", func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, func(ctx context.Context) (Release, error) {
			return LoadRun(ctx, c, reg, r.PathValue("model"), r.PathValue("run"), link)
		})
	})
	return mux
}
