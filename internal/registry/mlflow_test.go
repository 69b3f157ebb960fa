package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/registry"
	"github.com/mlrelease/mlrelease/internal/stack"
)

// The contract tests run against a real MLflow server (SQLite backend), started
// once for the package on first use and stopped by TestMain.
var mlflowServer struct {
	once  sync.Once
	procs stack.Stack
	dir   string
	uri   string
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	mlflowServer.procs.Stop()
	if mlflowServer.dir != "" {
		_ = os.RemoveAll(mlflowServer.dir)
	}
	os.Exit(code)
}

// startMLflow returns the tracking URI of the package's MLflow server. A missing
// MLflow fails the test with what to run.
func startMLflow(t *testing.T) string {
	t.Helper()
	mlflowServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "mlflow-contract")
		if err != nil {
			mlflowServer.err = err
			return
		}
		mlflowServer.dir = dir
		mlflowServer.procs.LogDir = dir + "/logs"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		mlflowServer.uri, mlflowServer.err = stack.StartMLflowServer(ctx, &mlflowServer.procs, dir)
	})
	require.NoError(t, mlflowServer.err, "start the MLflow server")
	return mlflowServer.uri
}

// mlflowAPI calls the REST API directly, for set-up the Registry does not do
// (registering versions is the training pipeline's job).
func mlflowAPI(t *testing.T, uri, endpoint string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	resp, err := http.Post(uri+"/api/2.0/mlflow/"+endpoint, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", endpoint, buf.String())
	if out != nil {
		require.NoError(t, json.Unmarshal(buf.Bytes(), out))
	}
}

// registerMLflowModel creates model with n versions, each from its own run; it
// returns the run IDs by version ("1".."n").
func registerMLflowModel(t *testing.T, uri, model string, n int) map[string]string {
	t.Helper()
	mlflowAPI(t, uri, "registered-models/create", map[string]string{"name": model}, nil)
	runs := map[string]string{}
	for i := 1; i <= n; i++ {
		var run struct {
			Run struct {
				Info struct {
					RunID string `json:"run_id"`
				} `json:"info"`
			} `json:"run"`
		}
		mlflowAPI(t, uri, "runs/create", map[string]any{"experiment_id": "0", "run_name": fmt.Sprintf("%s-%d", model, i)}, &run)
		id := run.Run.Info.RunID
		var mv struct {
			ModelVersion struct {
				Version string `json:"version"`
			} `json:"model_version"`
		}
		mlflowAPI(t, uri, "model-versions/create", map[string]any{"name": model, "source": "runs:/" + id + "/model", "run_id": id,
			"tags": []map[string]string{{"key": registry.TagEndpoint, "value": fmt.Sprintf("http://127.0.0.1:81%02d", i)}}}, &mv)
		require.Equal(t, fmt.Sprint(i), mv.ModelVersion.Version)
		runs[mv.ModelVersion.Version] = id
	}
	return runs
}

func newMLflow(t *testing.T, uri string) *registry.MLflow {
	t.Helper()
	m, err := registry.NewMLflow(registry.MLflowOptions{TrackingURI: uri})
	require.NoError(t, err)
	return m
}

func TestMlflowResolveVersionAndAlias(t *testing.T) {
	uri := startMLflow(t)
	ctx := context.Background()
	runs := registerMLflowModel(t, uri, "contract-resolve", 2)
	m := newMLflow(t, uri)

	v, err := m.GetVersion(ctx, "contract-resolve", "2")
	require.NoError(t, err)
	assert.Equal(t, "contract-resolve", v.Model)
	assert.Equal(t, "2", v.Version)
	assert.Equal(t, "http://127.0.0.1:8102", v.Endpoint, "the endpoint tag is the serving endpoint")
	assert.Equal(t, runs["2"], v.Metadata["run_id"])
	assert.Equal(t, "runs:/"+runs["2"]+"/model", v.Metadata["source"])
	assert.Equal(t, "READY", v.Metadata["status"])
	assert.WithinDuration(t, time.Now(), v.CreatedAt, time.Minute)
	assert.Empty(t, v.Aliases)

	require.NoError(t, m.SetAlias(ctx, "contract-resolve", registry.AliasChampion, "1"))
	champ, err := m.ResolveAlias(ctx, "contract-resolve", registry.AliasChampion)
	require.NoError(t, err)
	assert.Equal(t, "1", champ.Version)
	assert.Equal(t, []string{registry.AliasChampion}, champ.Aliases)
	assert.Equal(t, runs["1"], champ.Metadata["run_id"])
}

func TestMlflowAliases(t *testing.T) {
	uri := startMLflow(t)
	ctx := context.Background()
	registerMLflowModel(t, uri, "contract-alias", 3)
	m := newMLflow(t, uri)

	require.NoError(t, m.SetAlias(ctx, "contract-alias", registry.AliasChampion, "1"))
	require.NoError(t, m.SetAlias(ctx, "contract-alias", registry.AliasChallenger, "2"))
	require.NoError(t, m.SetAlias(ctx, "contract-alias", registry.AliasChallenger, "2"), "idempotent")
	require.NoError(t, m.SetAlias(ctx, "contract-alias", registry.AliasChampion, "2"), "moves")
	v2, err := m.GetVersion(ctx, "contract-alias", "2")
	require.NoError(t, err)
	assert.Equal(t, []string{registry.AliasChallenger, registry.AliasChampion}, v2.Aliases)
	v1, err := m.GetVersion(ctx, "contract-alias", "1")
	require.NoError(t, err)
	assert.Empty(t, v1.Aliases, "the champion alias left version 1")

	require.NoError(t, m.DeleteAlias(ctx, "contract-alias", registry.AliasChallenger))
	require.NoError(t, m.DeleteAlias(ctx, "contract-alias", registry.AliasChallenger), "deleting an absent alias is fine")
	require.NoError(t, m.DeleteAlias(ctx, "contract-no-such-model", registry.AliasChallenger), "so is an absent model")
	_, err = m.ResolveAlias(ctx, "contract-alias", registry.AliasChallenger)
	require.ErrorIs(t, err, registry.ErrNotFound)

	err = m.SetAlias(ctx, "contract-alias", "v2", "1")
	require.ErrorIs(t, err, registry.ErrInvalid, "MLflow reserves v<number>")

	marked, err := m.MarkedVersions(ctx, registry.Mark{Alias: registry.AliasChampion})
	require.NoError(t, err)
	var found []string
	for _, v := range marked {
		if v.Model == "contract-alias" {
			found = append(found, v.Version)
		}
	}
	assert.Equal(t, []string{"2"}, found)
}

func TestMlflowTagsAndEvents(t *testing.T) {
	uri := startMLflow(t)
	ctx := context.Background()
	registerMLflowModel(t, uri, "contract-tags", 2)
	m := newMLflow(t, uri)

	require.NoError(t, m.SetTags(ctx, "contract-tags", "2", map[string]string{"mlrelease.stage": "canary", "team": "fraud"}))
	require.NoError(t, m.SetTags(ctx, "contract-tags", "2", map[string]string{"mlrelease.stage": "promoted"}), "upsert, others untouched")
	v, err := m.GetVersion(ctx, "contract-tags", "2")
	require.NoError(t, err)
	assert.Equal(t, "promoted", v.Tags["mlrelease.stage"])
	assert.Equal(t, "fraud", v.Tags["team"])

	long := bytes.Repeat([]byte("x"), 3*registry.MaxTagValue)
	require.NoError(t, m.SetTags(ctx, "contract-tags", "1", map[string]string{"mlrelease.reason": string(long)}))
	v1, err := m.GetVersion(ctx, "contract-tags", "1")
	require.NoError(t, err)
	assert.LessOrEqual(t, len(v1.Tags["mlrelease.reason"]), registry.MaxTagValue, "bounded")

	marked, err := m.MarkedVersions(ctx, registry.Mark{TagKey: "team", TagValue: "fraud"})
	require.NoError(t, err)
	require.Len(t, marked, 1)
	assert.Equal(t, "2", marked[0].Version)

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := registry.Event{Key: "r/1", Model: "contract-tags", Version: "2", ReleaseID: "release/contract-tags", Kind: "promoted",
		Actor: "alice", Message: "every gate passed", Evidence: map[string]string{"error-rate": "pass: 0.01 <= 0.05"}, At: at}
	require.NoError(t, m.RecordEvent(ctx, e))
	require.NoError(t, m.RecordEvent(ctx, e), "idempotent")
	require.NoError(t, m.RecordEvent(ctx, registry.Event{Model: "contract-tags", Kind: "refused", Message: "no plan", At: at.Add(time.Second)}))
	// An analysis round written after the decision is evidence: the latest decision
	// stays the version's event.
	require.NoError(t, m.RecordEvent(ctx, registry.Event{Key: "r/round/9", Model: "contract-tags", Version: "2", Kind: registry.KindAnalysis,
		Evidence: map[string]string{"round": `{"round":9}`}, At: at.Add(2 * time.Second)}))
	v, err = m.GetVersion(ctx, "contract-tags", "2")
	require.NoError(t, err)
	assert.Equal(t, "promoted", v.Tags[registry.TagEvent])
	assert.Equal(t, "error-rate: pass: 0.01 <= 0.05", v.Tags[registry.TagEvidence])
	assert.Contains(t, v.Tags[registry.TagEventPrefix+registry.KindAnalysis], `round`)
	events, err := m.Events(ctx, "contract-tags")
	require.NoError(t, err)
	events = slices.DeleteFunc(events, func(e registry.Event) bool { return e.Kind == registry.KindAnalysis })
	require.Len(t, events, 1, "the version's events (model-level tags are not versions)")
	assert.Equal(t, "promoted", events[0].Kind)
	assert.Equal(t, "alice", events[0].Actor)
	assert.Equal(t, "release/contract-tags", events[0].ReleaseID)
	assert.Equal(t, at, events[0].At)
	assert.Equal(t, e.Evidence, events[0].Evidence)
}

func TestMlflowNotFound(t *testing.T) {
	uri := startMLflow(t)
	ctx := context.Background()
	registerMLflowModel(t, uri, "contract-missing", 1)
	m := newMLflow(t, uri)

	_, err := m.GetVersion(ctx, "contract-missing", "9")
	require.ErrorIs(t, err, registry.ErrNotFound)
	assert.Contains(t, err.Error(), `version "9" of model "contract-missing"`)
	_, err = m.GetVersion(ctx, "contract-no-such-model", "1")
	require.ErrorIs(t, err, registry.ErrNotFound)
	_, err = m.ResolveAlias(ctx, "contract-missing", registry.AliasChampion)
	require.ErrorIs(t, err, registry.ErrNotFound, "an unknown alias")
	_, err = m.ResolveAlias(ctx, "contract-no-such-model", registry.AliasChampion)
	require.ErrorIs(t, err, registry.ErrNotFound, "an unknown model")
	require.ErrorIs(t, m.SetAlias(ctx, "contract-missing", registry.AliasChampion, "9"), registry.ErrNotFound)
	err = m.SetTags(ctx, "contract-missing", "9", map[string]string{"a": "b"})
	require.ErrorIs(t, err, registry.ErrNotFound)
	assert.NotErrorIs(t, err, registry.ErrUnavailable, "not-found is not retryable")
}

func TestMlflowServerErrors(t *testing.T) {
	ctx := context.Background()

	// A 5xx with MLflow's error body is retryable, not not-found.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error_code": "INTERNAL_ERROR", "message": "database is locked"}`))
	}))
	m := newMLflow(t, srv.URL)
	_, err := m.GetVersion(ctx, "m", "1")
	require.ErrorIs(t, err, registry.ErrUnavailable)
	assert.NotErrorIs(t, err, registry.ErrNotFound)
	assert.Contains(t, err.Error(), "database is locked")
	srv.Close()

	// A server that is gone is retryable too.
	_, err = m.ResolveAlias(ctx, "m", registry.AliasChampion)
	require.ErrorIs(t, err, registry.ErrUnavailable)

	// Credentials reach the server and never an error message.
	var gotAuth string
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error_code": "UNAUTHENTICATED", "message": "bad token"}`))
	}))
	defer auth.Close()
	m, err = registry.NewMLflow(registry.MLflowOptions{TrackingURI: auth.URL, Token: "s3cret"})
	require.NoError(t, err)
	_, err = m.GetVersion(ctx, "m", "1")
	require.ErrorIs(t, err, registry.ErrInvalid, "not retryable")
	assert.Equal(t, "Bearer s3cret", gotAuth)
	assert.NotContains(t, err.Error(), "s3cret")

	_, err = registry.NewMLflow(registry.MLflowOptions{})
	require.ErrorContains(t, err, "MLFLOW_TRACKING_URI")
}

func TestMlflowOptionsFromEnv(t *testing.T) {
	t.Setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
	t.Setenv("MLFLOW_TRACKING_USERNAME", "u")
	t.Setenv("MLFLOW_TRACKING_PASSWORD", "p")
	t.Setenv("MLFLOW_TRACKING_TOKEN", "")
	o := registry.MLflowOptionsFromEnv()
	assert.Equal(t, registry.MLflowOptions{TrackingURI: "http://mlflow:5000", Username: "u", Password: "p"}, o)
}
