package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openTemp(t *testing.T) (*SQLite, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := OpenSQLite(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r, path
}

func register(t *testing.T, r *SQLite, model, version string) {
	t.Helper()
	require.NoError(t, r.RegisterVersion(context.Background(), Version{
		Model: model, Version: version, Endpoint: "http://" + model + "-" + version,
	}))
}

func TestOpenConfiguresSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "registry.db")
	r, err := OpenSQLite(path)
	require.NoError(t, err, "parent directories are created")
	defer r.Close()

	ctx := context.Background()
	var mode string
	require.NoError(t, r.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", mode)
	var fk, busy, version int
	require.NoError(t, r.db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
	assert.Equal(t, 1, fk)
	require.NoError(t, r.db.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy))
	assert.Equal(t, int(busyTimeout.Milliseconds()), busy)
	require.NoError(t, r.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version))
	assert.Equal(t, schemaVersion, version)
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	r, path := openTemp(t)
	_, err := r.db.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion+1))
	require.NoError(t, err)
	require.NoError(t, r.Close())

	_, err = OpenSQLite(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "upgrade mlrelease")
}

func TestRegisterGetList(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	created := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.FixedZone("CET", 3600))

	require.NoError(t, r.RegisterVersion(ctx, Version{
		Model: "fraud", Version: "1", Endpoint: "http://fraud-v1:8000",
		Metadata:  map[string]string{"framework": "xgboost"},
		Tags:      map[string]string{"owner": "risk"},
		Aliases:   []string{AliasChampion},
		CreatedAt: created,
	}))
	register(t, r, "fraud", "2")
	register(t, r, "churn", "1")

	v, err := r.GetVersion(ctx, "fraud", "1")
	require.NoError(t, err)
	assert.Equal(t, Version{
		Model: "fraud", Version: "1", Endpoint: "http://fraud-v1:8000",
		Metadata:  map[string]string{"framework": "xgboost"},
		Tags:      map[string]string{"owner": "risk"},
		Aliases:   []string{AliasChampion},
		CreatedAt: created.UTC(),
	}, v)
	assert.Equal(t, time.UTC, v.CreatedAt.Location())

	v2, err := r.GetVersion(ctx, "fraud", "2")
	require.NoError(t, err)
	assert.Nil(t, v2.Metadata)
	assert.Nil(t, v2.Tags)
	assert.Nil(t, v2.Aliases)
	assert.WithinDuration(t, time.Now(), v2.CreatedAt, time.Minute, "zero CreatedAt means now")

	list, err := r.ListVersions(ctx, "fraud")
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "1", list[0].Version, "registration order")
	assert.Equal(t, "2", list[1].Version)
	assert.Equal(t, []string{AliasChampion}, list[0].Aliases)
}

func TestRegisterVersionIsIdempotent(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	first := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, r.RegisterVersion(ctx, Version{
		Model: "fraud", Version: "1", Endpoint: "http://old",
		Metadata: map[string]string{"a": "1", "b": "2"}, CreatedAt: first,
	}))
	require.NoError(t, r.RegisterVersion(ctx, Version{
		Model: "fraud", Version: "1", Endpoint: "http://new",
		Metadata: map[string]string{"a": "3"},
	}))

	list, err := r.ListVersions(ctx, "fraud")
	require.NoError(t, err)
	require.Len(t, list, 1, "no duplicate")
	assert.Equal(t, "http://new", list[0].Endpoint)
	assert.Equal(t, map[string]string{"a": "3"}, list[0].Metadata, "metadata replaced")
	assert.True(t, first.Equal(list[0].CreatedAt), "first registration time kept")
}

func TestAliases(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	register(t, r, "fraud", "1")
	register(t, r, "fraud", "2")

	require.NoError(t, r.SetAlias(ctx, "fraud", AliasChampion, "1"))
	require.NoError(t, r.SetAlias(ctx, "fraud", AliasChampion, "1"), "idempotent")
	require.NoError(t, r.SetAlias(ctx, "fraud", AliasChallenger, "2"))

	v, err := r.ResolveAlias(ctx, "fraud", AliasChampion)
	require.NoError(t, err)
	assert.Equal(t, "1", v.Version)
	assert.Equal(t, "http://fraud-1", v.Endpoint)
	assert.Equal(t, []string{AliasChampion}, v.Aliases)

	// Promotion: the champion moves to 2, which now carries both aliases.
	require.NoError(t, r.SetAlias(ctx, "fraud", AliasChampion, "2"))
	v, err = r.ResolveAlias(ctx, "fraud", AliasChampion)
	require.NoError(t, err)
	assert.Equal(t, "2", v.Version)
	assert.Equal(t, []string{AliasChallenger, AliasChampion}, v.Aliases, "sorted")
	old, err := r.GetVersion(ctx, "fraud", "1")
	require.NoError(t, err)
	assert.Nil(t, old.Aliases)

	require.NoError(t, r.DeleteAlias(ctx, "fraud", AliasChallenger))
	require.NoError(t, r.DeleteAlias(ctx, "fraud", AliasChallenger), "absent alias is fine")
	require.NoError(t, r.DeleteAlias(ctx, "nobody", AliasChallenger), "absent model is fine")
	_, err = r.ResolveAlias(ctx, "fraud", AliasChallenger)
	require.ErrorIs(t, err, ErrNotFound)

	v, err = r.GetVersion(ctx, "fraud", "2")
	require.NoError(t, err)
	assert.Equal(t, []string{AliasChampion}, v.Aliases)
}

func TestSetTagsUpserts(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	register(t, r, "fraud", "1")

	require.NoError(t, r.SetTags(ctx, "fraud", "1", map[string]string{"release": "r-1", "outcome": "running"}))
	require.NoError(t, r.SetTags(ctx, "fraud", "1", map[string]string{"outcome": "rolled_back", "reason": "error rate"}))
	require.NoError(t, r.SetTags(ctx, "fraud", "1", nil), "no tags is a no-op")

	v, err := r.GetVersion(ctx, "fraud", "1")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		"release": "r-1", "outcome": "rolled_back", "reason": "error rate",
	}, v.Tags)
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	register(t, r, "fraud", "1")

	for _, tc := range []struct {
		name string
		call func() error
		want []string
	}{
		{"get unknown version", func() error { _, err := r.GetVersion(ctx, "fraud", "9"); return err },
			[]string{`version "9"`, `model "fraud"`}},
		{"get version of unknown model", func() error { _, err := r.GetVersion(ctx, "churn", "1"); return err },
			[]string{`version "1"`, `model "churn" is not registered`}},
		{"resolve unknown alias", func() error { _, err := r.ResolveAlias(ctx, "fraud", AliasChampion); return err },
			[]string{`alias "champion"`, `model "fraud"`}},
		{"resolve alias of unknown model", func() error { _, err := r.ResolveAlias(ctx, "churn", AliasChampion); return err },
			[]string{`alias "champion"`, `model "churn" is not registered`}},
		{"set alias to unknown version", func() error { return r.SetAlias(ctx, "fraud", AliasChampion, "9") },
			[]string{`alias "champion"`, `version "9"`, `model "fraud"`}},
		{"set alias on unknown model", func() error { return r.SetAlias(ctx, "churn", AliasChampion, "1") },
			[]string{`alias "champion"`, `version "1"`, `model "churn" is not registered`}},
		{"tag unknown version", func() error { return r.SetTags(ctx, "fraud", "9", map[string]string{"a": "b"}) },
			[]string{`version "9"`, `model "fraud"`}},
		{"list unknown model", func() error { _, err := r.ListVersions(ctx, "churn"); return err },
			[]string{`model "churn"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, ErrNotFound)
			assert.False(t, errors.Is(err, ErrInvalid))
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}

	// A failed SetAlias changes nothing.
	_, err := r.ResolveAlias(ctx, "fraud", AliasChampion)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestInvalid(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	register(t, r, "fraud", "1")

	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"open empty path", func() error { _, err := OpenSQLite(""); return err }, "empty path"},
		{"register empty model", func() error { return r.RegisterVersion(ctx, Version{Version: "1"}) }, "empty model"},
		{"register empty version", func() error { return r.RegisterVersion(ctx, Version{Model: "fraud"}) }, `empty version of model "fraud"`},
		{"register reserved alias", func() error {
			return r.RegisterVersion(ctx, Version{Model: "fraud", Version: "2", Aliases: []string{"latest"}})
		}, `alias "latest" of model "fraud" is reserved`},
		{"get empty version", func() error { _, err := r.GetVersion(ctx, "fraud", ""); return err }, `empty version of model "fraud"`},
		{"list empty model", func() error { _, err := r.ListVersions(ctx, ""); return err }, "empty model"},
		{"resolve empty alias", func() error { _, err := r.ResolveAlias(ctx, "fraud", ""); return err }, `empty alias of model "fraud"`},
		{"set alias v3", func() error { return r.SetAlias(ctx, "fraud", "v3", "1") }, `alias "v3" of model "fraud" is reserved`},
		{"set alias empty version", func() error { return r.SetAlias(ctx, "fraud", AliasChampion, "") }, `empty version of model "fraud"`},
		{"delete empty alias", func() error { return r.DeleteAlias(ctx, "fraud", "") }, "empty alias"},
		{"empty tag key", func() error { return r.SetTags(ctx, "fraud", "1", map[string]string{"": "x"}) },
			`empty tag key on model "fraud" version "1"`},
		{"event without model", func() error { return r.RecordEvent(ctx, Event{Kind: "promoted"}) }, "empty model"},
		{"event without kind", func() error { return r.RecordEvent(ctx, Event{Model: "fraud"}) }, `model "fraud": invalid: empty kind`},
		{"events empty model", func() error { _, err := r.Events(ctx, ""); return err }, "empty model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, ErrInvalid)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	list, err := r.ListVersions(ctx, "fraud")
	require.NoError(t, err)
	assert.Len(t, list, 1, "rejected registrations wrote nothing")
}

func TestRecordEventIsIdempotentOnKey(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	t0 := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

	approved := Event{
		Key: "rel-7/approve", Model: "fraud", Version: "2", ReleaseID: "rel-7",
		Kind: "approved", Actor: "alice", Message: "looks good",
		Evidence: map[string]string{"error_rate": "0.001"}, At: t0.Add(2 * time.Second),
	}
	require.NoError(t, r.RecordEvent(ctx, approved))
	retried := approved
	retried.Message = "a retry must not overwrite or duplicate"
	require.NoError(t, r.RecordEvent(ctx, retried))

	// Recorded later but decided earlier, with a fraction that sorts wrong as text.
	require.NoError(t, r.RecordEvent(ctx, Event{Key: "rel-7/start", Model: "fraud", Kind: "started",
		At: t0.Add(500 * time.Millisecond).In(time.FixedZone("EST", -5*3600))}))
	require.NoError(t, r.RecordEvent(ctx, Event{Model: "fraud", Kind: "note"}))
	require.NoError(t, r.RecordEvent(ctx, Event{Model: "fraud", Kind: "note"}))
	require.NoError(t, r.RecordEvent(ctx, Event{Model: "churn", Kind: "other model"}))

	events, err := r.Events(ctx, "fraud")
	require.NoError(t, err)
	require.Len(t, events, 4)
	assert.Equal(t, "started", events[0].Kind, "oldest first")
	assert.Equal(t, time.UTC, events[0].At.Location())
	assert.Equal(t, approved, events[1])
	assert.Equal(t, "note", events[2].Kind)
	assert.Equal(t, "note", events[3].Kind)
	assert.NotEmpty(t, events[2].Key, "generated key")
	assert.NotEqual(t, events[2].Key, events[3].Key, "generated keys differ")
	assert.WithinDuration(t, time.Now(), events[3].At, time.Minute, "zero At means now")

	none, err := r.Events(ctx, "unknown")
	require.NoError(t, err)
	assert.Empty(t, none)
}

// The worker and the CLI open the same file; two handles stand in for the two
// processes (each has its own connection and so takes SQLite's file locks).
func TestTwoHandlesWriteConcurrently(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")

	// Open concurrently too: schema creation races on a fresh file.
	handles := make([]*SQLite, 2)
	var wg sync.WaitGroup
	openErrs := make([]error, len(handles))
	for i := range handles {
		wg.Go(func() { handles[i], openErrs[i] = OpenSQLite(path) })
	}
	wg.Wait()
	for i, h := range handles {
		require.NoError(t, openErrs[i])
		t.Cleanup(func() { _ = h.Close() })
	}

	const goroutines, writes = 4, 25
	errs := make(chan error, len(handles)*goroutines*writes*6) // at most 6 results per write
	for hi, h := range handles {
		for g := range goroutines {
			wg.Go(func() {
				for i := range writes {
					version := fmt.Sprintf("h%d-g%d-%d", hi, g, i)
					errs <- h.RegisterVersion(ctx, Version{Model: "fraud", Version: version})
					errs <- h.SetAlias(ctx, "fraud", AliasChampion, version)
					errs <- h.SetTags(ctx, "fraud", version, map[string]string{"writer": version})
					errs <- h.RecordEvent(ctx, Event{Key: version, Model: "fraud", Version: version, Kind: "registered"})
					// The other handle records the same key: still once.
					errs <- handles[1-hi].RecordEvent(ctx, Event{Key: version, Model: "fraud", Kind: "registered"})
					if _, err := h.ResolveAlias(ctx, "fraud", AliasChampion); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	for _, h := range handles {
		list, err := h.ListVersions(ctx, "fraud")
		require.NoError(t, err)
		assert.Len(t, list, len(handles)*goroutines*writes)
		events, err := h.Events(ctx, "fraud")
		require.NoError(t, err)
		assert.Len(t, events, len(handles)*goroutines*writes)
	}
}

// TestTwoProcessesWriteConcurrently re-runs the test binary as two writer
// processes on one file, as the worker and the CLI do.
func TestTwoProcessesWriteConcurrently(t *testing.T) {
	const writes = 40
	if path := os.Getenv("REGISTRY_TEST_WRITER_PATH"); path != "" {
		writer := os.Getenv("REGISTRY_TEST_WRITER_NAME")
		r, err := OpenSQLite(path)
		require.NoError(t, err)
		defer r.Close()
		ctx := context.Background()
		for i := range writes {
			version := fmt.Sprintf("%s-%d", writer, i)
			require.NoError(t, r.RegisterVersion(ctx, Version{Model: "fraud", Version: version}))
			require.NoError(t, r.SetAlias(ctx, "fraud", AliasChampion, version))
			require.NoError(t, r.RecordEvent(ctx, Event{Key: version, Model: "fraud", Kind: "registered"}))
		}
		return
	}

	path := filepath.Join(t.TempDir(), "registry.db")
	var cmds []*exec.Cmd
	var outputs []*bytes.Buffer
	for _, name := range []string{"worker", "cli"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTwoProcessesWriteConcurrently$", "-test.count=1")
		cmd.Env = append(os.Environ(), "REGISTRY_TEST_WRITER_PATH="+path, "REGISTRY_TEST_WRITER_NAME="+name)
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		require.NoError(t, cmd.Start())
		cmds, outputs = append(cmds, cmd), append(outputs, out)
	}
	for i, cmd := range cmds {
		require.NoError(t, cmd.Wait(), "writer process failed:\n%s", outputs[i])
	}

	r, err := OpenSQLite(path)
	require.NoError(t, err)
	defer r.Close()
	list, err := r.ListVersions(context.Background(), "fraud")
	require.NoError(t, err)
	assert.Len(t, list, 2*writes)
	events, err := r.Events(context.Background(), "fraud")
	require.NoError(t, err)
	assert.Len(t, events, 2*writes)
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := OpenSQLite(path)
	require.NoError(t, err)
	register(t, r, "fraud", "1")
	require.NoError(t, r.SetAlias(ctx, "fraud", AliasChampion, "1"))
	require.NoError(t, r.SetTags(ctx, "fraud", "1", map[string]string{"k": "v"}))
	require.NoError(t, r.RecordEvent(ctx, Event{Key: "e1", Model: "fraud", Kind: "promoted"}))
	want, err := r.GetVersion(ctx, "fraud", "1")
	require.NoError(t, err)
	require.NoError(t, r.Close())

	r, err = OpenSQLite(path)
	require.NoError(t, err)
	defer r.Close()
	got, err := r.ResolveAlias(ctx, "fraud", AliasChampion)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	events, err := r.Events(ctx, "fraud")
	require.NoError(t, err)
	require.Len(t, events, 1)
	assert.Equal(t, "e1", events[0].Key)
}

// Versions and events travel through Temporal history as JSON.
func TestJSONRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, _ := openTemp(t)
	register(t, r, "fraud", "1")
	v, err := r.GetVersion(ctx, "fraud", "1")
	require.NoError(t, err)

	b, err := json.Marshal(v)
	require.NoError(t, err)
	var back Version
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, v, back)
	assert.Contains(t, string(b), `"createdAt":`)
}
