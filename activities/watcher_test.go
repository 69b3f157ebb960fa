package activities

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/registry"
)

const watchedPlan = `
model: wine
staging: {dataset: eval.csv, minAccuracy: 0.8}
analysis:
  metrics:
    - {name: error-rate, query: 'sum(rate(x{model="{{.Model}}"}[1m]))', max: 0.05}
`

func TestPrepareRelease(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.OpenSQLite(filepath.Join(t.TempDir(), "registry.db"))
	require.NoError(t, err)
	defer reg.Close()
	for _, v := range []registry.Version{
		{Model: "wine", Version: "1", Endpoint: "http://v1", Aliases: []string{registry.AliasChampion}},
		{Model: "wine", Version: "2", Endpoint: "http://v2"},
		{Model: "wine", Version: "3"},
		{Model: "beer", Version: "1", Endpoint: "http://b1"},
	} {
		require.NoError(t, reg.RegisterVersion(ctx, v))
	}
	plans := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(plans, "wine.yaml"), []byte(watchedPlan), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(plans, "broken.yaml"), []byte("model: wine\ncanary: {steps: [{weight: 500}]}\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(plans, "beer.yaml"), []byte(watchedPlan), 0o644))
	a := &Activities{Registry: reg}
	prepare := func(model, version, planName string) Prepared {
		t.Helper()
		p, err := a.PrepareRelease(ctx, PrepareInput{MarkedVersion: MarkedVersion{Model: model, Version: version, Plan: planName}, PlansDir: plans})
		require.NoError(t, err)
		return p
	}

	p := prepare("wine", "2", "")
	require.Empty(t, p.Refused)
	require.Equal(t, "2", p.Plan.Candidate)
	require.Equal(t, "1", p.Champion)
	require.Equal(t, filepath.Join(plans, "eval.csv"), p.Plan.Staging.Dataset, "relative to the plans folder")

	require.Contains(t, prepare("wine", "2", "nope").Refused, "no plan nope for model wine")
	require.Contains(t, prepare("wine", "2", "../wine").Refused, "not a file name")
	require.Contains(t, prepare("wine", "2", "broken").Refused, "invalid plan")
	require.Contains(t, prepare("beer", "1", "").Refused, `is for model "wine", not "beer"`)
	require.Contains(t, prepare("wine", "3", "").Refused, "no serving endpoint")
	require.Contains(t, prepare("wine", "1", "").Refused, "already the champion")

	_, err = a.FindMarked(ctx, registry.Mark{Alias: registry.AliasChallenger})
	require.ErrorContains(t, err, "cannot list marked versions", "SQLite cannot be watched")
}
