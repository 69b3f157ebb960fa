package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mlrelease/mlrelease/internal/deploy"
)

// savedState is the state file: every model's applied traffic with its revision, so a
// restarted gateway serves the same routes and a retried PUT keeps its revision.
type savedState struct {
	Routes []deploy.Applied `json:"routes"`
}

// loadState reads the routes saved at path; a missing file is no routes. A file that
// does not parse or holds invalid traffic is an error: serving no routes, or some, in
// place of what the release applied would be worse than not starting.
func loadState(path string, m *metrics) (table, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return table{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read gateway state %s: %w", path, err)
	}
	var st savedState
	if err := decodeStrict(raw, &st); err != nil {
		return nil, fmt.Errorf("gateway state %s does not parse (fix or remove it; the release re-applies its traffic): %w", path, err)
	}
	t := table{}
	for _, a := range st.Routes {
		rt, err := newRoute(a.Traffic, m)
		if err != nil {
			return nil, fmt.Errorf("gateway state %s: model %q: %w", path, a.Model, err)
		}
		if _, dup := t[a.Model]; dup {
			return nil, fmt.Errorf("gateway state %s: model %q appears twice", path, a.Model)
		}
		rt.applied.Revision = a.Revision
		t[a.Model] = rt
	}
	return t, nil
}

// saveState writes t to path atomically: a crash leaves the old file or the new one,
// never a torn one.
func saveState(path string, t table) error {
	st := savedState{Routes: make([]deploy.Applied, 0, len(t))}
	for _, rt := range t {
		st.Routes = append(st.Routes, rt.applied)
	}
	sortApplied(st.Routes)
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("save gateway state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(raw, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("save gateway state: %w", err)
	}
	// The rename is durable only once the directory is.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// removeStaleSaves deletes the temporary files saveState leaves when the process dies
// between creating one and renaming it: they are never read, and would pile up.
func removeStaleSaves(path string, log *slog.Logger) {
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp"))
	for _, f := range stale {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("stale gateway state save not removed", "file", f, "err", err)
			continue
		}
		log.Info("stale gateway state save removed", "file", f)
	}
}
