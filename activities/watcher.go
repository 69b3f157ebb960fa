package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/mlrelease/mlrelease/internal/plan"
	"github.com/mlrelease/mlrelease/internal/registry"
)

// Tags the release watcher reads and writes on a version.
const (
	// TagPlan names the plan for the version: PLANS_DIR/<value>.yaml. Without it,
	// the model's plan is PLANS_DIR/<model>.yaml.
	TagPlan = "mlrelease.plan"
	// TagWatched is set once the watcher has handled a version: "started <run ID>"
	// or "refused". A version carrying it is never released by the watcher again.
	TagWatched = "mlrelease.watcher"
	// tagRelease is workflows.TagRelease (a test checks they agree): every release
	// writes it on its candidate, whoever started it.
	tagRelease = "mlrelease.release"
)

// MarkedVersion is a version that asks for a release.
type MarkedVersion struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Plan is the version's TagPlan, if any.
	Plan string `json:"plan,omitempty"`
}

// FindMarked lists the versions that carry mark and were never released: no
// TagWatched, and no release tag other than the mark itself (a mark of
// mlrelease.release=requested is replaced by the release's ID once it starts).
func (a *Activities) FindMarked(ctx context.Context, mark registry.Mark) ([]MarkedVersion, error) {
	f, ok := a.Registry.(registry.Finder)
	if !ok {
		return nil, nonRetryable(ErrTypeInvalid, fmt.Errorf("the %T registry cannot list marked versions: use MLRELEASE_REGISTRY=mlflow for the watcher", a.Registry))
	}
	vs, err := f.MarkedVersions(ctx, mark)
	if err != nil {
		return nil, classify(fmt.Errorf("find versions with %s: %w", mark, err))
	}
	var out []MarkedVersion
	for _, v := range vs {
		if Released(v, mark) {
			continue
		}
		out = append(out, MarkedVersion{Model: v.Model, Version: v.Version, Plan: v.Tags[TagPlan]})
	}
	return out, nil
}

// Released reports whether a version was already handled by the watcher or
// released by anyone.
func Released(v registry.Version, mark registry.Mark) bool {
	if v.Tags[TagWatched] != "" {
		return true
	}
	rel := v.Tags[tagRelease]
	return rel != "" && !(mark.TagKey == tagRelease && rel == mark.TagValue)
}

// PrepareInput names a marked version and where its plan may be.
type PrepareInput struct {
	MarkedVersion
	PlansDir string `json:"plansDir"`
}

// Prepared is a release ready to start, or the reason it cannot be.
type Prepared struct {
	Plan     *plan.Plan `json:"plan,omitempty"`
	Champion string     `json:"champion,omitempty"`
	// Refused says why the version cannot be released (no plan, an invalid plan, no
	// champion, ...); retrying does not help, so the watcher tags the version with it.
	Refused string `json:"refused,omitempty"`
}

// PrepareRelease loads and validates the version's plan and checks the registry as
// a release's first step will: what cannot be released is Refused, with the reason.
func (a *Activities) PrepareRelease(ctx context.Context, in PrepareInput) (Prepared, error) {
	name := in.Plan
	if name == "" {
		name = in.Model
	}
	if in.PlansDir == "" {
		return Prepared{Refused: "the watcher has no plans folder (MLRELEASE_WATCH_PLANS_DIR)"}, nil
	}
	if !plan.ValidName(name) || strings.ContainsAny(name, `/\`) {
		return Prepared{Refused: fmt.Sprintf("plan name %q (tag %s) is not a file name in the plans folder", name, TagPlan)}, nil
	}
	path := filepath.Join(in.PlansDir, name+".yaml")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return Prepared{Refused: fmt.Sprintf("no plan %s for model %s: add %s, or name a plan with the %s tag", name, in.Model, path, TagPlan)}, nil
	}
	p, err := plan.Load(path)
	if err != nil {
		return Prepared{Refused: "invalid plan: " + err.Error()}, nil
	}
	if p.Model != in.Model {
		return Prepared{Refused: fmt.Sprintf("plan %s is for model %q, not %q", path, p.Model, in.Model)}, nil
	}
	p.Candidate = in.Version
	if ds := p.Staging.Dataset; ds != "" && !filepath.IsAbs(ds) {
		p.Staging.Dataset = filepath.Join(in.PlansDir, ds)
	}
	if err := p.Validate(); err != nil {
		return Prepared{Refused: "invalid plan: " + err.Error()}, nil
	}
	res, err := a.Resolve(ctx, ResolveInput{Model: in.Model, Candidate: in.Version})
	var app *temporal.ApplicationError
	if errors.As(err, &app) && app.NonRetryable() {
		return Prepared{Refused: app.Error()}, nil
	}
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{Plan: p, Champion: res.Champion.Version}, nil
}
